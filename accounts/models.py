from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

FEE_RATE = {"max_digits": 10, "decimal_places": 8}


class RateTier(models.Model):
    """A rate-limit budget and fee schedule; operators edit these rows in the admin."""

    name = models.CharField(max_length=50, unique=True)
    weight_per_minute = models.PositiveIntegerField(default=1200, help_text="Request weight allowed per sliding minute.")
    maker_fee_rate = models.DecimalField(**FEE_RATE, default=Decimal("0.001"), help_text="0.001 = 0.1 %")
    taker_fee_rate = models.DecimalField(**FEE_RATE, default=Decimal("0.002"), help_text="0.002 = 0.2 %")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=1, taker_fee_rate__gte=0, taker_fee_rate__lt=1),
                name="rate_tier_fee_rates_in_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.weight_per_minute}/min)"


class Account(models.Model):
    """The trading account: one per user, plus the exchange's own fee account."""

    class Kind(models.TextChoices):
        USER = "user"
        FEE = "fee"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="account"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.USER)
    verified = models.BooleanField(default=False, help_text="Verified accounts may read deep order books.")
    rate_tier = models.ForeignKey(RateTier, on_delete=models.PROTECT, related_name="accounts")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="fee"), name="one_fee_account"),
            models.CheckConstraint(
                condition=Q(kind="fee", user__isnull=True) | Q(kind="user", user__isnull=False),
                name="user_accounts_have_a_user",
            ),
        ]

    def __str__(self) -> str:
        return "fee account" if self.kind == self.Kind.FEE else f"account {self.pk} ({self.user})"
