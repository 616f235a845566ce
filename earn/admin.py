"""Operators define earn products here and watch what they pay: subscriptions and accruals (read only),
the interest account's balances (funded with the ledger's credit form, linked from their list) and
the shortfalls that stopped accrual."""

from django import forms
from django.contrib import admin
from django.db.models import F

from accounts.models import Account
from trading.admin import ReadOnlyAdmin
from wallets.deposits import DepositRefused, check_amount

from earn.models import EarnProduct, InterestAccountBalance, InterestAccrual, InterestShortfall, Subscription


class EarnProductForm(forms.ModelForm):
    class Meta:
        model = EarnProduct
        fields = ["asset", "annual_rate", "lock_days", "min_amount", "capacity", "active"]

    def clean(self):
        cleaned = super().clean()
        asset = cleaned.get("asset") or (self.instance.asset if self.instance.pk else None)
        for name in ("min_amount", "capacity"):
            if asset is not None and cleaned.get(name) is not None:
                try:
                    check_amount(asset, cleaned[name])
                except DepositRefused as refusal:
                    self.add_error(name, str(refusal))
        return cleaned


@admin.register(EarnProduct)
class EarnProductAdmin(admin.ModelAdmin):
    """A product's rate, term, minimum, capacity and state may change at any time: subscriptions keep the
    rate and unlock time they were made with. Its asset is fixed once it exists."""

    form = EarnProductForm
    list_display = ("id", "asset", "annual_rate", "lock_days", "min_amount", "capacity", "subscribed",
                    "active", "created_at")
    list_filter = ("active", "asset")

    def get_queryset(self, request):
        return super().get_queryset(request).with_subscribed()

    def get_readonly_fields(self, request, obj=None):
        return ("asset",) if obj else ()

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="subscribed now")
    def subscribed(self, product):
        return product.subscribed or 0


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "account", "asset", "amount", "product", "annual_rate", "status",
                    "unlocks_at", "redeemed_at", "accrued_through", "interest")
    list_filter = ("status", "asset")
    search_fields = ("id", "account__id", "account__user__username", "client_subscription_id")

    def get_queryset(self, request):
        return super().get_queryset(request).for_rendering().select_related("account__user")

    @admin.display(description="interest paid")
    def interest(self, subscription):
        return subscription.interest or 0


@admin.register(InterestAccrual)
class InterestAccrualAdmin(ReadOnlyAdmin):
    list_display = ("id", "period", "subscription", "account", "amount", "created_at")
    list_filter = ("subscription__asset",)
    search_fields = ("subscription__id", "subscription__account__user__username")
    date_hierarchy = "period"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("subscription__asset", "subscription__account__user")

    @admin.display(description="account")
    def account(self, accrual):
        return accrual.subscription.account


class UnresolvedFilter(admin.SimpleListFilter):
    title = parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("no", "Not yet: accrual is stopped"), ("yes", "Paid since")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(resolved_at__isnull=self.value() == "no")
        return queryset


@admin.register(InterestShortfall)
class InterestShortfallAdmin(ReadOnlyAdmin):
    """Each row: an asset's accrual stopped at a day the interest account could not pay. Fund the
    interest account (Earn → Interest account balances); the next run pays every day owed and marks
    the row resolved."""

    list_display = ("asset", "period", "subscription", "needed", "available", "first_seen_at", "last_seen_at",
                    "resolved_at")
    list_filter = (UnresolvedFilter, "asset")
    ordering = (F("resolved_at").desc(nulls_first=True), "-period")


@admin.register(InterestAccountBalance)
class InterestAccountBalanceAdmin(ReadOnlyAdmin):
    """What the interest account holds per asset: interest is paid from its spot available balance.
    "Fund" opens the ledger's credit form for it (the trading.adjust_balance permission)."""

    list_display = ("asset", "wallet", "available", "locked")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(account__kind=Account.Kind.INTEREST).select_related("asset")

    def changelist_view(self, request, extra_context=None):
        interest_account = Account.objects.filter(kind=Account.Kind.INTEREST).values_list("pk", flat=True).first()
        return super().changelist_view(request, {**(extra_context or {}), "interest_account": interest_account})
