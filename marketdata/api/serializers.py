from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exchange.fields import DECIMAL_OUTPUT_PATTERN, LAST_MILLISECOND, DecimalString, IntegerString, MillisecondsField
from exchange.money import format_amount
from exchange.queries import MAX_PAGE_SIZE, QuerySerializer, TimeWindowQuery, sort_order
from marketdata import candles, services
from trading.api.serializers import FeeRate, format_rate
from trading.models import Market, Trade
from wallets.api.ledger import at_asset_precision


def tick_size(context):
    return context["market"].tick_size


def lot_size(context):
    return context["market"].lot_size


def quote_step(context):
    market = context["market"]
    return market.tick_size * market.lot_size


def quote_precision(context):
    return Decimal(1).scaleb(-context["market"].quote.precision)


PERCENT_PLACES = Decimal("0.01")


def percent_places(context):
    return PERCENT_PLACES


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
        return [[format_amount(price, market.tick_size), format_amount(size, market.lot_size)]
                for price, size in levels]


class OrderBookSerializer(serializers.Serializer):
    pair = serializers.CharField(source="market.pair")
    sequence = serializers.IntegerField(help_text="The book's sequence; the WebSocket deltas continue from it.")
    timestamp = serializers.IntegerField(help_text="Server time of the snapshot, ms since the Unix epoch.")
    bids = BookLevelsField(help_text="Best (highest) first.")
    asks = BookLevelsField(help_text="Best (lowest) first.")


class OrderBookQuerySerializer(QuerySerializer):
    depth = IntegerString(
        required=False,
        default=100,
        min_value=1,
        max_value=services.VERIFIED_MAX_DEPTH,
        help_text="Levels per side: 1-100 for everyone, up to 1,000 for a signed request from a verified account.",
    )


# A ticker's fields and how each is written, for the OpenAPI document: ticker_data writes them.
class TickerSerializer(serializers.Serializer):
    pair = serializers.CharField()
    last_price = DecimalString(step_from=tick_size, allow_null=True)
    last_size = DecimalString(step_from=lot_size, allow_null=True)
    best_bid = DecimalString(step_from=tick_size, allow_null=True)
    best_bid_size = DecimalString(step_from=lot_size, allow_null=True, help_text="The size at the best bid.")
    best_ask = DecimalString(step_from=tick_size, allow_null=True)
    best_ask_size = DecimalString(step_from=lot_size, allow_null=True, help_text="The size at the best ask.")
    open_24h = DecimalString(step_from=tick_size, allow_null=True)
    high_24h = DecimalString(step_from=tick_size, allow_null=True)
    low_24h = DecimalString(step_from=tick_size, allow_null=True)
    change_24h = DecimalString(step_from=tick_size, allow_null=True, signed=True,
                               help_text="last_price - open_24h; may be negative.")
    change_24h_pct = DecimalString(step_from=percent_places, allow_null=True, signed=True,
                                   help_text="Percent, two places; may be negative.")
    volume_24h = DecimalString(step_from=lot_size, help_text="Base traded in the last 24 hours.")
    quote_volume_24h = DecimalString(step_from=quote_step, help_text="Quote traded in the last 24 hours.")
    market_cap = DecimalString(step_from=quote_precision, allow_null=True,
                               help_text="Base circulating supply × last price, in quote.")
    time = serializers.IntegerField(help_text="Server time when it was read, ms since the Unix epoch.")


def ticker_data(ticker: services.Ticker) -> dict:
    """A ticker as the API and the ticker channel render it: what TickerSerializer renders with the ticker's
    market as its context, written without the serializer (the matcher's publisher renders a pair's ticker up
    to 4 times a second, and the serializer took longer than the read)."""
    tick, lot = ticker.tick_size, ticker.lot_size

    def amount(value: Decimal | None, step: Decimal) -> str | None:
        return None if value is None else format_amount(value, step)

    return {"pair": ticker.pair, "last_price": amount(ticker.last_price, tick), "last_size": amount(ticker.last_size, lot),
            "best_bid": amount(ticker.best_bid, tick), "best_bid_size": amount(ticker.best_bid_size, lot),
            "best_ask": amount(ticker.best_ask, tick), "best_ask_size": amount(ticker.best_ask_size, lot),
            "open_24h": amount(ticker.open_24h, tick), "high_24h": amount(ticker.high_24h, tick),
            "low_24h": amount(ticker.low_24h, tick), "change_24h": amount(ticker.change_24h, tick),
            "change_24h_pct": amount(ticker.change_24h_pct, PERCENT_PLACES),
            "volume_24h": format_amount(ticker.volume_24h, lot),
            "quote_volume_24h": format_amount(ticker.quote_volume_24h, tick * lot),
            "market_cap": amount(ticker.market_cap, Decimal(1).scaleb(-ticker.quote_precision)), "time": ticker.time}


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
    sort = sort_order()
    before = IntegerString(
        required=False, min_value=1, help_text="Only trades with a smaller trade_id (the next page of `sort=desc`)."
    )
    after = IntegerString(
        required=False, min_value=0, help_text="Only trades with a larger trade_id (the next page of `sort=asc`)."
    )


