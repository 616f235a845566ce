"""Public market data: parse, call one service, render."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.services import default_rate_tier
from exchange.errors import ErrorCode
from exchange.fields import parse_integer, to_milliseconds
from exchange.openapi import error_responses
from marketdata import services
from marketdata.api import serializers
from trading.markets import access_market
from trading.models import Market

PAIR_PARAMETER = OpenApiParameter("pair", str, OpenApiParameter.PATH, description="BASE-QUOTE, e.g. BTC-USD.")


def is_verified_caller(request) -> bool:
    return isinstance(request.auth, ApiKey) and request.auth.account.verified


class TimeView(APIView):
    @extend_schema(summary="Server time", responses={200: serializers.TimeSerializer, **error_responses()})
    def get(self, request):
        return Response({"time": to_milliseconds(timezone.now())})


class MarketViewSet(viewsets.ViewSet):
    @extend_schema(
        summary="All trading pairs", responses={200: serializers.MarketSerializer(many=True), **error_responses()}
    )
    def list(self, request):
        markets = Market.objects.with_assets().order_by("pair")
        fee_tier = default_rate_tier()
        return Response(serializers.MarketSerializer(markets, many=True, context={"fee_tier": fee_tier}).data)


class TickerViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"

    @extend_schema(
        summary="Last trade, best bid/ask and 24-hour statistics",
        parameters=[PAIR_PARAMETER],
        responses={200: serializers.TickerSerializer, **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def retrieve(self, request, pair: str):
        market = access_market(pair)
        ticker = services.ticker(market)
        data = {
            "market": market,
            "time": to_milliseconds(timezone.now()),
            **{name: getattr(ticker, name) for name in serializers.TickerSerializer().fields if hasattr(ticker, name)},
        }
        return Response(serializers.TickerSerializer(data, context={"market": market}).data)


class OrderBookViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"
    rate_weight_description = "1 up to depth 100, 5 up to 500, 10 above"
    query_serializer = serializers.OrderBookQuerySerializer

    def get_rate_weight(self, request) -> int:
        depth = parse_integer(request.query_params.get("depth", "")) or services.DEFAULT_DEPTH
        return 1 if depth <= 100 else 5 if depth <= 500 else 10

    @extend_schema(
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
                {"market": market, "sequence": book.sequence, "bids": book.bids, "asks": book.asks},
                context={"market": market},
            ).data
        )


class TradeViewSet(viewsets.ViewSet):
    lookup_field = "pair"
    lookup_value_regex = "[^/]+"
    query_serializer = serializers.TradesQuerySerializer

    @extend_schema(
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
