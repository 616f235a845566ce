"""A backlog drained on PostgreSQL: batch N written on the matcher's writer thread while batch N+1 is
matched (trading.pipeline). Every command must be applied once, in queue order, as the
engine alone applies them, also when a write is refused halfway through the backlog."""

import random
from decimal import Decimal

import pytest
from django.db import connection

from exchange.errors import ExchangeError
from trading import dispatch, pipeline, services
from trading.backends import PostgresStore
from trading.engine_impl import engine
from trading.matcher import PairMatcher
from trading.settlement import ORDER_FIELDS, WorkingOrder
from trading.audit import audit
from trading.models import BookState, Market, MatcherCommand, Order, Trade
from trading.orders import OrderRequest

D = Decimal
FIRST, BATCH = 3, 7

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the writer thread runs on PostgreSQL only"),
]


@pytest.fixture
def backlog(monkeypatch, make_account, fund, btc_usd):
    """About 60 orders and cancels accepted while the matcher is down, drained in batches of 3, then 7."""
    monkeypatch.setattr(pipeline, "FIRST_BATCH_SIZE", FIRST)
    monkeypatch.setattr("trading.matcher.BATCH_SIZE", BATCH)
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)  # the matcher is down
    accounts = [make_account() for _ in range(3)]
    for account in accounts:
        fund(account, "USD", "1000000")
        fund(account, "BTC", "10")
    rng, placed = random.Random(7), []
    for _ in range(60):
        account = rng.choice(accounts)
        if placed and rng.random() < 0.15:
            order = rng.choice(placed)
            if order.account_id == account.pk:  # live, as nothing is matched: queued, or already cancelling
                assert services.request_cancel(account, order.pk).cancel_requested
            else:
                with pytest.raises(ExchangeError) as refused:
                    services.request_cancel(account, order.pk)
                assert refused.value.code == "ORDER_NOT_FOUND"
            continue
        side = rng.choice(["buy", "sell"])
        price = D(63000 + rng.randint(-20, 20) * 10)
        order, _ = services.place_order(account, OrderRequest(
            "BTC-USD", side, "limit", price=price, size=D(rng.randint(1, 40)) / 100))
        placed.append(order)
    return reference_trades(btc_usd)


def reference_trades(market) -> list[tuple]:
    """The queue through the engine alone: (maker, taker, price ticks, size lots) per trade."""
    matcher = PairMatcher(market.pair)
    matcher.load(BookState.objects.get_or_create(market=market)[0])
    book = engine.OrderBook(market.pair)
    trades = []
    for kind, *row in MatcherCommand.objects.filter(market=market).order_by("pk").values_list(
            "kind", *(f"order__{name}" for name in ORDER_FIELDS)):
        command = (matcher.engine_command(WorkingOrder(*row)) if kind == MatcherCommand.Kind.NEW
                   else engine.CancelOrder(row[0]))
        trades += [(event.maker_order_id, event.taker_order_id, event.price, event.size)
                   for event in book.apply(command) if type(event) is engine.Trade]
    assert len(trades) > BATCH  # the stream crosses enough to trade in several batches
    return trades


def committed_trades(market) -> list[tuple]:
    return [(maker, taker, int(price / market.tick_size), int(size / market.lot_size))
            for maker, taker, price, size in Trade.objects.order_by("pk").values_list(
                "maker_order", "taker_order", "price", "size")]


def after_the_third_batch_is_matched(monkeypatch, happen):
    """Run ``happen()`` once the matcher has matched its third batch: batch 1 is committed by then
    (the writer is at most two batches behind), batch 2 may be."""
    match, matched = PairMatcher.match, []

    def match_then(self, commands):
        batch = match(self, commands)
        matched.append(batch.number)
        if len(matched) == 3:
            happen()
        return batch

    monkeypatch.setattr(PairMatcher, "match", match_then)


def assert_drained(market, reference):
    assert committed_trades(market) == reference
    assert not MatcherCommand.objects.exists()
    assert not Order.objects.filter(status="pending").exists()
    assert audit() == []


