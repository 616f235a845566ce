from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.db.models import F

from trading.audit import audit
from trading.models import BookLevel, BookState, Candle, Fill, Market, MatcherCommand, Order, Trade

from .conftest import balance_of

D = Decimal


def test_limit_orders_cross_and_settle_to_the_cent(alice, bob, trade):
    ask = trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    bid = trade(bob, side="buy", type="limit", price=D("63100"), size=D("0.2"))

    ask.refresh_from_db()
    assert ask.status == "partially_filled" and ask.filled_size == D("0.2")
    assert bid.status == "filled" and bid.executed_value == D("12600")
    # bob pays 63,000 (maker's price) per BTC, taker fee 0.2 % in BTC; alice's maker fee 0.1 % in USD
    assert bid.fee == D("0.0004") and ask.fee == D("12.6")
    assert balance_of(bob, "BTC").available == D("10.1996")
    assert balance_of(bob, "USD").available == D("87400") and balance_of(bob, "USD").locked == 0
    assert balance_of(alice, "USD").available == D("112587.4")
    assert balance_of(alice, "BTC").locked == D("0.3") and balance_of(alice, "BTC").available == D("9.5")
    assert Trade.objects.get().price == D("63000")
    assert Fill.objects.count() == 2
    assert list(BookLevel.objects.values_list("side", "price", "size")) == [("ask", D("63000"), D("0.3"))]
    assert BookState.objects.get().sequence == 2


def test_audit_passes_after_trading_and_names_each_corruption(alice, bob, trade):
    from trading.audit import audit
    from trading.models import Asset, Balance, LedgerEntry

    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    trade(bob, side="buy", type="limit", price=D("63000"), size=D("0.2"))
    assert audit() == []

    Balance.objects.filter(account=bob, asset__symbol="USD").update(available=D("1"))
    LedgerEntry.objects.filter(reason="trade").first().delete()
    Order.objects.filter(account=alice).update(filled_size=D("0.3"))
    orphan = Fill.objects.filter(account=bob).first()
    Fill.objects.filter(pk=orphan.pk).update(order_id=10**9, account_id=10**9)
    stray = Trade.objects.get()
    Trade.objects.filter(pk=stray.pk).update(market_id=10**9)

    problems = "\n".join(audit())
    usd = Asset.objects.get(symbol="USD").pk  # 200,000 deposited; bob's 87,400 now reads 1
    assert f"asset {usd}: {D(112601):.18f} held but {D(200000):.18f} entered" in problems
    assert "does not sum to zero" in problems
    assert f"order {Order.objects.get(account=alice).pk}: filled" in problems
    assert f"fill {orphan.pk} names no existing order" in problems
    assert f"fill {orphan.pk} names no existing account" in problems
    assert f"trade {stray.pk} names no existing market" in problems


def test_the_audit_names_a_trade_not_settled_by_its_two_fills(alice, bob, trade):
    """A trade row nobody paid for (a write replayed, a bad restore) shows in the trade history and the
    candles: its fills are what the ledger is held to, so a trade without its two is named."""
    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    trade(bob, side="buy", type="limit", price=D("63100"), size=D("0.2"))
    assert audit() == []
    paid = Trade.objects.get()
    unpaid = Trade.objects.create(market=paid.market, price=paid.price, size=paid.size, quote_amount=paid.quote_amount,
                                  taker_side=paid.taker_side, maker_order=paid.maker_order,
                                  taker_order=paid.taker_order, executed_at=paid.executed_at, batch=paid.batch)
    Candle.objects.update(trades=F("trades") + 1, volume=F("volume") + paid.size,
                          quote_volume=F("quote_volume") + paid.quote_amount)  # the candles agree with it
    assert audit() == [(f"trade {unpaid.pk}: its fills are not one of its maker's and one of its taker's, of its "
                        "price and size (0 fills)")]

    Trade.objects.filter(pk=unpaid.pk).delete()
    Candle.objects.update(trades=F("trades") - 1, volume=F("volume") - paid.size,
                          quote_volume=F("quote_volume") - paid.quote_amount)
    Trade.objects.filter(pk=paid.pk).update(quote_amount=paid.quote_amount + 1)
    Candle.objects.update(quote_volume=F("quote_volume") + 1)
    assert audit() == [f"trade {paid.pk}: quote amount {paid.quote_amount + 1:.18f} is not price x size"]


