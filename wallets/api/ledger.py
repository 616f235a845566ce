"""``GET /v1/account/ledger``: every change of the account's balances, newest (or oldest) first, with the balance
after it."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets

from exchange.fields import DECIMAL_OUTPUT_PATTERN, SIGNED_DECIMAL_OUTPUT_PATTERN, MillisecondsField
from exchange.money import format_amount
from trading.api.views import AccountViewMixin, IdCursorPagination
from trading.models import LedgerEntry, Wallet
from wallets import statements
from wallets.api.queries import LEDGER_LOOKUPS, LedgerQuerySerializer

SIGNED_DECIMAL = {"type": "string", "format": "decimal", "pattern": SIGNED_DECIMAL_OUTPUT_PATTERN,
                  "example": "-0.00150000", "description": "A decimal string, negative for a debit."}
DECIMAL = {"type": "string", "format": "decimal", "pattern": DECIMAL_OUTPUT_PATTERN, "example": "1.25000000"}


def at_asset_precision(value: Decimal, asset) -> str:
    """At least the asset's places; a finer amount (a fee) keeps all of its own, never rounded."""
    return format_amount(value, Decimal(1).scaleb(-asset.precision))


class LedgerEntrySerializer(serializers.ModelSerializer):
    """One change of one bucket of one wallet's balance of an asset."""

    id = serializers.IntegerField()
    time = MillisecondsField(source="created_at")
    asset = serializers.CharField(source="asset.symbol")
    wallet = serializers.ChoiceField(choices=Wallet.choices)
    bucket = serializers.ChoiceField(
        choices=[LedgerEntry.Bucket.AVAILABLE, LedgerEntry.Bucket.LOCKED],
        help_text="`available`, or `locked` (held by open orders and pending withdrawals, or subscribed to earn).",
    )
    kind = serializers.SerializerMethodField()
    amount = serializers.SerializerMethodField()
    balance_after = serializers.SerializerMethodField()
    reference = serializers.CharField(help_text="What caused it: `order:12`, `transfer:7`, `deposit:3`, ...")

    class Meta:
        model = LedgerEntry
        fields = ["id", "time", "asset", "wallet", "bucket", "kind", "amount", "balance_after", "reference"]

    @staticmethod
    @extend_schema_field(serializers.ChoiceField(choices=statements.KINDS))
    def get_kind(entry) -> str:
        return statements.KIND_OF_REASON[entry.reason]

    @staticmethod
    @extend_schema_field(SIGNED_DECIMAL)
    def get_amount(entry) -> str:
        return at_asset_precision(entry.amount, entry.asset)

    @staticmethod
    @extend_schema_field({**DECIMAL, "description": "The bucket's balance (this wallet's, this asset's) after it."})
    def get_balance_after(entry) -> str:
        return at_asset_precision(entry.balance_after, entry.asset)


class LedgerViewSet(AccountViewMixin, viewsets.GenericViewSet):
    pagination_class = IdCursorPagination
    serializer_class = LedgerEntrySerializer
    rate_weight = 5
    query_serializer = LedgerQuerySerializer

    def paginate_queryset(self, queryset):
        # The page, the balances and the sums that give each entry's balance after, in one snapshot.
        return statements.page_with_balances_after(self.account, queryset, super().paginate_queryset)

    @extend_schema(
        operation_id="listLedgerEntries",
        summary="Your ledger: every balance change, newest or oldest first, with the balance after it",
        description="One entry per change of one bucket (`available` or `locked`) of one wallet's balance of an "
                    "asset: order holds and releases, trades, fees, deposits, withdrawals, transfers, interest "
                    "and operator adjustments. `balance_after` is that bucket's balance after the entry, so the "
                    "entries of a wallet's bucket add up to its balance. Testnet money in the sandbox is a "
                    "`deposit`.",
        parameters=[LedgerQuerySerializer],
        responses={200: LedgerEntrySerializer(many=True)},
    )
    def list(self, request):
        return self.filtered_page(LedgerQuerySerializer, statements.entries_of(self.account), LEDGER_LOOKUPS)
