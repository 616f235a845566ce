from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from trading.models import AmountField, Wallet


class Movement(models.Model):
    """An amount of one asset moved for one account, newest first per account."""

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="%(class)ss")
    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    amount = AmountField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class Deposit(Movement):
    """Money from the outside world, credited to an account's spot wallet by an operator (the admin)
    or a custody system's script (``manage.py credit_deposit``). The external transaction id is unique
    per asset, so the same deposit cannot be credited twice."""

    external_id = models.CharField(max_length=128, help_text="The transaction id on the asset's network.")
    credited_by = models.CharField(max_length=150, help_text="The operator, or the script, that credited it.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["asset", "external_id"], name="deposit_unique_external_id_per_asset"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
        ]
        indexes = [models.Index(fields=["account", "id"])]

    def __str__(self) -> str:
        return f"deposit {self.pk}: {self.amount} {self.asset} to {self.account}"


class Transfer(Movement):
    """Money moved between two of one account's own wallets (spot, margin, earn)."""

    source = models.CharField(max_length=6, choices=Wallet.choices)
    target = models.CharField(max_length=6, choices=Wallet.choices)
    client_transfer_id = models.CharField(max_length=64, null=True, blank=True)
    request_digest = models.CharField(max_length=64, help_text="What was asked, to tell a retry from a reuse.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "client_transfer_id"], name="transfer_unique_client_id"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(condition=~Q(source=models.F("target")), name="transfer_between_two_wallets"),
        ]
        indexes = [models.Index(fields=["account", "id"])]

    def __str__(self) -> str:
        return f"transfer {self.pk}: {self.amount} {self.asset} {self.source} -> {self.target}"


def refuse_finer_than_the_asset(row: models.Model, *names: str) -> None:
    """A form's errors for the amounts finer than the row's asset's precision, which could not be
    shown to an account holder as they are."""
    if row.asset_id is None:
        return
    asset = row.asset
    amounts = {name: getattr(row, name) for name in names if getattr(row, name) is not None}
    errors = {name: f"At most {asset.precision} decimal places for {asset.symbol}." for name, amount in amounts.items()
              if amount.normalize().as_tuple().exponent < -asset.precision}
    if errors:
        raise ValidationError(errors)


