from datetime import timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Min, OuterRef, Subquery
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.models import Account
from exchange import slow_requests
from exchange.errors import ExchangeError
from exchange.fields import SIGNED_PLAIN_DECIMAL
from exchange.money import AMOUNT_LIMIT, DECIMAL_PLACES, MAX_DIGITS
from trading import ledger, services
from trading.audit import run_audit
from trading.models import Asset, AuditRun, Balance, LedgerEntry, Market, MatcherCommand, Order, SlowRequest, Wallet
from trading.signals import announce_balances


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only the ledger or the matcher write: operators may look, never edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("symbol", "name", "precision", "circulating_supply")
    search_fields = ("symbol", "name")

    def get_readonly_fields(self, request, obj=None):
        # Markets' pairs are spelled with it when saved, and clients, seeds and the ledger's readers know the
        # asset by it: a new symbol is a new asset.
        return ("symbol",) if obj is not None else ()


class MarketForm(forms.ModelForm):
    class Meta:
        model = Market
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        market = self.instance
        tick, lot = cleaned.get("tick_size"), cleaned.get("lot_size")
        if tick and lot and (tick * lot).normalize().as_tuple().exponent < -DECIMAL_PLACES:
            # Every price x size (a hold, a trade's quote amount) is stored exactly at DECIMAL_PLACES places.
            raise forms.ValidationError(f"tick size x lot size is {tick * lot:f}: amounts are kept to "
                                        f"{DECIMAL_PLACES} decimal places, so it must be a multiple of "
                                        f"{Decimal(1).scaleb(-DECIMAL_PLACES):f}.")
        if market.pk and tick and lot and (tick, lot) != (market.tick_size, market.lot_size):
            if market.status == Market.Status.ONLINE:
                # Online, an order could be accepted on the old grid between this check and the save.
                raise forms.ValidationError("Set the market to cancel only (or halt it) before changing its grid.")
            if transaction.get_connection().in_atomic_block:  # the admin's change view: one transaction to the save
                # The market row locked to the save's commit: a batch in flight commits first (it holds the row),
                # and none commits between this check and the save, which could leave a remainder off the new grid.
                Market.objects.select_for_update().get(pk=market.pk)
            off_grid = off_grid_orders(market, tick, lot)
            if off_grid:
                raise forms.ValidationError(
                    f"{len(off_grid)} live order(s) are off the new grid (first: {off_grid[:5]}); the matcher could "
                    "not rebuild the book. Have them cancelled first.")
        return cleaned


def off_grid_orders(market: Market, tick: Decimal, lot: Decimal) -> list[int]:
    """Ids of the market's live orders with a price, stop or protection price, remaining size or
    funds off the grid (the matcher counts them in whole ticks and lots)."""
    live = Order.objects.live(market).values_list(
        "pk", "price", "stop_price", "protection_price", "size", "filled_size", "funds")
    return [pk for pk, price, stop, protection, size, filled, funds in live
            if any(value is not None and value % tick for value in (price, stop, protection))
            or (size is not None and (size - filled) % lot) or (funds is not None and funds % (tick * lot))]


