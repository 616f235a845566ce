from django.db import models
from django.db.models import Q

from trading.models import AmountField, Wallet


class Deposit(models.Model):
    """Money from the outside world, credited to an account's spot wallet by an operator (the admin)
    or a custody system's script (``manage.py credit_deposit``). The external transaction id is unique
    per asset, so the same deposit cannot be credited twice."""

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="deposits")
    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    amount = AmountField()
    external_id = models.CharField(max_length=128, help_text="The transaction id on the asset's network.")
    credited_by = models.CharField(max_length=150, help_text="The operator, or the script, that credited it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["asset", "external_id"], name="deposit_unique_external_id_per_asset"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
        ]
        indexes = [models.Index(fields=["account", "id"])]

    def __str__(self) -> str:
        return f"deposit {self.pk}: {self.amount} {self.asset} to {self.account}"


class Transfer(models.Model):
    """Money moved between two of one account's own wallets (spot, margin, earn)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="transfers")
    asset = models.ForeignKey("trading.Asset", on_delete=models.PROTECT, related_name="+")
    amount = AmountField()
    source = models.CharField(max_length=6, choices=Wallet.choices)
    target = models.CharField(max_length=6, choices=Wallet.choices)
    client_transfer_id = models.CharField(max_length=64, null=True, blank=True)
    request_digest = models.CharField(max_length=64, help_text="What was asked, to tell a retry from a reuse.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "client_transfer_id"], name="transfer_unique_client_id"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(condition=~Q(source=models.F("target")), name="transfer_between_two_wallets"),
        ]
        indexes = [models.Index(fields=["account", "id"])]

    def __str__(self) -> str:
        return f"transfer {self.pk}: {self.amount} {self.asset} {self.source} -> {self.target}"