def test_a_batch_settles_all_its_trades_in_one_netted_journal(alice, bob, django_capture_on_commit_callbacks):
    from trading import dispatch, services
    from trading.audit import audit
    from trading.models import LedgerEntry
    from trading.orders import OrderRequest

    with django_capture_on_commit_callbacks(execute=False):  # queued, not matched: one batch takes them all
        for price in ("63000", "63050", "63100"):
            services.place_order(alice, OrderRequest(pair="BTC-USD", side="sell", type="limit", price=D(price),
                                                     size=D("0.1")))
        services.place_order(bob, OrderRequest(pair="BTC-USD", side="buy", type="limit", price=D("63100"),
                                               size=D("0.3")))
    dispatch.run_matcher("BTC-USD")

    batches = set(Trade.objects.values_list("batch", flat=True))
    assert Trade.objects.count() == 3 and len(batches) == 1
    lines = LedgerEntry.objects.filter(reference__startswith="settlement:")
    assert set(lines.values_list("reference", flat=True)) == {f"settlement:BTC-USD:{batches.pop()}"}
    assert lines.values("journal").distinct().count() == 1
    keys = list(lines.values_list("account", "asset", "bucket", "reason"))
    assert len(keys) == len(set(keys))  # one net line per account, asset, bucket and kind
    bob_btc = dict(lines.filter(account=bob, asset__symbol="BTC").values_list("reason", "amount"))
    assert bob_btc == {"trade": D("0.3"), "fee": -Fill.objects.filter(account=bob).first().fee * 3}
    bob_usd = dict(lines.filter(account=bob, asset__symbol="USD", bucket="locked").values_list("reason", "amount"))
    # 0.1 at each of 63,000, 63,050 and 63,100, held at 63,100: what it bought below its limit is released
    assert bob_usd == {"trade": -D("18915"), "order_release": -D("15")}
    assert lines.get(account=bob, asset__symbol="USD", bucket="available", reason="order_release").amount == D("15")
    assert audit() == []

    # Shift money between two lines of the settlement: the journal still sums to zero, but no
    # longer says what the fills say.
    alice_usd = lines.get(account=alice, asset__symbol="USD", bucket="available", reason="trade")
    LedgerEntry.objects.filter(pk=alice_usd.pk).update(amount=alice_usd.amount - 1)
    bob_usd = lines.get(account=bob, asset__symbol="USD", bucket="locked", reason="trade")
    LedgerEntry.objects.filter(pk=bob_usd.pk).update(amount=bob_usd.amount + 1)
    problems = "\n".join(audit())
    assert f"account {alice.pk} asset" in problems and "but its fills say" in problems


def test_the_matcher_follows_a_grid_change_at_its_next_batch(alice, bob, btc_usd, trade):
    """The book counts integer ticks of the grid it was built on: an order on a finer grid, accepted
    after an operator's change, must neither fail its batch nor be priced on the old one."""
    trade(alice, side="buy", type="limit", price=D("63000.05"), size=D("0.01"))
    Market.objects.filter(pk=btc_usd.pk).update(tick_size=D("0.005"))

    finer = trade(alice, side="buy", type="limit", price=D("63000.055"), size=D("0.01"))
    assert finer.status == Order.Status.OPEN  # matched in its own batch, not left pending
    taker = trade(bob, side="sell", type="limit", price=D("63000.05"), size=D("0.015"))

    finer.refresh_from_db()
    assert finer.status == Order.Status.FILLED and finer.price == D("63000.055")
    assert taker.status == Order.Status.FILLED
    assert list(Trade.objects.order_by("id").values_list("price", "size")) == [
        (D("63000.055"), D("0.01")), (D("63000.05"), D("0.005"))]
    assert MatcherCommand.objects.count() == 0