def queued(aggregate):
    """One aggregate of the pair's unprocessed matcher commands, as a subquery of the market row."""
    commands = MatcherCommand.objects.filter(market=OuterRef("pk")).order_by().values("market")
    return Subquery(commands.annotate(value=aggregate).values("value"))


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    """The markets, and each pair's matcher as an operator watches it: its queue (the accepted commands it has not
    processed), its lag (the age of the oldest of them), its committed sequence and batches and when it last
    committed one; the actions halt a market or make it cancel only."""

    form = MarketForm
    list_display = ("pair", "status", "queue_depth", "lag", "sequence", "batches", "last_batch_at", "tick_size",
                    "lot_size", "min_size", "min_notional")
    list_filter = ("status",)
    search_fields = ("pair",)
    readonly_fields = ("pair", "status", "created_at")
    actions = ("halt", "set_cancel_only", "resume")

    def get_readonly_fields(self, request, obj=None):
        # The pair's assets are fixed once orders may refer to it; status changes go through the actions.
        return (*self.readonly_fields, "base", "quote") if obj else self.readonly_fields

    def get_queryset(self, request):
        # One query for the page: each pair's queue counted through the (market, id) index of its commands.
        return super().get_queryset(request).select_related("book_state").annotate(
            queued_commands=queued(Count("id")), oldest_queued_at=queued(Min("queued_at")))

    @admin.display(description="queue")
    def queue_depth(self, market) -> int:
        return market.queued_commands or 0

    @admin.display(description="lag (s)")
    def lag(self, market) -> str:
        if market.oldest_queued_at is None:
            return "-"
        return f"{max(timezone.now() - market.oldest_queued_at, timedelta(0)).total_seconds():.1f}"

    @staticmethod
    def book_state(market):
        return getattr(market, "book_state", None)

    @admin.display(description="last sequence")
    def sequence(self, market):
        state = self.book_state(market)
        return state and state.sequence

    @admin.display(description="batches")
    def batches(self, market):
        state = self.book_state(market)
        return state and state.batches

    @admin.display(description="last batch")
    def last_batch_at(self, market):
        state = self.book_state(market)
        return state and state.last_batch_at

    def change_status(self, request, queryset, status: str) -> None:
        for market in queryset:
            services.set_market_status(market.pk, status)
            self.log_change(request, market, f"Set status to {status}.")
        self.message_user(request, f"{queryset.count()} market(s) set to {status}.")

    @admin.action(description="Halt: refuse new orders and cancels", permissions=["change"])
    def halt(self, request, queryset):
        self.change_status(request, queryset, Market.Status.HALTED)

    @admin.action(description="Cancel only: accept cancels, refuse new orders", permissions=["change"])
    def set_cancel_only(self, request, queryset):
        self.change_status(request, queryset, Market.Status.CANCEL_ONLY)

    @admin.action(description="Resume trading", permissions=["change"])
    def resume(self, request, queryset):
        self.change_status(request, queryset, Market.Status.ONLINE)


