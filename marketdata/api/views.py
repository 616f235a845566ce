"""Public market data: parse, call one service, render."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.services import default_rate_tier
from exchange.errors import ErrorCode
from exchange.fields import PAIR_PATTERN, parse_integer, to_milliseconds
from exchange.openapi import error_responses
from marketdata import candles, services
from marketdata.api import serializers
from trading.markets import access_market
from trading.models import Market

PAIR_PARAMETER = OpenApiParameter("pair", str, OpenApiParameter.PATH, pattern=PAIR_PATTERN,
                                  description="BASE-QUOTE in any case, e.g. BTC-USD.")


def is_verified_caller(request) -> bool:
    return isinstance(request.auth, ApiKey) and request.auth.account.verified


class TimeView(APIView):
    @extend_schema(operation_id="getTime", summary="Server time", responses={200: serializers.TimeSerializer})
    def get(self, request):
        return Response({"time": to_milliseconds(timezone.now())})


class MarketViewSet(viewsets.ViewSet):
    @extend_schema(operation_id="listMarkets", summary="All trading pairs",
                   responses={200: serializers.MarketSerializer(many=True)})
    def list(self, request):
        markets = Market.objects.with_assets().order_by("pair")
        fee_tier = default_rate_tier()
        return Response(serializers.MarketSerializer(markets, many=True, context={"fee_tier": fee_tier}).data)


class TickerViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"

    @extend_schema(
        operation_id="getTicker",
        summary="Last trade, best bid/ask and 24-hour statistics",
        parameters=[PAIR_PARAMETER],
        responses={200: serializers.TickerSerializer, **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def retrieve(self, request, pair: str):
        return Response(serializers.ticker_data(services.ticker(access_market(pair))))


class TickersView(APIView):
    rate_weight = 2

    @extend_schema(
        operation_id="listTickers",
        summary="Every pair's ticker",
        description="The tickers of all pairs in one call, by pair, with the fields of `GET /v1/ticker/{pair}`.",
        responses={200: serializers.TickerSerializer(many=True)},
    )
    def get(self, request):
        return Response([serializers.ticker_data(ticker) for ticker in services.tickers(Market.objects.all())])


class OrderBookViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"
    rate_weight_description = "1 up to depth 100, 5 up to 500, 10 above"
    rate_weight_max = 10
    query_serializer = serializers.OrderBookQuerySerializer

    def get_rate_weight(self, request) -> int:
        depth = parse_integer(request.query_params.get("depth", "")) or services.DEFAULT_DEPTH
        return 1 if depth <= 100 else 5 if depth <= 500 else 10

    @extend_schema(
        operation_id="getOrderBook",
        summary="Aggregated order book",
        parameters=[PAIR_PARAMETER, serializers.OrderBookQuerySerializer],
        responses={
            200: serializers.OrderBookSerializer,
            **error_responses(ErrorCode.UNKNOWN_PAIR, ErrorCode.DEPTH_REQUIRES_VERIFICATION),
        },
    )
    def retrieve(self, request, pair: str):
        query = serializers.OrderBookQuerySerializer.parse(request)
        market = access_market(pair)
        depth = services.check_depth(query["depth"], verified=is_verified_caller(request))
        book = services.order_book(market, depth)
        return Response(
            serializers.OrderBookSerializer(
                {"market": market, "sequence": book.sequence, "timestamp": book.timestamp, "bids": book.bids,
                 "asks": book.asks},
                context={"market": market},
            ).data
        )


class TradeViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"
    query_serializer = serializers.TradesQuerySerializer

    @extend_schema(
        operation_id="listTrades",
        summary="Recent public trades",
        parameters=[PAIR_PARAMETER, serializers.TradesQuerySerializer],
        responses={200: serializers.TradesSerializer, **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def retrieve(self, request, pair: str):
        query = serializers.TradesQuerySerializer.parse(request)
        market = access_market(pair)
        trades = services.recent_trades(market, **query)
        return Response(
            serializers.TradesSerializer({"market": market, "trades": trades}, context={"market": market}).data
        )


class CandleViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"
    rate_weight_description = ("by the minutes a page spans (limit × interval): 1 up to 1,440, 2 up to 14,400, "
                               "5 up to 144,000, 10 above")
    rate_weight_max = 10
    query_serializer = serializers.CandleQuerySerializer

    def get_rate_weight(self, request) -> int:
        # From the query as sent; a query refused later costs what its values would (defaults for bad ones).
        limit = parse_integer(request.query_params.get("limit", "")) or candles.DEFAULT_LIMIT
        seconds = candles.INTERVALS.get(request.query_params.get("interval"), 60)
        minutes = min(limit, candles.MAX_LIMIT) * seconds // 60
        return 1 if minutes <= 1_440 else 2 if minutes <= 14_400 else 5 if minutes <= 144_000 else 10

    @extend_schema(
        operation_id="listCandles",
        summary="Candles (open, high, low, close, volume)",
        description=(
            "Rows `[time, open, high, low, close, volume, quote_volume, trade_count]`, oldest first. `time` is the "
            "start of the interval (ms); intervals are aligned to the Unix epoch in UTC (days start at 00:00 UTC). "
            "An interval without trades has no row: fill a gap with the previous close. A page covers at most "
            "`limit` intervals: from `start` when given, else those up to `end` (default: up to the current "
            "interval, which is included while it runs); the next page starts at this one's start plus "
            "`limit` intervals."
        ),
        parameters=[PAIR_PARAMETER, serializers.CandleQuerySerializer],
        responses={200: {"type": "array", "items": serializers.CANDLE_ROW_SCHEMA},
                   **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def retrieve(self, request, pair: str):
        query = serializers.CandleQuerySerializer.parse(request)
        market = access_market(pair)
        page = candles.candles(market, **query, now_ms=to_milliseconds(timezone.now()))
        return Response([serializers.candle_row(market, candle) for candle in page])


class AssetViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="listAssets",
        summary="All assets",
        description="Each asset's symbol, name and precision, whether deposits and withdrawals are open, and the "
                    "withdrawal fee and minimum (an asset operators set nothing for: both open, no fee, no minimum).",
        responses={200: serializers.AssetSerializer(many=True)},
    )
    def list(self, request):
        return Response(serializers.AssetSerializer(services.assets(), many=True).data)
