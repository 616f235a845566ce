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
