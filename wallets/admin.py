from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS
from django.shortcuts import redirect

from wallets import deposits
from wallets.models import Deposit


class DepositForm(forms.ModelForm):
    class Meta:
        model = Deposit
        fields = ["account", "asset", "amount", "external_id"]
        error_messages = {NON_FIELD_ERRORS: {
            "unique_together": "This transaction was already credited for this asset; nothing was written.",
        }}

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
