"""Order entry's hot path: the market copy each process keeps, and what an accepted order costs."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from exchange.errors import ErrorCode, ExchangeError
from trading.markets import access_market
from trading import services
from trading.models import LedgerEntry, Market, MatcherCommand, Order
from trading.orders import OrderRequest

from .conftest import balance_of, ledger_snapshot

pytestmark = pytest.mark.django_db

D = Decimal


def limit_buy(price="63000", size="0.01", **fields) -> OrderRequest:
    return OrderRequest("BTC-USD", "buy", "limit", price=D(price), size=D(size), **fields)


def nothing_written():
    return ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count()


def refused_code(account, request: OrderRequest) -> str:
    with pytest.raises(ExchangeError) as refused:
        services.place_order(account, request)
    return refused.value.code


def test_an_order_its_matcher_command_and_its_hold_take_one_statement_on_postgresql(alice):
    services.place_order(alice, limit_buy())  # the market is now in this process's memory

    with CaptureQueriesContext(connection) as queries:
        order, created = services.place_order(alice, limit_buy(price="62000"))

    statements = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    # SQLite: the order, its command, the hold's conditional update and its entries.
    assert len(statements) == (1 if connection.vendor == "postgresql" else 4)
    assert created and MatcherCommand.objects.filter(order=order, kind=MatcherCommand.Kind.NEW).exists()
    assert LedgerEntry.objects.filter(reference=f"order:{order.pk}").count() == 2
    assert balance_of(alice, "USD").locked == D("630") + D("620")


@pytest.mark.parametrize("status", [Market.Status.HALTED, Market.Status.CANCEL_ONLY])
def test_a_market_halted_after_this_process_read_it_refuses_the_next_order(alice, btc_usd, status):
    services.place_order(alice, limit_buy())
    services.set_market_status(btc_usd.pk, status)  # as the admin action does, from any process
    assert access_market("BTC-USD", recent=True).status == Market.Status.ONLINE  # this process's copy is stale
    before = nothing_written()

    assert refused_code(alice, limit_buy(price="62000")) == ErrorCode.MARKET_HALTED
    assert nothing_written() == before


def test_a_market_resumed_after_this_process_read_it_halted_accepts_the_next_order(alice, btc_usd):
    services.set_market_status(btc_usd.pk, Market.Status.HALTED)
    assert refused_code(alice, limit_buy()) == ErrorCode.MARKET_HALTED
    services.set_market_status(btc_usd.pk, Market.Status.ONLINE)
    assert access_market("BTC-USD", recent=True).status == Market.Status.HALTED

    order, created = services.place_order(alice, limit_buy())

    assert created and order.status == Order.Status.PENDING
    assert balance_of(alice, "USD").locked == D("630")


def test_grids_changed_after_this_process_read_the_market_apply_to_the_next_order(alice, btc_usd):
    services.place_order(alice, limit_buy())
    Market.objects.filter(pk=btc_usd.pk).update(tick_size=D("1"))  # an operator's edit in the admin
    before = nothing_written()

    with pytest.raises(ExchangeError) as refused:
        services.place_order(alice, limit_buy(price="62000.50"))

    assert refused.value.code == ErrorCode.INVALID_REQUEST and "price" in refused.value.details["fields"]
    assert nothing_written() == before


def test_a_retry_gets_the_first_order_even_when_the_request_would_now_be_refused(alice, btc_usd):
    first, _ = services.place_order(alice, limit_buy(size="1", client_order_id="bot-1"))
    services.place_order(alice, limit_buy(size="0.5"))  # 100,000 - 63,000 - 31,500 USD left: not enough for 1 BTC
    assert refused_code(alice, limit_buy(size="1")) == ErrorCode.INSUFFICIENT_FUNDS

    poor_retry, poor_created = services.place_order(alice, limit_buy(size="1", client_order_id="bot-1"))
    services.set_market_status(btc_usd.pk, Market.Status.HALTED)
    halted_retry, halted_created = services.place_order(alice, limit_buy(size="1", client_order_id="bot-1"))

    assert (poor_retry.pk, poor_created) == (first.pk, False)
    assert (halted_retry.pk, halted_created) == (first.pk, False)
    assert refused_code(alice, limit_buy(size="2", client_order_id="bot-1")) == ErrorCode.DUPLICATE_CLIENT_ORDER_ID


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_order_statement_prepared_on_a_connection_outlives_a_rollback_and_is_prepared_again_on_a_new_one(alice):
    first, _ = services.place_order(alice, limit_buy())
    assert refused_code(alice, limit_buy(size="1000")) == ErrorCode.INSUFFICIENT_FUNDS  # rolled back
    second, _ = services.place_order(alice, limit_buy(price="62000"))
    connection.close()
    third, _ = services.place_order(alice, limit_buy(price="61000"))

    orders = [first.pk, second.pk, third.pk]
    if connection.vendor == "postgresql":  # prepared by the server: the new connection ran it once
        with connection.cursor() as cursor:
            cursor.execute("SELECT generic_plans + custom_plans FROM pg_prepared_statements "
                           "WHERE statement LIKE 'WITH placed AS (INSERT INTO trading_order %%'")
            assert cursor.fetchall() == [(1,)]
    assert Order.objects.filter(pk__in=orders).count() == 3
    assert LedgerEntry.objects.filter(reference__in=[f"order:{pk}" for pk in orders]).count() == 6
    assert balance_of(alice, "USD").locked == D("630") + D("620") + D("610")
