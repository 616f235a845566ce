from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from exchange.ratelimit import MAX_REQUEST_WEIGHT

FEE_RATE = {"max_digits": 10, "decimal_places": 8}


class RateTier(models.Model):
    """A rate-limit budget and fee schedule; operators edit these rows in the admin."""

    name = models.CharField(max_length=50, unique=True)
    weight_per_minute = models.PositiveIntegerField(
        default=1200, validators=[MinValueValidator(MAX_REQUEST_WEIGHT)],
        help_text=f"Request weight allowed per sliding minute; at least {MAX_REQUEST_WEIGHT}, the heaviest request's "
                  "(a batch of that many orders), which a smaller budget would refuse every minute.",
    )
    maker_fee_rate = models.DecimalField(**FEE_RATE, default=Decimal("0.001"), help_text="0.001 = 0.1 %")
    taker_fee_rate = models.DecimalField(**FEE_RATE, default=Decimal("0.002"), help_text="0.002 = 0.2 %")
    min_30d_volume = models.DecimalField(
        "minimum 30-day volume", max_digits=30, decimal_places=2, null=True, blank=True,
        help_text="Assigned by volume: accounts whose 30-day volume (in the reference asset, FEE_TIER_VOLUME_ASSET) "
                  "reaches this are moved here by the daily job (manage.py assign_fee_tiers). Empty: a manual tier, "
                  "whose accounts the job never moves.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=1, taker_fee_rate__gte=0, taker_fee_rate__lt=1),
                name="rate_tier_fee_rates_in_range",
            ),
            models.CheckConstraint(condition=Q(min_30d_volume__gte=0), name="rate_tier_min_volume_not_negative"),
            # Two tiers with one threshold would leave the job to pick between them.
            models.UniqueConstraint(fields=["min_30d_volume"], name="rate_tier_min_volume_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.weight_per_minute}/min)"


class Account(models.Model):
    """The trading account: one per user, plus the exchange's own fee account and the interest
    account that operators fund and earn products pay interest from."""

    class Kind(models.TextChoices):
        USER = "user"
        FEE = "fee"
        INTEREST = "interest"

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
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="interest"), name="one_interest_account"),
            models.CheckConstraint(
                condition=Q(kind__in=["fee", "interest"], user__isnull=True) | Q(kind="user", user__isnull=False),
                name="user_accounts_have_a_user",
            ),
        ]

    def __str__(self) -> str:
        return f"account {self.pk} ({self.user})" if self.kind == self.Kind.USER else f"{self.kind} account"


class ApiKeyQuerySet(models.QuerySet):
    def of_user(self, user):
        return self.filter(account__user=user)

    def active_first(self):
        """Live keys before revoked ones, each newest first: how a key list is shown."""
        return self.order_by(models.F("revoked_at").desc(nulls_first=True), "-created_at")


class ApiKey(models.Model):
    """A bot's credential: public id, encrypted secret, one scope, an IP allowlist and a clock tolerance."""

    class Scope(models.TextChoices):
        READ_ONLY = "read_only", "Read only"
        TRADE = "trade", "Trade (read, place and cancel orders)"
        TRADE_WITHDRAW = "trade_withdraw", "Trade and withdraw"

    MIN_DRIFT_MS, DEFAULT_DRIFT_MS, MAX_DRIFT_MS = 1_000, 5_000, 60_000
    # Each key has its own rate budget, so keys are capped per account (Binance's cap is also 30).
    MAX_LIVE_PER_ACCOUNT = 30

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    public_id = models.CharField(max_length=40, unique=True, editable=False)
    label = models.CharField(max_length=80)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.READ_ONLY)
    secret_ciphertext = models.TextField(editable=False, help_text="The secret, encrypted (Fernet).")
    ip_allowlist = models.JSONField(default=list, blank=True, help_text="Addresses and CIDR ranges, IPv4 or IPv6.")
    drift_tolerance_ms = models.PositiveIntegerField(
        default=DEFAULT_DRIFT_MS, help_text="How far the client's X-Api-Timestamp may be from server time."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(drift_tolerance_ms__gte=1_000, drift_tolerance_ms__lte=60_000), name="api_key_drift_range"
            )
        ]

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def __str__(self) -> str:
        return f"{self.public_id} ({self.label})"