class TradesSerializer(serializers.Serializer):
    pair = serializers.CharField(source="market.pair")
    trades = TradeSerializer(many=True, help_text="Newest first; oldest first with `sort=asc`.")


class CandleQuerySerializer(QuerySerializer):
    interval = serializers.ChoiceField(choices=list(candles.INTERVALS), help_text="The candles' length.")
    start = IntegerString(required=False, min_value=0, max_value=LAST_MILLISECOND,
                          help_text="Candles from this time on (ms since the epoch): the page is the `limit` "
                                    "intervals from the first one starting at or after it.")
    end = IntegerString(required=False, min_value=0, max_value=LAST_MILLISECOND,
                        help_text="Candles starting before this time (ms), exclusive; without `start`, the page is "
                                  "the `limit` intervals before it. Default: the current interval included.")
    limit = IntegerString(required=False, default=candles.DEFAULT_LIMIT, min_value=1, max_value=candles.MAX_LIMIT,
                          help_text="How many intervals the page covers, hence the most candles it holds.")

    def validate(self, data):
        if "start" in data and "end" in data and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": ["Must not be before start."]})
        return data


def candle_row(market: Market, candle) -> list:
    """``[time_ms, open, high, low, close, volume, quote_volume, trade_count]``, amounts on the market's grids."""
    tick, lot = market.tick_size, market.lot_size
    prices = (format_amount(price, tick) for price in (candle.open, candle.high, candle.low, candle.close))
    return [candle.time, *prices, format_amount(candle.volume, lot), format_amount(candle.quote_volume, tick * lot),
            candle.trades]


CANDLE_ROW_SCHEMA = {
    "type": "array",
    "description": "[time, open, high, low, close, volume, quote_volume, trade_count]: the interval's start (ms), "
                   "prices as decimal strings on the tick, volume in base, quote_volume in quote (decimal strings), "
                   "and the number of trades.",
    "items": {"oneOf": [{"type": "integer", "format": "int64"},
                        {"type": "string", "format": "decimal", "pattern": DECIMAL_OUTPUT_PATTERN}]},
    "minItems": 8,
    "maxItems": 8,
    "example": [1714521600000, "63000.00", "63120.50", "62990.00", "63100.00", "12.50000000", "788125.0000000000", 421],
}


class AssetSerializer(serializers.Serializer):
    """An asset, and what operators set for its wallets: whether deposits and withdrawals are open, the
    withdrawal fee and minimum."""

    symbol = serializers.CharField(source="asset.symbol")
    name = serializers.CharField(source="asset.name")
    precision = serializers.IntegerField(source="asset.precision", help_text="Decimal places of its amounts.")
    deposit_enabled = serializers.BooleanField(help_text="Deposits are credited.")
    withdraw_enabled = serializers.BooleanField(help_text="New withdrawals are accepted.")
    withdraw_fee = serializers.SerializerMethodField(help_text="Charged on top of each withdrawal, in this asset.")
    withdraw_min = serializers.SerializerMethodField(help_text="The smallest amount a withdrawal may ask for, "
                                                               "before the fee (above zero in any case).")

    @extend_schema_field(DecimalString)
    def get_withdraw_fee(self, wallet_settings) -> str:
        return at_asset_precision(wallet_settings.withdraw_fee, wallet_settings.asset)

    @extend_schema_field(DecimalString)
    def get_withdraw_min(self, wallet_settings) -> str:
        return at_asset_precision(wallet_settings.withdraw_minimum, wallet_settings.asset)