def test_a_backlog_goes_through_the_writer_thread_exactly_as_through_the_engine(backlog, btc_usd):
    queued = MatcherCommand.objects.count()
    orders = set(MatcherCommand.objects.values_list("order", flat=True))
    matcher = dispatch.matcher_for("BTC-USD")

    results = matcher.drain()

    assert matcher.pipeline.executor is not None  # the backlog was written on the writer thread
    assert set().union(*(result.states for result in results)) == orders  # each one's state handed over
    assert BookState.objects.get(market=btc_usd).batches == len(results) == 1 + -(-(queued - FIRST) // BATCH)
    assert_drained(btc_usd, backlog)


def test_a_halt_during_a_backlog_stops_the_writes_and_the_rest_follows_after_the_resume(
        backlog, btc_usd, monkeypatch):
    after_the_third_batch_is_matched(
        monkeypatch, lambda: Market.objects.filter(pk=btc_usd.pk).update(status=Market.Status.HALTED))
    queued = MatcherCommand.objects.count()
    matcher = dispatch.matcher_for("BTC-USD")
    results = matcher.drain()

    # Batch 3 and those matched after it found the market halted; batch 2 committed first or not,
    # as the writer thread's pace decides.
    committed = BookState.objects.get(market=btc_usd).batches
    assert committed == len(results) in (1, 2)
    assert MatcherCommand.objects.count() == queued - FIRST - BATCH * (committed - 1)
    assert committed_trades(btc_usd) == backlog[:len(committed_trades(btc_usd))]
    assert matcher.book is None  # the book had run ahead of the database: it is rebuilt
    assert audit() == []

    Market.objects.filter(pk=btc_usd.pk).update(status=Market.Status.ONLINE)
    matcher.drain()
    assert_drained(btc_usd, backlog)


def test_after_another_writers_batch_nothing_matched_on_top_of_the_refused_one_commits(backlog, btc_usd, monkeypatch):
    """Another matcher commits batch 2 just before this one's batch 2 is written: that write is
    refused, and so is batch 3, although its number follows the database's. The drain then rebuilds
    the book from the database and applies every command once."""
    write_in_chain, refused = pipeline.Pipeline.write_in_chain, []

    def another_writer_commits_batch_2_first(self, chain, matched):
        if matched.number == 2 and not refused:
            BookState.objects.filter(market=btc_usd).update(batches=2)  # its own transaction
        try:
            return write_in_chain(self, chain, matched)
        except pipeline.StaleBook:
            refused.append(matched.number)
            raise

    monkeypatch.setattr(pipeline.Pipeline, "write_in_chain", another_writer_commits_batch_2_first)
    dispatch.matcher_for("BTC-USD").drain()

    assert refused[:2] == [2, 3]  # batch 3 was matched on top of the refused batch 2
    assert_drained(btc_usd, backlog)  # as if the other writer's batch 2 had written nothing


def test_a_write_that_fails_before_its_commit_loses_nothing_when_the_matcher_restarts(backlog, btc_usd, monkeypatch):
    """Batch 2's statements all run, then its transaction fails before the commit (as a crash
    would leave it), while batch 3 is already matched: a restarted matcher applies every command once."""
    execute, calls = PostgresStore.execute, []

    def execute_then_fail_the_second_batch(store, statements):
        execute(store, statements)
        calls.append(len(statements))
        if len(calls) == 2:
            raise ConnectionError("the database went away before the commit")

    monkeypatch.setattr(PostgresStore, "execute", execute_then_fail_the_second_batch)
    with pytest.raises(ConnectionError):
        dispatch.matcher_for("BTC-USD").drain()
    assert BookState.objects.get(market=btc_usd).batches == 1
    assert committed_trades(btc_usd) == backlog[:len(committed_trades(btc_usd))] != backlog

    monkeypatch.setattr(PostgresStore, "execute", execute)
    dispatch.reset()  # a new process: its book comes from the database
    dispatch.matcher_for("BTC-USD").drain()
    assert_drained(btc_usd, backlog)
