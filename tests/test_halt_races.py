"""A halt racing a matcher batch on PostgreSQL: once ``set_market_status`` has returned "halted", no
batch commits a trade on the market, whichever of the two took its locks first."""

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from trading import dispatch, services
from trading.matcher import PairMatcher
from trading.models import Market, MatcherCommand, Trade
from trading.orders import OrderRequest

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite runs one write transaction at once"),
]
WAIT = 10


@pytest.fixture
def crossing(monkeypatch, funded, btc_usd):
    """A resting sell and a crossing buy, queued while the matcher is down."""
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)
    seller, buyer = funded("seller", BTC="1"), funded("buyer", USD="100000")
    services.place_order(seller, OrderRequest("BTC-USD", "sell", "limit", price=Decimal(63000), size=Decimal("0.1")))
    services.place_order(buyer, OrderRequest("BTC-USD", "buy", "limit", price=Decimal(63000), size=Decimal("0.1")))


def in_thread(target) -> threading.Thread:
    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_halt_waits_for_the_batch_in_flight_and_the_next_batch_sees_it(crossing, btc_usd, monkeypatch):
    locked, release = threading.Event(), threading.Event()
    queued_commands = PairMatcher.queued_commands

    def paused(self, *args, **kwargs):  # inside the batch's transaction, the pair's state locked
        locked.set()
        assert release.wait(WAIT)
        return queued_commands(self, *args, **kwargs)

    monkeypatch.setattr(PairMatcher, "queued_commands", paused)
    batch = in_thread(lambda: dispatch.matcher_for("BTC-USD").drain())
    assert locked.wait(WAIT)
    halting = in_thread(lambda: services.set_market_status(btc_usd.pk, Market.Status.HALTED))

    halting.join(1.5)
    waited_for_the_batch = halting.is_alive()
    release.set()
    batch.join(WAIT)
    halting.join(WAIT)

    assert waited_for_the_batch  # the batch read the market online: the halt returns after its commit
    assert Trade.objects.count() == 1 and not MatcherCommand.objects.exists()


def test_a_batch_that_starts_while_a_halt_is_committing_finds_the_market_halted(crossing, btc_usd):
    halted, release = threading.Event(), threading.Event()

    def halt_slowly():
        with transaction.atomic():
            services.set_market_status(btc_usd.pk, Market.Status.HALTED)
            halted.set()
            assert release.wait(WAIT)

    halting = in_thread(halt_slowly)
    assert halted.wait(WAIT)
    batch = in_thread(lambda: dispatch.matcher_for("BTC-USD").drain())
    batch.join(1.5)
    release.set()
    halting.join(WAIT)
    batch.join(WAIT)

    assert Trade.objects.count() == 0  # it waited for the halt's commit, and read the market halted
    assert MatcherCommand.objects.count() == 2  # left for the resume


def test_a_grid_change_holds_the_market_from_its_check_to_its_save(funded, btc_usd, monkeypatch):
    """A batch committing between the admin's check that every live order is on the new grid and the
    save could leave a remainder off it, which the matcher could not load again: it waits instead."""
    from trading.admin import MarketForm
    from trading.models import Order

    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)
    seller, buyer = funded("seller", BTC="1"), funded("buyer", USD="1000")
    resting, _ = services.place_order(seller, OrderRequest("BTC-USD", "sell", "limit", price=Decimal(1000),
                                                           size=Decimal("0.02")))
    dispatch.matcher_for("BTC-USD").drain()
    services.place_order(buyer, OrderRequest("BTC-USD", "buy", "market", funds=Decimal(5)))  # 0.005 on the old grid
    services.set_market_status(btc_usd.pk, Market.Status.CANCEL_ONLY)
    btc_usd.refresh_from_db()
    validated, release = threading.Event(), threading.Event()

    def change_the_grid():  # as the admin's change view does: validation and save in one transaction
        with transaction.atomic():
            form = MarketForm({"tick_size": "0.01", "lot_size": "0.01", "min_size": "0.01", "min_notional": "1.00",
                               "pair": "BTC-USD", "base": btc_usd.base_id, "quote": btc_usd.quote_id,
                               "status": "cancel_only"}, instance=Market.objects.get(pk=btc_usd.pk))
            assert form.is_valid(), form.errors
            validated.set()
            assert release.wait(WAIT)
            form.save()

    changing = in_thread(change_the_grid)
    assert validated.wait(WAIT)
    batch = in_thread(lambda: dispatch.matcher_for("BTC-USD").drain())
    batch.join(1.5)
    waited_for_the_change = batch.is_alive()
    release.set()
    changing.join(WAIT)
    batch.join(WAIT)

    assert waited_for_the_change
    resting.refresh_from_db()
    # Matched on the new grid: 5 USD buys no whole lot of 0.01 at 1,000, and nothing is left off it.
    assert (resting.status, resting.filled_size) == (Order.Status.OPEN, Decimal(0))
    assert Trade.objects.count() == 0 and not MatcherCommand.objects.exists()

