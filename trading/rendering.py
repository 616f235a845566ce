"""Orders and fills as the API renders them, read in one query each: for the private streams, once per
batch by the publisher (marketdata.publishing) or, where it did not, by a connection itself."""

from trading.api.serializers import FillSerializer, OrderSerializer
from trading.models import Fill, Order


def render_orders(order_ids: list[int], account_id: int | None = None) -> list[dict]:
    """The orders, in id order; only the account's when ``account_id`` is given."""
    orders = Order.objects.filter(pk__in=order_ids)
    if account_id is not None:
        orders = orders.filter(account_id=account_id)
    return list(OrderSerializer(orders.for_rendering().order_by("pk"), many=True).data)


def render_fills(fill_ids: list[int], account_id: int | None = None) -> list[dict]:
    """The fills, in id order; only the account's when ``account_id`` is given."""
    fills = Fill.objects.filter(pk__in=fill_ids)
    if account_id is not None:
        fills = fills.filter(account_id=account_id)
    return list(FillSerializer(fills.for_rendering().order_by("pk"), many=True).data)