def test_a_batch_matched_before_a_grid_change_is_not_written_after_it(alice, bob, btc_usd, trade):
    """Pipelined, a batch is matched while the one before it is written: an operator's grid change may
    commit in between. Written, its remainders would be on the old grid, where the book cannot load them."""
    from trading import dispatch, services
    from trading.orders import OrderRequest
    from trading.pipeline import StaleBook

    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.02"))
    matcher = dispatch.matcher_for("BTC-USD")
    placed = services.place_order(bob, OrderRequest("BTC-USD", "buy", "limit", price=D("63000"), size=D("0.005")))
    with transaction.atomic():
        state = matcher.lock_book()
        matched = matcher.match(matcher.queued_commands(state.market_id))
    Market.objects.filter(pk=btc_usd.pk).update(lot_size=D("0.01"))  # committed before the write locks the state

    with pytest.raises(StaleBook), transaction.atomic():
        matcher.write(matched, matcher.lock_state())
    assert Trade.objects.count() == 0 and MatcherCommand.objects.filter(order=placed[0]).exists()


def candles(market) -> list[tuple]:
    return list(Candle.objects.filter(market=market).order_by("minute").values_list(
        "minute", "open", "high", "low", "close", "volume", "quote_volume", "trades"))


def test_candles_follow_the_trades_minute_by_minute_also_across_a_restart(alice, bob, btc_usd, trade, monkeypatch):
    from django.utils import timezone

    from trading import dispatch

    minute = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    clock = {"now": minute + timedelta(seconds=10)}
    monkeypatch.setattr(timezone, "now", lambda: clock["now"])

    def print_trade(price, size):
        trade(alice, side="sell", type="limit", price=D(price), size=D(size))
        trade(bob, side="buy", type="limit", price=D(price), size=D(size))

    print_trade("63000", "0.1")
    print_trade("63100", "0.2")
    dispatch.reset()  # a restarted matcher adds to the minute's candle where it left it
    clock["now"] = minute + timedelta(hours=3)  # the clock jumps ahead, then is set right
    print_trade("64000", "0.5")
    clock["now"] = minute + timedelta(seconds=50)
    print_trade("62900", "0.3")
    clock["now"] = minute + timedelta(minutes=1, seconds=5)
    print_trade("63050", "0.4")

    assert candles(btc_usd) == [
        (minute, D("63000"), D("63100"), D("62900"), D("62900"), D("0.6"), D("37790"), 3),
        (minute + timedelta(minutes=1), D("63050"), D("63050"), D("63050"), D("63050"), D("0.4"), D("25220"), 1),
        (minute + timedelta(hours=3), D("64000"), D("64000"), D("64000"), D("64000"), D("0.5"), D("32000"), 1),
    ]
    assert audit() == []

    # The migration that made candles for the trades before them gives the same candles.
    made_by_the_matcher = candles(btc_usd)
    Candle.objects.all().delete()
    run_sql = SimpleNamespace(connection=connection, execute=lambda sql: connection.cursor().execute(sql))
    import_module("trading.migrations.0007_candles").candles_from_trades(django_apps, run_sql)
    assert candles(btc_usd) == made_by_the_matcher

    Candle.objects.filter(minute=minute).update(volume=D("0.5"))
    exact = D("1e-18")  # amounts are read back at 18 places
    volumes = {"candles": D("1.4").quantize(exact), "trades": D("1.5").quantize(exact)}
    quote = D("95010").quantize(exact)
    assert audit() == [f"market {btc_usd.pk}: candles count {(5, volumes['candles'], quote)} "
                       f"but the trades {(5, volumes['trades'], quote)}"]


def order_state(order) -> tuple:
    order.refresh_from_db()
    return order.status, order.filled_size, order.executed_value, order.fee, order.hold_remaining


def test_a_resting_order_the_matcher_keeps_no_copy_of_settles_to_the_cent_across_a_restart(alice, bob, trade):
    """An unfilled resting order lives only in the book: its fills, fees, hold and release are rebuilt
    from what the book and the trade say, in the batch that trades it and after a restart."""
    from trading import dispatch
    from trading.audit import audit

    bid = trade(alice, side="buy", type="limit", price=D("63000"), size=D("0.5"))
    priority = bid.book_priority
    assert bid.pk not in dispatch.matcher_for("BTC-USD").orders  # plain: the book holds all of it
    trade(bob, side="sell", type="limit", price=D("62900"), size=D("0.2"))

    # maker fee 0.1 % in what it receives (BTC); the hold left is exactly 63,000 per BTC still wanted
    assert order_state(bid) == ("partially_filled", D("0.2"), D("12600"), D("0.0002"), D("18900"))
    assert bid.book_priority == priority
    assert dispatch.matcher_for("BTC-USD").orders[bid.pk].filled_size == D("0.2")  # filled: kept

    dispatch.reset()  # a restarted matcher rebuilds the filled order whole, the plain ones from the book
    trade(bob, side="sell", type="limit", price=D("63000"), size=D("0.3"))
    assert order_state(bid) == ("filled", D("0.5"), D("31500"), D("0.0005"), D("0"))
    assert bid.pk not in dispatch.matcher_for("BTC-USD").orders
    assert (balance_of(alice, "USD").available, balance_of(alice, "USD").locked) == (D("68500"), D("0"))
    assert balance_of(alice, "BTC").available == D("10.4995")
    assert audit() == []


