"""Strict query strings (SPEC section 10): every /v1/ operation takes the query parameters it documents and
refuses anything else with 400 INVALID_PARAMETER naming it; the lists' time windows."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import resolve
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from exchange.fields import EPOCH, to_milliseconds
from exchange.queries import declared_query, parameter_names
from trading.models import Fill, MatcherCommand, Order, Trade

from .conftest import ledger_snapshot
from .test_public_api import assert_error

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PAGED_LISTS = ["/v1/orders", "/v1/fills", "/v1/account/deposits", "/v1/account/transfers", "/v1/account/ledger",
               "/v1/withdrawals", "/v1/earn/subscriptions"]
EXAMPLE_PATH_VALUES = {"pair": "BTC-USD", "id": "1"}


def operations() -> list[tuple[str, str, set[str]]]:
    """Every /v1/ operation of the OpenAPI document: (method, path with example values, query parameters)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for template, methods in schema["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda match: EXAMPLE_PATH_VALUES[match.group(1)], template)
        for method, operation in methods.items():
            query = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"}
            found.append((method.upper(), path, query))
    return found


def refused(response, parameter: str) -> None:
    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": parameter}, response.json()


def written():
    return ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count()


def test_each_operation_takes_exactly_the_query_parameters_it_documents(markets):
    for method, path, documented in operations():
        match = resolve(path)
        assert parameter_names(declared_query(match.func, method.lower())) == documented, (method, path)


def test_every_operation_refuses_a_parameter_it_does_not_take_and_writes_nothing(markets):
    before = written()

    for method, path, _ in operations():
        response = Client().generic(method, f"{path}?colour=red", "{}", content_type="application/json")

        refused(response, "colour")
        assert "it takes" in response.json()["error"]["message"]
    assert written() == before


@pytest.mark.parametrize("query, parameter", [
    ("limit=5&limit=6", "limit"), ("pair=", "pair"), ("pair=BTC-USD&status=", "status"), ("status", "status"),
    ("limit=0", "limit"), ("limit=1001", "limit"), ("cursor=bm9wZQ", "cursor"), ("cursor=", "cursor"),
    # base64 of "x=1", "hello", three NUL bytes, "o=1&o=2": no cursor DRF's encode_cursor writes
    ("cursor=eD0x", "cursor"), ("cursor=aGVsbG8%3D", "cursor"), ("cursor=AAAA", "cursor"),
    ("cursor=bz0xJm89Mg%3D%3D", "cursor"),
    ("start_time=x", "start_time"), ("start_time=5&end_time=4", "end_time"), ("end_time=253402300800000", "end_time"),
])
def test_a_repeated_empty_or_out_of_range_parameter_is_refused_naming_it(as_trader, alice, query, parameter):
    refused(as_trader(alice).get(f"/v1/orders?{query}"), parameter)


@pytest.mark.parametrize("path", PAGED_LISTS)
@pytest.mark.parametrize("query, parameter", [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=", "limit"),
                                              ("cursor=x", "cursor"), ("limit=1&limit=1", "limit"),
                                              ("start_time=-1", "start_time")])
def test_every_paged_list_refuses_a_bad_page_or_window(as_trader, alice, path, query, parameter):
    refused(as_trader(alice).get(f"{path}?{query}"), parameter)


@pytest.mark.parametrize("query, parameter", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=1&limit=2", "limit"), ("before=", "before"),
    ("start_time=9&end_time=1", "end_time"), ("cursor=x", "cursor"),
])
def test_public_trades_refuse_bad_parameters(markets, query, parameter):
    refused(Client().get(f"/v1/trades/BTC-USD?{query}"), parameter)


def test_an_operation_without_parameters_refuses_any(markets):
    refused(Client().get("/v1/markets?format=json"), "format")  # DRF would take it as a renderer choice
    refused(Client().get("/v1/time?x"), "x")
    assert Client().get("/v1/markets").status_code == 200


def test_a_signed_request_with_a_bad_query_is_refused_before_its_signature_and_keeps_its_nonce(alice, make_key):
    bot = make_key(alice)

    refused(bot.get("/v1/orders?colour=red", nonce="nonce-kept-1"), "colour")
    response = bot.get("/v1/orders?pair=BTC-USD", nonce="nonce-kept-1")

    assert response.status_code == 200, response.content


def test_a_bad_query_is_refused_before_authentication(markets):
    refused(Client().get("/v1/orders?colour=red"), "colour")
    assert_error(Client().get("/v1/orders?limit=5"), 401, "MISSING_AUTH_HEADERS")


def at(ms: int):
    return EPOCH + timedelta(milliseconds=ms)


@pytest.fixture
def timed(alice, bob, trade):
    """Three trades between alice (maker) and bob, their orders and fills at 1,000, 2,000 and 3,000 ms."""
    for n, when in enumerate((1000, 2000, 3000)):
        maker = trade(alice, side="sell", type="limit", price=Decimal("60000") + n, size=Decimal("0.01"))
        taker = trade(bob, side="buy", type="market", size=Decimal("0.01"))
        assert taker.status == Order.Status.FILLED
        Order.objects.filter(pk__in=[maker.pk, taker.pk]).update(created_at=at(when))
        Fill.objects.filter(order__in=[maker, taker]).update(executed_at=at(when))
        Trade.objects.filter(taker_order=taker).update(executed_at=at(when))
    return alice, bob


