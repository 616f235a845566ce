from django import forms
from django.contrib import admin
from django.db import transaction

from accounts import keys
from accounts.forms import refuse_invisible_characters
from accounts.models import Account, ApiKey, RateTier
from accounts.passwords import AdminLogInForm
from accounts.services import DEFAULT_TIER_NAME
from exchange.errors import ExchangeError

admin.site.login_form = AdminLogInForm  # password attempts limited, as on the site's own log-in page


@admin.register(RateTier)
class RateTierAdmin(admin.ModelAdmin):
    list_display = ("name", "weight_per_minute", "maker_fee_rate", "taker_fee_rate", "min_30d_volume")
    search_fields = ("name",)
    ordering = ("min_30d_volume", "name")

    def get_readonly_fields(self, request, obj=None):
        # New accounts are opened on the default tier, found by its name.
        return ("name",) if obj is not None and obj.name == DEFAULT_TIER_NAME else ()

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.name == DEFAULT_TIER_NAME:
            return False  # without it no account could be opened (nor the markets' fees shown)
        return super().has_delete_permission(request, obj)


class AccountAdminForm(forms.ModelForm):
    """``kind`` is read-only here, and Django checks no constraint over a field its form leaves out: the
    model's rule that user accounts, and only they, have a user is checked by hand (else a 500)."""

    class Meta:
        model = Account
        fields = ["user", "verified", "rate_tier"]

    def clean(self):
        data = super().clean()
        if "user" in data and (data["user"] is None) == (self.instance.kind == Account.Kind.USER):
            self.add_error("user", "A user account has a user; the fee and interest accounts have none.")
        return data


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountAdminForm
    list_display = ("id", "user", "kind", "verified", "rate_tier", "created_at")
    list_filter = ("kind", "verified", "rate_tier")
    search_fields = ("id", "user__username", "user__email")
    autocomplete_fields = ("user",)
    actions = ("verify_accounts", "unverify_accounts")

    def get_readonly_fields(self, request, obj=None):
        # An account's balances, orders and keys are its user's: another user is never given them here
        # (value moves between people only through the ledger).
        return ("kind", "created_at", *(("user",) if obj is not None else ()))

    @admin.action(description="Verify selected accounts", permissions=["change"])
    def verify_accounts(self, request, queryset):
        self.set_verified(request, queryset, True)

    @admin.action(description="Remove verification from selected accounts", permissions=["change"])
    def unverify_accounts(self, request, queryset):
        self.set_verified(request, queryset, False)

    def has_delete_permission(self, request, obj=None):
        # The fee and interest accounts are the exchange's own: every matcher settles fees to the one.
        if obj is not None and obj.kind != Account.Kind.USER:
            return False
        return super().has_delete_permission(request, obj)

    def set_verified(self, request, queryset, verified: bool) -> None:
        """All the selected accounts or none (each save forgets the account's cached keys, in Redis: an
        outage answers 503 having changed nothing), each change in the admin's history. Each UPDATE locks
        its row as no stronger lock would: an order or a fill of the account still commits meanwhile."""
        with transaction.atomic():
            changed = list(queryset.exclude(verified=verified))
            for account in changed:
                account.verified = verified
                account.save(update_fields=["verified"])
                self.log_change(request, account, [{"changed": {"fields": ["verified"]}}])
        self.message_user(request, f"{len(changed)} account(s) {'verified' if verified else 'unverified'}.")


class ApiKeyAdminForm(forms.ModelForm):
    """Scope, allowlist and drift go through the same checks as the account pages."""

    ip_allowlist = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text="One address or CIDR range per line."
    )

    class Meta:
        model = ApiKey
        fields = ["label", "scope", "ip_allowlist", "drift_tolerance_ms"]

    def clean_label(self) -> str:
        refuse_invisible_characters(self.cleaned_data["label"])
        return self.cleaned_data["label"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["ip_allowlist"] = "\n".join(self.instance.ip_allowlist or [])

    def clean(self):
        data = super().clean()
        entries = [line.strip() for line in data.get("ip_allowlist", "").splitlines() if line.strip()]
        try:
            data["ip_allowlist"] = keys.normalize_allowlist(entries)
            keys.check_key_settings(data.get("scope", ""), data["ip_allowlist"], data.get("drift_tolerance_ms") or 0)
        except ExchangeError as error:
            for field, messages in error.details.get("fields", {}).items():
                self.add_error(field if field in self.fields else None, messages)
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Operators find, re-scope and revoke keys; the secret is never shown (only its ciphertext exists)."""

    form = ApiKeyAdminForm
    list_display = ("public_id", "label", "account", "scope", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("public_id", "label", "account__id", "account__user__username")
    readonly_fields = ("public_id", "account", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke_keys",)

    def has_add_permission(self, request):
        return False  # keys are created where their secret can be shown once: the account pages

    def has_change_permission(self, request, obj=None):
        # A revoked key stays revoked: there is nothing left to change (its page is shown, read only).
        return super().has_change_permission(request, obj) and not (obj is not None and obj.revoked_at)

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the record of who could sign, from where and until when stays

    def save_model(self, request, obj, form, change):
        # The form's fields only: the row as read when the page was posted must not write back a revocation,
        # a use or a rotated secret committed meanwhile (a revoked key would work again).
        obj.save(update_fields=ApiKeyAdminForm.Meta.fields)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        live = list(queryset.filter(revoked_at__isnull=True))
        keys.revoke_api_keys(queryset.filter(pk__in=[key.pk for key in live]))
        for key in live:
            self.log_change(request, key, "Revoked.")
        self.message_user(request, f"{len(live)} key(s) revoked.")