def test_a_rebuilt_book_is_the_book_before_the_restart_its_rows_as_python_makes_them(alice, bob, btc_usd, trade):
    """The store reads the book in the engine's integers (PostgreSQL computes them in its SQL): each row is
    what ``book_row`` makes of the order's amounts, and the rebuilt book is the one the matcher held."""
    import pytest
    from django.db import DataError

    from trading import dispatch
    from trading.backends import BOOK_COLUMNS, in_steps, store
    from trading.matcher import RESTING, book_row

    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    trade(alice, side="sell", type="limit", price=D("63000.5"), size=D("0.3"))
    first = trade(bob, side="buy", type="limit", price=D("62000"), size=D("0.25"))
    trade(alice, side="buy", type="limit", price=D("62000"), size=D("0.1"))
    trade(bob, side="buy", type="limit", price=D("63000"), size=D("0.2"))  # fills part of the first ask
    odd = trade(bob, side="buy", type="limit", price=D("61000"), size=D("0.1"))
    held = dispatch.matcher_for("BTC-USD").book.open_orders()
    Order.objects.filter(pk=odd.pk).update(hold_remaining=D("6100.01"))  # more than its size needs

    resting = Order.objects.filter(market=btc_usd, status__in=RESTING)
    tick, lot = btc_usd.tick_size, btc_usd.lot_size
    rows = [row for part in store().resting_book(resting, tick, lot, book_row, chunk=2) for row in part]
    expected = [book_row(tick, lot, *values)
                for values in resting.order_by("book_priority", "pk").values_list(*BOOK_COLUMNS[1:])]
    assert rows == expected
    assert [plain for *_, plain in rows] == [False, True, True, True, False]  # filled ask first, then odd
    assert rows[2][:5] == (first.pk, bob.pk, True, 6200000, 25000000)
    # PostgreSQL counts in steps by the exact inverse where there is one, else by dividing
    assert in_steps("price", tick) == ("price * %s", D(100)) and in_steps("size", D("0.03")) == ("size / %s", D("0.03"))

    dispatch.reset()
    after = trade(bob, side="buy", type="limit", price=D("60000"), size=D("0.1"))  # the rebuild, then this
    matcher = dispatch.matcher_for("BTC-USD")
    assert [order for order in matcher.book.open_orders() if order.order_id != after.pk] == held
    assert sorted(matcher.orders) == [rows[0][0], odd.pk]  # working copies of those alone
    assert matcher.orders[odd.pk].hold_remaining == D("6100.01")

    Order.objects.filter(pk=odd.pk).update(price=D("61000.005"))  # off the grid: the read refuses it
    with pytest.raises((ValueError, DataError)):
        [part for part in store().resting_book(resting, tick, lot, book_row)]


