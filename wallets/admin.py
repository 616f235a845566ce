from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import NON_FIELD_ERRORS
from django.db import transaction
from django.db.models import Case, F, When
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from exchange.fields import SIGNED_PLAIN_DECIMAL
from trading.admin import ReadOnlyAdmin
from wallets import deposits, withdrawals
from wallets.models import AssetWalletSettings, Deposit, TierWithdrawalLimit, Withdrawal, WithdrawalAddress


class DepositForm(forms.ModelForm):
    # Taken as manage.py credit_deposit takes them: an amount of ASCII digits, an id as given (unstripped).
    amount = forms.CharField(strip=False, help_text="A plain decimal, e.g. 0.5.")
    external_id = forms.CharField(strip=False, help_text="The transaction's id on the outside, exactly.")

    class Meta:
        model = Deposit
        fields = ["account", "asset", "amount", "external_id"]
        error_messages = {NON_FIELD_ERRORS: {
            "unique_together": "This transaction was already credited for this asset; nothing was written.",
        }}

    def clean_amount(self) -> Decimal:
        if not SIGNED_PLAIN_DECIMAL.fullmatch(text := self.cleaned_data["amount"]):
            raise forms.ValidationError("Enter a plain decimal such as 0.5.")
        return Decimal(text)

    def clean_external_id(self) -> str:
        try:
            deposits.check_external_id(external_id := self.cleaned_data["external_id"])
        except deposits.DepositRefused as refusal:
            raise forms.ValidationError(str(refusal)) from None
        return external_id

    def clean(self):
        cleaned = super().clean()
        asset, amount = cleaned.get("asset"), cleaned.get("amount")
        if asset is not None and amount is not None:
            try:
                deposits.check_amount(asset, amount)
            except deposits.DepositRefused as refusal:
                self.add_error("amount", str(refusal))
        return cleaned


@admin.register(Deposit)
class DepositAdmin(admin.ModelAdmin):
    """Operators credit deposits here (with the ``wallets.add_deposit`` permission); a deposit is a
    ledger journal, so once credited it can be looked at, never changed or deleted."""

    form = DepositForm
    list_display = ("id", "created_at", "account", "asset", "amount", "external_id", "credited_by")
    list_filter = ("asset",)
    search_fields = ("external_id", "account__id", "account__user__username")
    raw_id_fields = ("account",)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except deposits.DepositRefused as refusal:  # a credit of the same transaction committed meanwhile
            self.message_user(request, str(refusal), messages.ERROR)
            return redirect(request.get_full_path())

    def save_form(self, request, form, change):
        # The service writes the Deposit row and its ledger journal together; save_model has nothing left to save.
        data = form.cleaned_data
        return deposits.credit_deposit(data["account"], data["asset"], data["amount"], data["external_id"],
                                       credited_by=request.user.get_username())

    def save_model(self, request, obj, form, change):
        pass

    def save_related(self, request, form, formsets, change):
        pass


@admin.register(AssetWalletSettings)
class AssetWalletSettingsAdmin(admin.ModelAdmin):
    """Per asset: deposits and withdrawals on or off, the withdrawal minimum and fee, and the daily
    limit of the tiers without their own (an asset without a row has the defaults, docs/api.md)."""

    list_display = ("asset", "deposit_enabled", "withdraw_enabled", "withdraw_minimum", "withdraw_fee",
                    "daily_withdrawal_limit")
    list_filter = ("deposit_enabled", "withdraw_enabled")

    def get_readonly_fields(self, request, obj=None):
        # The asset is the row's primary key: another asset chosen here would overwrite that asset's row.
        return ("asset",) if obj is not None else ()


@admin.register(TierWithdrawalLimit)
class TierWithdrawalLimitAdmin(admin.ModelAdmin):
    list_display = ("rate_tier", "asset", "daily_limit")
    list_filter = ("rate_tier", "asset")