class AssetWalletSettings(models.Model):
    """What operators set per asset for money leaving and entering it. An asset without a row has
    ``DEFAULTS``: deposits and withdrawals enabled, no minimum beyond a positive amount, no fee and
    no daily limit (every withdrawal is still reviewed by an operator)."""

    asset = models.OneToOneField("trading.Asset", on_delete=models.CASCADE, primary_key=True,
                                 related_name="wallet_settings")
    deposit_enabled = models.BooleanField(default=True, help_text="Off: deposits of this asset are refused.")
    withdraw_enabled = models.BooleanField(default=True, help_text="Off: new withdrawals are refused "
                                           "(those already requested can still be reviewed, sent or cancelled).")
    withdraw_minimum = AmountField(default=Decimal(0),
                                   help_text="The smallest amount a withdrawal may ask for (before the fee).")
    withdraw_fee = AmountField(default=Decimal(0),
                               help_text="Charged on top of each withdrawal's amount, to the fee account.")
    daily_withdrawal_limit = AmountField(
        null=True, blank=True,
        help_text="The most an account may withdraw over any 24 hours, unless its rate tier has its own limit "
                  "for this asset. Empty: no limit.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "asset wallet settings"
        constraints = [
            models.CheckConstraint(condition=Q(withdraw_minimum__gte=0, withdraw_fee__gte=0),
                                   name="asset_wallet_settings_not_negative"),
            models.CheckConstraint(condition=Q(daily_withdrawal_limit__isnull=True) | Q(daily_withdrawal_limit__gte=0),
                                   name="asset_wallet_settings_limit_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.asset} wallet settings"

    @classmethod
    def of(cls, asset) -> "AssetWalletSettings":
        """The asset's settings, or the defaults (an unsaved row) when operators have set none."""
        return cls.objects.filter(asset=asset).first() or cls(asset=asset)

    def clean(self):
        refuse_finer_than_the_asset(self, "withdraw_minimum", "withdraw_fee", "daily_withdrawal_limit")


class TierWithdrawalLimit(models.Model):
    """A rate tier's own daily withdrawal limit for one asset, in place of the asset's default."""

    rate_tier = models.ForeignKey("accounts.RateTier", on_delete=models.CASCADE, related_name="+")
    asset = models.ForeignKey("trading.Asset", on_delete=models.CASCADE, related_name="+")
    daily_limit = AmountField(help_text="The most an account of this tier may withdraw over any 24 hours; "
                                        "0: none at all.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rate_tier", "asset"], name="tier_withdrawal_limit_unique"),
            models.CheckConstraint(condition=Q(daily_limit__gte=0), name="tier_withdrawal_limit_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.rate_tier.name}: {self.daily_limit} {self.asset} a day"

    def clean(self):
        refuse_finer_than_the_asset(self, "daily_limit")


class WithdrawalAddress(models.Model):
    """An address in an account's withdrawal address book: withdrawals of its asset may go there
    once ``usable_from`` has passed (the waiting period gives the holder time to notice an address
    someone else added)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="withdrawal_addresses")
    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    address = models.CharField(max_length=128)
    label = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField()
    usable_from = models.DateTimeField()

    class Meta:
        verbose_name_plural = "withdrawal address book"
        constraints = [
            models.UniqueConstraint(fields=["account", "asset", "address"], name="withdrawal_address_unique"),
            models.CheckConstraint(condition=Q(usable_from__gte=models.F("created_at")),
                                   name="withdrawal_address_usable_after_created"),
        ]

    def __str__(self) -> str:
        return f"{self.asset} {self.address}" + (f" ({self.label})" if self.label else "")


class Withdrawal(Movement):
    """Money leaving an account's spot wallet for an address in its address book. Requested, its
    amount plus fee is held (spot available to locked); an operator approves or rejects it, and
    marks it sent with the external transaction id once a custody system has paid it out."""

    class Status(models.TextChoices):
        PENDING_REVIEW = "pending_review"
        APPROVED = "approved"
        SENT = "sent"
        REJECTED = "rejected"
        CANCELLED = "cancelled"

    HOLDING = (Status.PENDING_REVIEW, Status.APPROVED)  # the states whose amount plus fee is held
    REVIEWED = (Status.APPROVED, Status.SENT, Status.REJECTED)

    fee = AmountField()
    address = models.CharField(max_length=128)
    client_withdrawal_id = models.CharField(max_length=64, null=True, blank=True)
    request_digest = models.CharField(max_length=64, help_text="What was asked, to tell a retry from a reuse.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING_REVIEW)
    tx_id = models.CharField(max_length=128, null=True, blank=True,
                             help_text="The transaction id on the asset's network, once sent.")
    reviewed_by = models.CharField(max_length=150, blank=True, help_text="The operator who approved or rejected it.")
    sent_by = models.CharField(max_length=150, blank=True, help_text="The operator who marked it sent.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("review_withdrawal", "Can approve or reject withdrawals"),
                       ("send_withdrawal", "Can mark approved withdrawals sent")]
        constraints = [
            models.UniqueConstraint(fields=["account", "client_withdrawal_id"], name="withdrawal_unique_client_id"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="withdrawal_amount_positive"),
            models.CheckConstraint(condition=Q(fee__gte=0), name="withdrawal_fee_not_negative"),
            models.CheckConstraint(
                condition=Q(status__in=["pending_review", "approved", "sent", "rejected", "cancelled"]),
                name="withdrawal_status_known",
            ),
            models.CheckConstraint(condition=Q(status="sent", tx_id__isnull=False) & ~Q(tx_id="")
                                   | ~Q(status="sent") & Q(tx_id__isnull=True),
                                   name="withdrawal_tx_id_when_sent"),
            models.CheckConstraint(condition=Q(status__in=["approved", "sent", "rejected"]) & ~Q(reviewed_by="")
                                   | Q(status__in=["pending_review", "cancelled"], reviewed_by=""),
                                   name="withdrawal_reviewed_by_when_reviewed"),
            models.CheckConstraint(condition=Q(status="sent") & ~Q(sent_by="") | ~Q(status="sent") & Q(sent_by=""),
                                   name="withdrawal_sent_by_when_sent"),
        ]
        indexes = [
            models.Index(fields=["account", "id"]),
            models.Index(fields=["account", "asset", "created_at"]),  # the daily limit's window
            models.Index(fields=["status", "id"]),  # the review queue
        ]

    @property
    def held(self):
        """What the request holds while pending review or approved: the amount plus the fee."""
        return self.amount + self.fee

    def __str__(self) -> str:
        return f"withdrawal {self.pk}: {self.amount} {self.asset} to {self.address} ({self.status})"
