from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exchange.fields import DecimalString, IntegerString, MillisecondsField
from exchange.money import format_amount
from exchange.queries import MAX_PAGE_SIZE, QuerySerializer, TimeWindowQuery
from trading.api.serializers import FeeRate, format_rate
from trading.models import Market, Trade


def tick_size(context):
    return context["market"].tick_size


def lot_size(context):
    return context["market"].lot_size


def quote_step(context):
    market = context["market"]
    return market.tick_size * market.lot_size


def quote_precision(context):
    return Decimal(1).scaleb(-context["market"].quote.precision)


def percent_places(context):
    return Decimal("0.01")


class TimeSerializer(serializers.Serializer):
    time = serializers.IntegerField(help_text="Server time, milliseconds since the Unix epoch.")


class MarketSerializer(serializers.ModelSerializer):
    base = serializers.CharField(source="base.symbol")
    quote = serializers.CharField(source="quote.symbol")
    tick_size = DecimalString()
    lot_size = DecimalString()
    min_size = DecimalString()
    min_notional = serializers.SerializerMethodField(help_text="Smallest price × size, in quote.")
    maker_fee = serializers.SerializerMethodField(
        help_text="The default tier's maker fee rate (0.001 = 0.1 %); yours: GET /v1/account/fees.")
    taker_fee = serializers.SerializerMethodField(help_text="The default tier's taker fee rate.")

    class Meta:
        model = Market
        fields = ["pair", "base", "quote", "status", "tick_size", "lot_size", "min_size", "min_notional", "maker_fee",
                  "taker_fee"]

    # context["fee_tier"]: the default tier, read once for every market.
    @extend_schema_field(FeeRate)
    def get_maker_fee(self, market: Market) -> str:
        return format_rate(self.context["fee_tier"].maker_fee_rate)

    @extend_schema_field(FeeRate)
    def get_taker_fee(self, market: Market) -> str:
        return format_rate(self.context["fee_tier"].taker_fee_rate)


    @extend_schema_field(DecimalString)
    def get_min_notional(self, market: Market) -> str:
        return format_amount(market.min_notional, quote_precision({"market": market}))


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "description": "Price levels as [price, size] decimal strings.",
        "example": [["63000.00", "0.50000000"]],
    }
)
class BookLevelsField(serializers.Field):
    def to_representation(self, levels):
        market = self.context["market"]
        return [[format_amount(price, market.tick_size), format_amount(size, market.lot_size)] for price, size in levels]


class OrderBookSerializer(serializers.Serializer):
    pair = serializers.CharField(source="market.pair")
    sequence = serializers.IntegerField(help_text="The book's sequence; the WebSocket deltas continue from it.")
    bids = BookLevelsField(help_text="Best (highest) first.")
    asks = BookLevelsField(help_text="Best (lowest) first.")


class OrderBookQuerySerializer(QuerySerializer):
    depth = IntegerString(
        required=False,
        default=100,
        help_text="Levels per side: 1-100 for everyone, up to 1,000 for a signed request from a verified account.",
    )


class TickerSerializer(serializers.Serializer):
    pair = serializers.CharField(source="market.pair")
    last_price = DecimalString(step_from=tick_size, allow_null=True)
    last_size = DecimalString(step_from=lot_size, allow_null=True)
    best_bid = DecimalString(step_from=tick_size, allow_null=True)
    best_ask = DecimalString(step_from=tick_size, allow_null=True)
    open_24h = DecimalString(step_from=tick_size, allow_null=True)
    high_24h = DecimalString(step_from=tick_size, allow_null=True)
    low_24h = DecimalString(step_from=tick_size, allow_null=True)
    change_24h = DecimalString(step_from=tick_size, allow_null=True, help_text="last_price - open_24h; may be negative.")
    change_24h_pct = DecimalString(step_from=percent_places, allow_null=True, help_text="Percent, two places; may be negative.")
    volume_24h = DecimalString(step_from=lot_size, help_text="Base traded in the last 24 hours.")
    quote_volume_24h = DecimalString(step_from=quote_step, help_text="Quote traded in the last 24 hours.")
    market_cap = DecimalString(step_from=quote_precision, allow_null=True, help_text="Base circulating supply × last price, in quote.")
    time = serializers.IntegerField()


class TradeSerializer(serializers.ModelSerializer):
    trade_id = serializers.IntegerField(source="id")
    price = DecimalString(step_from=tick_size)
    size = DecimalString(step_from=lot_size)
    time = MillisecondsField(source="executed_at")

    class Meta:
        model = Trade
        fields = ["trade_id", "price", "size", "taker_side", "time"]


class TradesQuerySerializer(TimeWindowQuery):
    limit = IntegerString(required=False, default=100, min_value=1, max_value=MAX_PAGE_SIZE)
    before = IntegerString(
        required=False, min_value=1, help_text="Only trades with a smaller trade_id (page backwards)."
    )


class TradesSerializer(serializers.Serializer):
    pair = serializers.CharField(source="market.pair")
    trades = TradeSerializer(many=True, help_text="Newest first.")