def test_waiting_stops_that_one_price_fires_trigger_in_the_order_the_engine_took_them_across_a_restart(
        alice, bob, funded, btc_usd, trade, django_capture_on_commit_callbacks):
    """Commands reach the matcher in commit order, not id order: a restarted matcher must rank the waiting
    stops as the one before it did, or a level goes to another account."""
    from trading import dispatch, services
    from trading.orders import OrderRequest

    stop = {"side": "buy", "type": "stop", "stop_price": D("63100"), "price": D("63200"), "size": D("0.1")}
    with django_capture_on_commit_callbacks(execute=False):  # queued; no matcher runs yet
        first, _ = services.place_order(alice, OrderRequest(pair="BTC-USD", **stop))
        second, _ = services.place_order(bob, OrderRequest(pair="BTC-USD", **stop))
    queued = MatcherCommand.objects.get(order=first)  # first's transaction committed last: queued behind second's
    queued.delete()
    MatcherCommand.objects.create(market=btc_usd, kind=MatcherCommand.Kind.NEW, order=first)
    dispatch.matcher_for("BTC-USD").drain()
    assert set(Order.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {"untriggered"}

    dispatch.reset()  # restarted: the stops come back from the database
    carol = funded("carol", USD="100000", BTC="10")
    trade(carol, side="sell", type="limit", price=D("63200"), size=D("0.1"))  # room for one of the stops
    trade(carol, side="sell", type="limit", price=D("63100"), size=D("0.01"))
    trade(alice, side="buy", type="limit", price=D("63100"), size=D("0.01"))  # a trade at 63,100 fires both

    first.refresh_from_db()
    second.refresh_from_db()
    assert (second.status, first.status) == ("filled", "open")  # the engine took second's stop first
    assert audit() == []


def test_a_tick_that_does_not_divide_the_last_trade_price_leaves_the_pair_trading(alice, bob, btc_usd, trade):
    """A rebuild keeps the last trade price (what stops trigger on) between the two ticks of the new grid
    around it."""
    from trading import markets

    trade(alice, side="sell", type="limit", price=D("63000.10"), size=D("0.1"))
    trade(bob, side="buy", type="limit", price=D("63000.10"), size=D("0.1"))  # the last trade: 63,000.10
    Market.objects.filter(pk=btc_usd.pk).update(tick_size=D("0.3"))  # coarser; no live order is off it
    markets.recent_markets.reset()

    placed = trade(alice, side="sell", type="limit", price=D("63000.30"), size=D("0.1"))
    # Stops arriving now trigger at once only if 63,000.10 met their condition: neither tick around it did.
    below = trade(alice, side="sell", type="stop", stop_price=D("63000.00"), price=D("62000.10"), size=D("0.1"))
    above = trade(bob, side="buy", type="stop", stop_price=D("63000.30"), price=D("63000.30"), size=D("0.1"))
    met = trade(bob, side="buy", type="stop", stop_price=D("63000.00"), price=D("62000.10"), size=D("0.1"))

    assert placed.status == "open"
    assert (below.status, above.status, met.status) == ("untriggered", "untriggered", "open")
    assert not MatcherCommand.objects.exists()


def test_plain_resting_orders_cancelled_by_self_trade_prevention_and_by_their_owner_release_exactly(
        alice, bob, trade, django_capture_on_commit_callbacks):
    from trading import dispatch, services
    from trading.audit import audit
    from trading.backends import bus

    buy = trade(alice, side="buy", type="limit", price=D("63000"), size=D("0.1"))
    other = trade(alice, side="buy", type="limit", price=D("62000.5"), size=D("0.3"))
    dispatch.reset()  # both rebuilt from the database, with no working copy
    # alice's own sell meets her resting buys: each is cancelled (cancel_oldest), its hold released
    sell = trade(alice, side="sell", type="limit", price=D("62000"), size=D("0.2"), stp="cancel_oldest")
    assert order_state(buy) == ("cancelled", D("0"), D("0"), D("0"), D("0"))
    assert buy.cancel_reason == "self_trade" and buy.book_priority is not None
    assert order_state(other)[0] == "cancelled" and other.hold_remaining == 0
    assert sell.status == "open"
    assert (balance_of(alice, "USD").available, balance_of(alice, "USD").locked) == (D("100000"), D("0"))

    bid = trade(bob, side="buy", type="limit", price=D("61000"), size=D("0.25"))
    dispatch.reset()
    with django_capture_on_commit_callbacks(execute=True):
        services.request_cancel(bob, bid.pk)
    bus().wait_published()  # the hand-over goes out on the bus's publisher thread, where it has one
    state = dispatch.wait_for_state(bid.pk, 0.5, done=services.cancel_done)
    handed_over = services.take_state(bid, state)  # not read back
    assert (handed_over.status, handed_over.hold_remaining, handed_over.filled_size) == ("cancelled", 0, 0)
    assert order_state(bid) == ("cancelled", D("0"), D("0"), D("0"), D("0"))
    assert (balance_of(bob, "USD").available, balance_of(bob, "USD").locked) == (D("100000"), D("0"))
    assert audit() == []
