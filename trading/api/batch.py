"""Batch endpoints: orders placed and cancelled by the list (trading/batch.py). Parse, call one service,
render one result per item: the request is 200 whatever its items' outcomes, as Binance's batchOrders
and Kraken's AddOrderBatch answer, each item with the status its own request would have had."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import CanTrade
from exchange.errors import ErrorCode, InvalidFields
from exchange.jsonparse import StrictJSONError, loads_strict
from exchange.openapi import error_detail_schema, error_responses
from trading import batch
from trading.api import serializers
from trading.api.views import AccountViewMixin, HasTradingAccount

def batch_weight(request, key: str) -> int:
    """One per item of the body's list ``key``; 1 for a body that is refused as a whole. Read from the
    raw body: the weight is charged before DRF parses it (with a signed request's nonce)."""
    try:
        items = loads_strict(request._request.body).get(key)
    except (StrictJSONError, AttributeError):  # not JSON, or not an object
        return 1
    return len(items) if isinstance(items, list) and 1 <= len(items) <= batch.MAX_ITEMS else 1


def parse_order(item):
    """The order an item asks for, or its INVALID_REQUEST naming the fields at fault."""
    form = serializers.OrderCreateSerializer(data=item)
    if form.is_valid():
        return form.validated_data
    return InvalidFields(dict(form.errors))


def render(outcomes: list[batch.Outcome], ok_status) -> Response:
    results = [
        {"status": outcome.error.status, "error": {"code": outcome.error.code.value, "message": outcome.error.message,
                                                    "details": outcome.error.details}}
        if outcome.error else {"status": ok_status(outcome), "order": outcome.order}
        for outcome in outcomes
    ]
    return Response(serializers.BatchResultsSerializer({"results": results}).data)


def batch_results_schema(ok_statuses: list[int], item_codes: list[ErrorCode]) -> dict:
    """The answer of a batch: one result per item, an order (with the 2xx its request would have had) or an
    error (with its 4xx)."""
    error_statuses = sorted({code.status for code in item_codes})

    def status(statuses: list[int]) -> dict:
        return {"type": "integer", "enum": statuses,
                "description": "The HTTP status this item would have had as a request of its own."}

    done = {"type": "object", "required": ["status", "order"], "additionalProperties": False,
            "properties": {"status": status(ok_statuses), "order": {"$ref": "#/components/schemas/Order"}}}
    refused = {"type": "object", "required": ["status", "error"], "additionalProperties": False,
               "properties": {"status": status(error_statuses),
                              "error": error_detail_schema({code.value for code in item_codes})}}
    return {"type": "object", "required": ["results"], "properties": {"results": {
        "type": "array", "items": {"oneOf": [done, refused]}, "description": "One per item, in the order given."}}}


def batch_operation(operation_id: str, summary: str, description: str, request, ok_statuses: list[int],
                    item_codes: list[ErrorCode]):
    description += f" An item's error codes: {', '.join(code.value for code in item_codes)}."
    return extend_schema(operation_id=operation_id, summary=summary, description=description, request=request,
                         responses={200: OpenApiResponse(batch_results_schema(ok_statuses, item_codes),
                                                         description="One result per item."),
                                    **error_responses(ErrorCode.INSUFFICIENT_SCOPE)})


class BatchView(AccountViewMixin, APIView):
    permission_classes = [HasTradingAccount, CanTrade]
    rate_weight_per_item = True
    rate_weight_description = f"1 per item (1 to {batch.MAX_ITEMS})"
    item_keys: tuple[str, ...]

    def get_rate_weight(self, request) -> int:
        return max(batch_weight(request, key) for key in self.item_keys)


class OrderBatchView(BatchView):
    item_keys = ("orders",)

    @batch_operation(
        "createOrders", "Create up to 20 orders",
        "Each order as `POST /v1/orders` takes it, with the result that request would have had: "
        "`201` with the order, `200` with the order its `client_order_id` made before (a retry of "
        "the batch places nothing twice), or the error (a bad order is refused alone). The orders "
        "reach the matchers together, in the order given. The request is `200` whatever the items' "
        "outcomes; a body that is not a list of 1 to 20 is `400`.",
        serializers.OrderBatchSerializer, [200, 201],
        [ErrorCode.INVALID_REQUEST, ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.UNKNOWN_PAIR, ErrorCode.MARKET_HALTED,
         ErrorCode.DUPLICATE_CLIENT_ORDER_ID, ErrorCode.POST_ONLY_WOULD_TAKE],
    )
    def post(self, request):
        form = serializers.OrderBatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        items = [parse_order(item) for item in form.validated_data["orders"]]
        outcomes = batch.place_orders_and_wait(self.account, items)
        return render(outcomes, lambda outcome: status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)


class OrderCancelBatchView(BatchView):
    item_keys = ("order_ids", "client_order_ids")

    @batch_operation(
        "cancelOrders", "Cancel up to 20 orders (idempotent)",
        "By `order_ids` or by `client_order_ids`, each with the result `POST /v1/orders/{id}/cancel` "
        "would have had: `200` with the order cancelled (also when repeated), `202` with "
        "`cancel_requested` when its matcher has not answered within 1 s in all, or the error. The "
        "cancels reach the matchers together. The request is `200` whatever the items' outcomes.",
        serializers.OrderCancelBatchSerializer, [200, 202],
        [ErrorCode.ORDER_NOT_FOUND, ErrorCode.ORDER_ALREADY_CLOSED, ErrorCode.MARKET_HALTED],
    )
    def post(self, request):
        form = serializers.OrderCancelBatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        outcomes = batch.cancel_orders_and_wait(self.account, form.validated_data.get("order_ids", ()),
                                                form.validated_data.get("client_order_ids", ()))
        return render(outcomes, lambda outcome: status.HTTP_202_ACCEPTED if outcome.order.is_live
                      else status.HTTP_200_OK)