class AdjustBalanceForm(forms.Form):
    account = forms.ModelChoiceField(queryset=Account.objects.all())
    asset = forms.ModelChoiceField(queryset=Asset.objects.all(), to_field_name="symbol")
    wallet = forms.ChoiceField(choices=Wallet.choices, initial=Wallet.SPOT)
    amount = forms.CharField(help_text="Signed decimal: 100.5 credits, -100.5 debits the available balance.")
    memo = forms.CharField(max_length=200, label="Reason", help_text="Required; kept on the ledger entries.")

    def clean_amount(self) -> Decimal:
        text = self.cleaned_data["amount"].strip()
        if not SIGNED_PLAIN_DECIMAL.fullmatch(text):  # Decimal() also takes "1_000", "1e3" and other scripts' digits
            raise forms.ValidationError("Enter a plain decimal such as 100.5 or -100.5.")
        amount = Decimal(text)
        if amount == 0:
            raise forms.ValidationError("Enter a non-zero plain decimal such as 100.5 or -100.5.")
        if abs(amount) >= AMOUNT_LIMIT or amount.normalize().as_tuple().exponent < -DECIMAL_PLACES:
            raise forms.ValidationError(f"At most {MAX_DIGITS - DECIMAL_PLACES} digits before and {DECIMAL_PLACES} "
                                        "after the point: a balance holds no more.")
        return amount


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ("account", "asset", "wallet", "available", "locked")
    list_filter = ("wallet", "asset")
    search_fields = ("account__id", "account__user__username")
    actions = ("adjust_selected",)

    def get_urls(self):
        adjust = path("adjust/", self.admin_site.admin_view(self.adjust_view), name="trading_balance_adjust")
        return [adjust, *super().get_urls()]

    def has_adjust_permission(self, request) -> bool:
        return request.user.has_perm("trading.adjust_balance")

    @admin.action(description="Credit or debit through the ledger", permissions=["adjust"])
    def adjust_selected(self, request, queryset):
        selected = list(queryset[:2])
        if len(selected) != 1:  # the form credits one balance: a second one selected would be left unsaid
            self.message_user(request, "Select one balance to credit or debit.", messages.WARNING)
            return None
        balance = selected[0]
        url = reverse("admin:trading_balance_adjust")
        return redirect(f"{url}?account={balance.account_id}&asset={balance.asset.symbol}&wallet={balance.wallet}")

    def adjust_view(self, request):
        if not self.has_adjust_permission(request):
            raise PermissionDenied
        form = AdjustBalanceForm(request.POST or None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                ledger.adjust_balance(
                    account_id=data["account"].pk,
                    asset_id=data["asset"].pk,
                    amount=data["amount"],
                    wallet=data["wallet"],
                    # cut to fit (a username may be longer): the admin's history names the operator whole
                    reference=f"admin:{request.user.username}"[:ledger.REFERENCE_LENGTH],
                    memo=data["memo"],
                )
            except ExchangeError as error:
                form.add_error("amount", error.message)
            else:
                announce_balances(data["account"].pk)
                balance = Balance.objects.get(account=data["account"], asset=data["asset"], wallet=data["wallet"])
                self.log_change(request, balance, f"Adjusted by {data['amount']}: {data['memo']}")
                messages.success(request, f"{balance}: {data['amount']:+} {data['asset']} applied.")
                return redirect("admin:trading_balance_changelist")
        context = {**self.admin_site.each_context(request), "form": form, "title": "Credit or debit a balance",
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/trading/balance/adjust.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "reason", "account", "asset", "wallet", "bucket", "amount", "reference", "memo")
    list_filter = ("reason", "bucket", "asset")
    search_fields = ("reference", "journal", "account__user__username")


@admin.register(AuditRun)
class AuditRunAdmin(ReadOnlyAdmin):
    """The kept runs of the ledger audit (command, beat job or this page's button), the latest shown first."""

    list_display = ("started_at", "clean", "problem_count", "duration", "trigger", "started_by")
    list_filter = ("clean", "trigger")
    fields = ("started_at", "trigger", "started_by", "duration", "clean", "problem_count", "counts", "problems")
    change_list_template = "admin/trading/auditrun/change_list.html"

    def has_run_permission(self, request) -> bool:
        return request.user.has_perm("trading.run_audit")

    def get_urls(self):
        run = path("run/", self.admin_site.admin_view(require_POST(self.run_view)), name="trading_auditrun_run")
        return [run, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        context = {"latest_run": AuditRun.objects.first(), "can_run": self.has_run_permission(request)}
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def run_view(self, request):
        """Run the audit now, in this request, and keep its result (a POST: it writes a row)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        run = run_audit(AuditRun.Trigger.ADMIN, started_by=request.user.get_username())
        if run.clean:
            messages.success(request, f"{run}.")
        else:
            messages.error(request, f"{run}; the first: {run.problems[0]}")
        return redirect("admin:trading_auditrun_changelist")


@admin.register(SlowRequest)
class SlowRequestAdmin(ReadOnlyAdmin):
    """The slowest requests of the last hour served by any process, slowest first: one page, no rows to open."""

    def get_urls(self):
        page = path("", self.admin_site.admin_view(self.changelist_view), name="trading_slowrequest_changelist")
        return [page]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": "Slowest recent requests",
                   "opts": self.model._meta, "requests": slow_requests.slowest(),
                   "keep": settings.SLOW_REQUESTS_KEEP, "minutes": settings.SLOW_REQUESTS_WINDOW_SECONDS // 60}
        return TemplateResponse(request, "admin/trading/slowrequest/change_list.html", context)
