"""Private trading endpoints: parse, call one service, render."""

from base64 import b64decode
from urllib.parse import parse_qs

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import CanRead, CanTrade
from accounts.services import account_of
from exchange.errors import ErrorCode, InvalidParameter
from exchange.fields import parse_integer
from exchange.openapi import error_responses
from exchange.queries import PageQuery, time_lookups
from trading import fees, services
from trading.api import serializers
from trading.markets import access_market
from trading.models import Fill, Order

ORDER_ID_PARAMETER = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, pattern=r"^(?:[1-9][0-9]{0,17}|client:[A-Za-z0-9_-]{1,64})$",
    description="The order id, or `client:<client_order_id>`.",
)


class HasTradingAccount(BasePermission):
    def has_permission(self, request, view) -> bool:
        return account_of(request.user) is not None


CURSOR_TOKENS = {"o", "r", "p"}  # what DRF's encode_cursor writes: offset, reverse, position


class IdCursorPagination(CursorPagination):
    """DRF's cursor pagination by id, newest first or, with ``sort=asc``, oldest first; strict: a bad
    ``limit`` is refused (DRF falls back to the default silently) and so is a cursor not made by
    ``encode_cursor`` (DRF's decoder takes "٣" for 3 and passes a position such as "x" on to the query),
    each with INVALID_PARAMETER. A list's query serializer is a PageQuery, which declares them."""

    page_size_query_param = "limit"

    def get_page_size(self, request) -> int:
        self.page_query = PageQuery.parse(request)  # read once (DRF asks for the size, then the ordering)
        return self.page_query["limit"]

    def get_ordering(self, request, queryset, view) -> tuple[str]:
        return ("id",) if self.page_query["sort"] == "asc" else ("-id",)

    def decode_cursor(self, request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            tokens = parse_qs(b64decode(encoded.encode("ascii"), validate=True).decode("ascii"), keep_blank_values=True)
        except ValueError:  # not base64 of ASCII text (binascii.Error and UnicodeError are ValueErrors)
            tokens = {"o": [""]}  # refused below, as any other malformed cursor
        if not tokens.keys() <= CURSOR_TOKENS or any(len(values) > 1 for values in tokens.values()):
            tokens = {"o": [""]}  # another field, or one twice: not encode_cursor's
        offset = parse_integer(tokens.get("o", ["0"])[0])
        reverse = tokens.get("r", ["0"])[0]
        position = tokens.get("p", [None])[0]
        if offset is None or offset > self.offset_cutoff or reverse not in ("0", "1") or (
            position is not None and parse_integer(position) is None
        ):
            raise InvalidParameter(self.cursor_query_param, "Not this list's cursor: follow the `next` link as given.")
        return Cursor(offset=offset, reverse=reverse == "1", position=position)

    def get_paginated_response_schema(self, schema):
        def link(which: str) -> dict:
            return {"type": "string", "nullable": True, "format": "uri",
                    "description": f"The {which} page, with this page's filters; null: none.",
                    "example": "https://api.example.com/v1/orders?cursor=cD0xMjM0NQ%3D%3D&status=open"}

        return {"type": "object", "required": ["next", "previous", "results"],
                "properties": {"next": link("next (older; newer with `sort=asc`)"),
                               "previous": link("previous (newer; older with `sort=asc`)"), "results": schema}}


class AccountViewMixin:
    permission_classes = [HasTradingAccount, CanRead]

    @property
    def account(self):
        return self.request.user.account

    def filtered_page(self, query_serializer, rows, lookups: dict[str, str]) -> Response:
        """A page of ``rows`` narrowed by the query: to its pair, and by each other field given, with
        the lookup ``lookups`` names for it."""
        given = query_serializer.parse(self.request)
        if "pair" in given:
            rows = rows.filter(market=access_market(given["pair"]))
        rows = rows.filter(**{lookup: given[name] for name, lookup in lookups.items() if name in given})
        return self.get_paginated_response(self.get_serializer(self.paginate_queryset(rows), many=True).data)


class OrderViewSet(AccountViewMixin, viewsets.GenericViewSet):
    # ORDER_ID_PARAMETER's pattern: an id with a leading zero or past 18 digits names no order (it is no endpoint).
    lookup_value_regex = r"[1-9][0-9]{0,17}|client:[A-Za-z0-9_-]{1,64}"
    pagination_class = IdCursorPagination
    serializer_class = serializers.OrderSerializer
    rate_weight = {"create": 1, "retrieve": 1, "cancel": 1, "list": 5, "cancel_all": 10}
    response_links = {name: {"getOrder": {"id": "$response.body#/order_id"},
                             "cancelOrder": {"id": "$response.body#/order_id"}}
                      for name in ("createOrder", "getOrder", "cancelOrder")}
    query_serializer = {"list": serializers.OrderListQuerySerializer}

    def get_permissions(self):
        if self.action in ("create", "cancel", "cancel_all"):
            return [HasTradingAccount(), CanTrade()]
        return super().get_permissions()

    def get_queryset(self):
        return Order.objects.filter(account=self.account).for_rendering()

    def access(self, lookup: str, **kwargs) -> Order:
        if lookup.startswith("client:"):
            return services.access_order_by_client_id(self.account, lookup.removeprefix("client:"))
        return services.access_order(self.account, int(lookup), **kwargs)

    def render(self, order: Order, http_status=status.HTTP_200_OK) -> Response:
        return Response(serializers.OrderSerializer.render(order), status=http_status)

    @extend_schema(
        operation_id="createOrder",
        summary="Create an order",
        request=serializers.OrderCreateSerializer,
        responses={
            201: OpenApiResponse(serializers.OrderSerializer, description="Accepted; the state after matching when "
                                 "the matcher answered within 1 s, else (or when an outage hides its answer) "
                                 "`pending`."),
            200: OpenApiResponse(serializers.OrderSerializer,
                                 description="A retry: the order this client_order_id made."),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.UNKNOWN_PAIR, ErrorCode.INSUFFICIENT_FUNDS,
                              ErrorCode.MARKET_HALTED,
                              ErrorCode.DUPLICATE_CLIENT_ORDER_ID, ErrorCode.POST_ONLY_WOULD_TAKE,
                              ErrorCode.SERVICE_UNAVAILABLE),
        },
    )
    def create(self, request):
        order, created = services.place_order_and_wait(self.account, serializers.parse_order(request.data))
        return self.render(order, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="getOrder",
        summary="Fetch an order",
        parameters=[ORDER_ID_PARAMETER],
        responses={200: serializers.OrderSerializer, **error_responses(ErrorCode.ORDER_NOT_FOUND)},
    )
    def retrieve(self, request, pk: str):
        return self.render(self.access(pk))

    @extend_schema(
        operation_id="listOrders",
        summary="List orders, newest or oldest first",
        parameters=[serializers.OrderListQuerySerializer],
        responses={200: serializers.OrderSerializer(many=True), **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def list(self, request):
        return self.filtered_page(serializers.OrderListQuerySerializer, self.get_queryset(),
                                  {"status": "status__in", **time_lookups("created_at")})

    @extend_schema(
        operation_id="cancelOrder",
        summary="Cancel an order (idempotent)",
        parameters=[ORDER_ID_PARAMETER],
        request=None,
        responses={
            200: OpenApiResponse(serializers.OrderSerializer, description="Cancelled (also when repeated)."),
            202: OpenApiResponse(serializers.OrderSerializer, description="Cancel queued; the matcher has not "
                                 "answered within 1 s. `cancel_requested` is true; poll the order."),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.ORDER_NOT_FOUND, ErrorCode.ORDER_ALREADY_CLOSED,
                              ErrorCode.MARKET_HALTED, ErrorCode.SERVICE_UNAVAILABLE),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        order = services.cancel_and_wait(self.account, self.access(pk).pk)
        return self.render(order, status.HTTP_200_OK if not order.is_live else status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="cancelAllOrders",
        summary="Cancel all live orders, optionally of one pair",
        request=serializers.CancelAllSerializer,
        responses={202: serializers.CancelAllResultSerializer,
                   **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.UNKNOWN_PAIR, ErrorCode.MARKET_HALTED)},
    )
    @action(detail=False, methods=["post"], url_path="cancel-all")
    def cancel_all(self, request):
        form = serializers.CancelAllSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        orders = services.cancel_all_and_wait(self.account, form.validated_data.get("pair"))
        return Response({"orders": serializers.OrderSerializer(orders, many=True).data},
                        status=status.HTTP_202_ACCEPTED)


class FillViewSet(AccountViewMixin, viewsets.GenericViewSet):
    pagination_class = IdCursorPagination
    rate_weight = 5
    serializer_class = serializers.FillSerializer
    query_serializer = serializers.FillListQuerySerializer

    @extend_schema(
        operation_id="listFills",
        summary="Your fills, newest or oldest first",
        parameters=[serializers.FillListQuerySerializer],
        responses={200: serializers.FillSerializer(many=True), **error_responses(ErrorCode.UNKNOWN_PAIR)},
    )
    def list(self, request):
        return self.filtered_page(serializers.FillListQuerySerializer,
                                  Fill.objects.filter(account=self.account).for_rendering(),
                                  {"order_id": "order_id", **time_lookups("executed_at")})


class BalancesView(AccountViewMixin, APIView):
    rate_weight = 2

    @extend_schema(
        operation_id="getBalances",
        summary="Balances per asset: spot, margin and earn wallets",
        responses={200: serializers.BalancesSerializer},
    )
    def get(self, request):
        return Response(serializers.BalancesSerializer({"balances": services.account_balances(self.account)}).data)


class FeesView(AccountViewMixin, APIView):
    rate_weight = 1

    @extend_schema(
        operation_id="getAccountFees",
        summary="Your fee rates per market",
        description="The maker and taker rates of your fee tier, for every market. Operators may assign tiers by "
                    "30-day trading volume; a change of tier applies from the next request and the next trade.",
        responses={200: serializers.AccountFeesSerializer},
    )
    def get(self, request):
        tier = self.account.rate_tier
        return Response(serializers.AccountFeesSerializer({"tier": tier.name, "fees": fees.market_fees(tier)}).data)
