from datetime import timedelta
from decimal import Decimal

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import F, Q

from trading.models import AmountField, Balance
from trading.sql import ExactSum
from wallets.models import Movement


class EarnProductQuerySet(models.QuerySet):
    def with_subscribed(self):
        """With ``subscribed``: the principal of its active subscriptions (None for none)."""
        return self.select_related("asset").annotate(
            subscribed=ExactSum("subscriptions__amount", filter=Q(subscriptions__status="active")))

    def open(self):
        """The products taking subscriptions, as they are listed."""
        return self.with_subscribed().filter(active=True).order_by("asset__symbol", "lock_days", "id")


MAX_LOCK_DAYS = 3650  # ten years: longer than any exchange offers, and a date Python can still reach
MAX_ANNUAL_RATE = Decimal(10)  # 1,000 % a year: past any promotional rate, and no typo's billion


class EarnProduct(models.Model):
    """An earn product operators define: subscribed principal earns ``annual_rate`` a year, paid daily
    from the interest account; locked for ``lock_days`` after subscribing (0: flexible, redeemable at
    any time). ``capacity`` caps the principal subscribed at once."""

    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    annual_rate = AmountField(validators=[MaxValueValidator(MAX_ANNUAL_RATE)],
                              help_text=f"0.05 = 5 % a year, at most {MAX_ANNUAL_RATE}; a subscription keeps the rate "
                                        "it was made at.")
    lock_days = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(MAX_LOCK_DAYS)],
                                            help_text=f"0: flexible, redeemable at any time; at most {MAX_LOCK_DAYS}.")
    min_amount = AmountField(help_text="The smallest subscription.")
    capacity = AmountField(help_text="The most principal subscribed at once, all accounts together.")
    active = models.BooleanField(default=True, help_text="Off: new subscriptions are refused; existing ones "
                                                         "keep earning until redeemed.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EarnProductQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(annual_rate__gte=0), name="earn_product_rate_not_negative"),
            models.CheckConstraint(condition=Q(min_amount__gt=0, capacity__gte=F("min_amount")),
                                   name="earn_product_minimum_within_capacity"),
            models.CheckConstraint(condition=Q(lock_days__lte=MAX_LOCK_DAYS), name="earn_product_lock_at_most_ten_years"),
        ]

    @property
    def lock(self) -> timedelta:
        return timedelta(days=self.lock_days)

    @property
    def remaining_capacity(self):
        """What may still be subscribed; needs ``with_subscribed()``."""
        return max(self.capacity - (self.subscribed or Decimal(0)), Decimal(0))

    def __str__(self) -> str:
        term = f"locked {self.lock_days} days" if self.lock_days else "flexible"
        return f"{self.asset} {self.annual_rate.normalize():f} a year, {term}"


class SubscriptionQuerySet(models.QuerySet):
    def for_rendering(self):
        """With the asset and product they are shown with, and ``interest``: what they earned (None for nothing)."""
        return self.select_related("asset", "product").annotate(interest=ExactSum("accruals__amount"))


class Subscription(Movement):
    """Principal moved from an account's spot wallet into its earn wallet's locked bucket for an earn
    product. ``asset`` is the product's (kept here for the wallet lists' filters) and ``created_at``
    is when it was subscribed.

    Interest is paid for each whole UTC day held: from the day after ``created_at`` to
    ``last_period`` (the day before redemption; none while active). ``accrued_through`` is the last
    day settled (paid, or marked paid when it rounded to zero): it starts at the day of subscription,
    which earns nothing.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        REDEEMED = "redeemed"

    # Set by the service rather than on save: the lock and the first day of interest count from the same instant.
    created_at = models.DateTimeField(help_text="When it was subscribed: its lock and its first day of interest "
                                                "count from then.")
    product = models.ForeignKey(EarnProduct, on_delete=models.PROTECT, related_name="subscriptions")
    annual_rate = AmountField(help_text="The product's rate when subscribed.")
    unlocks_at = models.DateTimeField(help_text="From when it may be redeemed.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    last_period = models.DateField(null=True, blank=True, help_text="The last day (UTC) that earns interest, "
                                                                    "once redeemed.")
    accrued_through = models.DateField(help_text="The last day (UTC) whose interest is settled.")
    client_subscription_id = models.CharField(max_length=64, null=True, blank=True)
    request_digest = models.CharField(max_length=64, help_text="What was asked, to tell a retry from a reuse.")

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "client_subscription_id"],
                                    name="subscription_unique_client_id"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="subscription_amount_positive"),
            models.CheckConstraint(condition=Q(status="active", redeemed_at__isnull=True, last_period__isnull=True)
                                   | Q(status="redeemed", redeemed_at__isnull=False, last_period__isnull=False),
                                   name="subscription_redeemed_when_redeemed"),
        ]
        indexes = [models.Index(fields=["account", "id"]), models.Index(fields=["status", "product"])]

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def lock_days(self) -> int:
        """The product's term when subscribed (an operator may change the product's since): the lock runs
        from ``created_at`` to ``unlocks_at``."""
        return (self.unlocks_at - self.created_at).days

    def __str__(self) -> str:
        return f"subscription {self.pk}: {self.amount} {self.asset} ({self.status})"


class InterestAccrual(models.Model):
    """One day's interest on one subscription, paid once: the unique key on (subscription, period)
    makes a second payment of the same day fail before it writes anything. A day whose interest
    rounds down to zero has a row with amount 0 and no ledger entries."""

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="accruals")
    period = models.DateField(help_text="The UTC day the interest is for.")
    amount = AmountField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "period"], name="interest_accrual_once_per_period"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="interest_accrual_not_negative"),
        ]

    def __str__(self) -> str:
        return f"interest {self.amount} on subscription {self.subscription_id} for {self.period}"


class InterestShortfall(models.Model):
    """Accrual of an asset stopped because the interest account could not pay a day's interest: what
    operators must fund. One row per asset and day, seen again by each run until the day is paid."""

    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    period = models.DateField(help_text="The first UTC day left unpaid.")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="+",
                                     help_text="The subscription whose interest could not be paid.")
    needed = AmountField(help_text="That subscription's interest for the day.")
    available = AmountField(help_text="What the interest account had available when last tried.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="When a later run paid the asset's "
                                                                        "interest up to date.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset", "period"], name="interest_shortfall_per_day")]

    def __str__(self) -> str:
        return f"{self.asset} interest unpaid from {self.period}"


class InterestAccountBalance(Balance):
    """The interest account's balances, for the admin."""

    class Meta:
        proxy = True