def times(rows, field: str) -> list[int]:
    return [row[field] for row in rows]


@pytest.mark.parametrize("query, expected", [
    ("start_time=2000", [3000, 2000]), ("end_time=2000", [1000]), ("start_time=1000&end_time=3000", [2000, 1000]),
    ("start_time=3001", []), ("start_time=2000&end_time=2000", []),
    ("start_time=0&end_time=253402300799999", [3000, 2000, 1000]),  # the first and last instants a window may name
])
def test_orders_fills_and_trades_take_a_time_window(timed, as_trader, query, expected):
    alice, _ = timed
    client = as_trader(alice)

    orders = client.get(f"/v1/orders?{query}").json()["results"]
    fills = client.get(f"/v1/fills?{query}").json()["results"]
    trades = Client().get(f"/v1/trades/BTC-USD?{query}").json()["trades"]

    assert times(orders, "created_at") == expected
    assert times(fills, "time") == expected
    assert times(trades, "time") == expected


def test_a_time_window_pages_and_combines_with_the_other_filters(timed, as_trader):
    alice, _ = timed
    client = as_trader(alice)

    first = client.get("/v1/orders?start_time=1000&limit=2&status=filled").json()
    rest = client.get(first["next"].removeprefix("http://testserver")).json()
    older = Client().get(f"/v1/trades/BTC-USD?end_time=3000&before={Trade.objects.order_by('-id')[1].pk}").json()

    assert times(first["results"], "created_at") == [3000, 2000]
    assert times(rest["results"], "created_at") == [1000] and rest["next"] is None
    assert times(older["trades"], "time") == [1000]


def test_a_next_link_keeps_the_window_it_was_made_with(timed, as_trader):
    alice, _ = timed
    client = as_trader(alice)

    first = client.get("/v1/fills?end_time=3000&limit=1").json()
    second = client.get(first["next"].removeprefix("http://testserver")).json()

    assert times(first["results"] + second["results"], "time") == [2000, 1000] and second["next"] is None


def test_a_trade_window_far_back_is_found_by_its_ends_not_by_a_walk(timed, django_assert_max_num_queries):
    """Trades have no time index: each end of a window is a binary search over the pair's trade ids."""
    trades = list(Trade.objects.order_by("pk"))
    for days_ago, row in zip(range(len(trades), 0, -1), trades):  # a day apart, the oldest first
        Trade.objects.filter(pk=row.pk).update(executed_at=timezone.now() - timedelta(days=days_ago))
    middle = trades[1]
    start = to_milliseconds(timezone.now() - timedelta(days=2, hours=1))
    end = to_milliseconds(timezone.now() - timedelta(days=1, hours=1))

    with django_assert_max_num_queries(20) as queries:
        listed = Client().get(f"/v1/trades/BTC-USD?start_time={start}&end_time={end}").json()["trades"]

    assert [trade["trade_id"] for trade in listed] == [middle.pk]
    page = next(query["sql"] for query in reversed(queries.captured_queries) if "LIMIT" in query["sql"])
    assert f'"trading_trade"."id" >= {middle.pk}' in page and f'"trading_trade"."id" < {trades[2].pk}' in page


@pytest.mark.parametrize("method", ["PUT", "DELETE", "TRACE", "PATCH"])
def test_a_method_the_path_does_not_take_is_405_whatever_its_query(alice, make_key, method):
    bot = make_key(alice)
    for path, query in [("/v1/account/transfers", "asset=ETH&start_time=0"), ("/v1/orders/1", "colour=red"),
                        ("/v1/trades/BTC-USD", "limit=5")]:
        response = bot.request(method, f"{path}?{query}")

        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert "GET" in response["Allow"]


def test_a_query_serializer_used_again_keeps_nothing_of_the_query_before():
    """Each thread checks its queries with one serializer of each kind (exchange/queries.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from exchange.errors import InvalidParameter
    from marketdata.api.serializers import OrderBookQuerySerializer as Query

    def query(string: str) -> Request:
        return Request(APIRequestFactory().get(f"/v1/orderbook/BTC-USD?{string}"))

    with pytest.raises(InvalidParameter) as refused:
        Query.parse(query("depth=0"))
    seven = Query.parse(query("depth=7"))
    default = Query.parse(query(""))
    with pytest.raises(InvalidParameter):
        Query.parse(query("depth=x"))

    assert refused.value.details == {"parameter": "depth"}
    assert (seven, default) == ({"depth": 7}, {"depth": 100})  # a later check changes no earlier result
    with ThreadPoolExecutor(1) as other_thread:
        assert other_thread.submit(Query.of_this_thread).result() is not Query.of_this_thread()