@admin.register(WithdrawalAddress)
class WithdrawalAddressAdmin(ReadOnlyAdmin):
    """Account holders manage their address books on the account pages, with their password."""

    list_display = ("account", "asset", "address", "label", "created_at", "usable_from")
    list_filter = ("asset",)
    search_fields = ("address", "label", "account__id", "account__user__username")


class MarkSentForm(forms.Form):
    tx_id = forms.CharField(label="Transaction id", max_length=128, strip=False,
                            help_text="The transaction on the asset's network that paid the selected withdrawals.")

    def clean_tx_id(self) -> str:
        if not withdrawals.TX_ID.fullmatch(self.cleaned_data["tx_id"]):
            raise forms.ValidationError("Printable ASCII characters without spaces, as the network shows it.")
        return self.cleaned_data["tx_id"]


# The review queue: what waits for an operator first (pending review, then approved, oldest first),
# then the rest, newest first.
QUEUE_ORDER = [
    Case(When(status=Withdrawal.Status.PENDING_REVIEW, then=0), When(status=Withdrawal.Status.APPROVED, then=1),
         default=2).asc(),
    Case(When(status__in=Withdrawal.HOLDING, then=F("id")), default=F("id") * -1).asc(),
]


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    """The withdrawal review queue. Operators with ``wallets.review_withdrawal`` approve or reject,
    those with ``wallets.send_withdrawal`` mark approved withdrawals sent once a custody system has
    paid them; each transition is one transaction with its admin history entry."""

    list_display = ("id", "created_at", "status", "account", "asset", "amount", "fee", "address", "tx_id",
                    "reviewed_by", "sent_by")
    list_filter = ("status", "asset")
    search_fields = ("address", "tx_id", "client_withdrawal_id", "account__id", "account__user__username")
    actions = ("approve_selected", "reject_selected", "mark_sent_selected")

    def get_ordering(self, request):
        return QUEUE_ORDER

    def has_review_permission(self, request) -> bool:
        return request.user.has_perm("wallets.review_withdrawal")

    def has_send_permission(self, request) -> bool:
        return request.user.has_perm("wallets.send_withdrawal")

    def apply(self, request, queryset, transition, done: str) -> None:
        """``transition(id)`` on each selected withdrawal, each in its own transaction with its history
        entry; one refused (another operator got there first) leaves the others applied."""
        applied = 0
        for withdrawal_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                with transaction.atomic():
                    withdrawal = transition(withdrawal_id)
                    self.log_change(request, withdrawal, f"{done.capitalize()}.")
            except withdrawals.OperatorRefusal as refusal:
                self.message_user(request, f"{refusal} Left as it was.", messages.WARNING)
            else:
                applied += 1
        if applied:
            self.message_user(request, f"{applied} withdrawal(s) {done}.", messages.SUCCESS)

    @admin.action(description="Approve selected withdrawals", permissions=["review"])
    def approve_selected(self, request, queryset):
        operator = request.user.get_username()
        self.apply(request, queryset, lambda pk: withdrawals.approve_withdrawal(pk, operator), "approved")

    @admin.action(description="Reject selected withdrawals (releases their holds)", permissions=["review"])
    def reject_selected(self, request, queryset):
        operator = request.user.get_username()
        self.apply(request, queryset, lambda pk: withdrawals.reject_withdrawal(pk, operator), "rejected")

    @admin.action(description="Mark selected withdrawals sent…", permissions=["send"])
    def mark_sent_selected(self, request, queryset):
        form = MarkSentForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            operator, tx_id = request.user.get_username(), form.cleaned_data["tx_id"]
            self.apply(request, queryset, lambda pk: withdrawals.mark_sent(pk, tx_id, operator),
                       f"marked sent in {tx_id}")
            return None  # back to the queue
        return TemplateResponse(request, "admin/wallets/withdrawal/mark_sent.html", {
            **self.admin_site.each_context(request), "title": "Mark withdrawals sent", "opts": self.model._meta,
            "form": form, "withdrawals": queryset.select_related("asset", "account__user"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })
