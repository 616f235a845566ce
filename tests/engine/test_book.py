"""Cancels, queries, touched levels, recovery and determinism."""

import random

import pytest

from trading.engine import (
    CancelRejected, Cancelled, NewOrder, OpenOrder, OrderBook, Rested, Trade,
)

from .helpers import PAIR, book_with, cancel, limit, market, stop, typed


def test_cancel_resting_order_removes_it_and_reports_remaining():
    # given a partially filled resting ask
    book = book_with(limit(1, 'sell', 100, 5), limit(2, 'buy', 100, 2))
    # when it is cancelled
    events = book.apply(cancel(1))
    # then Cancelled carries what was left, and the level is gone
    assert typed(events) == typed([Cancelled(1, 3, 'user')])
    assert book.level_size('sell', 100) == 0
    assert book.best_ask() is None
    assert book.open_order(1) is None


def test_cancel_unknown_or_finished_order_is_rejected():
    book = book_with(limit(1, 'sell', 100, 1), limit(2, 'buy', 100, 1))
    assert typed(book.apply(cancel(99))) == typed([CancelRejected(99, 'not_found')])
    assert typed(book.apply(cancel(1))) == typed([CancelRejected(1, 'not_found')])


def test_cancel_twice_second_is_rejected():
    book = book_with(limit(1, 'buy', 100, 1))
    book.apply(cancel(1))
    assert typed(book.apply(cancel(1))) == typed([CancelRejected(1, 'not_found')])


def test_cancelled_middle_order_is_skipped_by_matching():
    # given three bids at one level, the middle one cancelled
    book = book_with(limit(1, 'buy', 100, 1), limit(2, 'buy', 100, 1),
                     limit(3, 'buy', 100, 1), cancel(2))
    # when a sell takes 2
    events = book.apply(limit(4, 'sell', 100, 2))
    # then it trades with 1 and 3 only
    assert [e.maker_order_id for e in events if isinstance(e, Trade)] == [1, 3]


def test_many_cancels_in_a_level_keep_fifo_and_totals_right():
    # given 100 bids at one level, 80 of them cancelled (forces compaction)
    orders = [limit(i, 'buy', 100, 1) for i in range(1, 101)]
    cancels = [cancel(i) for i in range(1, 101) if i % 5]
    book = book_with(*orders, *cancels)
    survivors = [i for i in range(1, 101) if i % 5 == 0]
    assert book.level_size('buy', 100) == 20
    # when a market sell takes 20
    events = book.apply(market(500, 'sell', size=20))
    # then exactly the survivors trade, in arrival order
    assert [e.maker_order_id for e in events if isinstance(e, Trade)] == survivors
    assert book.best_bid() is None


def test_queries_depth_level_size_best_prices():
    book = book_with(limit(1, 'buy', 99, 1), limit(2, 'buy', 99, 2), limit(3, 'buy', 98, 4),
                     limit(4, 'buy', 97, 1), limit(5, 'sell', 101, 3),
                     limit(6, 'sell', 103, 1))
    assert book.best_bid() == 99 and book.best_ask() == 101
    assert book.level_size('buy', 99) == 3
    assert book.level_size('sell', 99) == 0
    assert book.level_size('buy', 50) == 0
    assert book.depth(2) == ([(99, 3), (98, 4)], [(101, 3), (103, 1)])
    assert book.depth(0) == ([], [])
    assert book.depth() == ([(99, 3), (98, 4), (97, 1)], [(101, 3), (103, 1)])
    assert book.open_order(2) == OpenOrder(2, 1002, 'buy', 99, 2)
    assert [o.order_id for o in book.open_orders()] == [1, 2, 3, 4, 5, 6]
    assert len(book) == 6


def test_drain_touched_levels_reports_changed_levels_once():
    # given a book drained of earlier changes
    book = book_with(limit(1, 'sell', 101, 2), limit(2, 'sell', 102, 2), limit(3, 'buy', 99, 1))
    # when an order rests at 98, a buy takes 101 and part of 102, and 99 is cancelled
    book.apply(limit(4, 'buy', 98, 1))
    book.apply(limit(5, 'buy', 102, 3))
    book.apply(cancel(3))
    # then exactly those levels are reported, then the set is empty
    assert book.drain_touched_levels() == {
        ('buy', 98), ('sell', 101), ('sell', 102), ('buy', 99)}
    assert book.drain_touched_levels() == set()
    # and rejected / unmatched commands touch nothing
    book.apply(cancel(12345))
    book.apply(limit(6, 'buy', 102, 1, post_only=True))
    assert book.drain_touched_levels() == set()


def test_load_resting_preserves_given_time_priority_and_emits_nothing():
    # given a restarted book loaded in original priority order
    book = OrderBook(PAIR)
    book.load_resting(7, 70, 'sell', 100, 2)
    book.load_resting(3, 30, 'sell', 100, 1)   # later in time though lower id
    book.load_resting(9, 90, 'buy', 98, 5)
    # then nothing is marked as touched
    assert book.drain_touched_levels() == set()
    assert book.depth(5) == ([(98, 5)], [(100, 3)])
    # when a buy takes 3
    events = book.apply(limit(20, 'buy', 100, 3))
    # then the loaded order is respected: 7 before 3
    assert [e.maker_order_id for e in events if isinstance(e, Trade)] == [7, 3]


def test_loaded_orders_sit_behind_nothing_and_new_orders_queue_behind_them():
    book = OrderBook(PAIR)
    book.load_resting(1, 10, 'buy', 100, 1)
    book.apply(limit(2, 'buy', 100, 1))
    events = book.apply(limit(3, 'sell', 100, 1))
    assert [e.maker_order_id for e in events if isinstance(e, Trade)] == [1]


@pytest.mark.parametrize('args', [
    (1, 10, 'buy', 100, 0),            # nothing remaining
    (1, 10, 'buy', 0, 1),              # bad price
    (1, 10, 'hold', 100, 1),           # bad side
    (5, 10, 'buy', 90, 1),             # duplicate id
    (1, 10, 'buy', 101, 1),            # would cross the ask at 101
])
def test_load_resting_rejects_bad_input(args):
    book = OrderBook(PAIR)
    book.load_resting(5, 50, 'sell', 101, 1)
    with pytest.raises(ValueError):
        book.load_resting(*args)
    assert book.depth() == ([], [(101, 1)])


def test_load_resting_many_builds_the_book_load_resting_builds(engine):
    # given rows in original time priority (ids out of order, a later item ignored)
    rows = [(7, 70, False, 100, 2, 'x'), (3, 30, False, 100, 1, 'x'), (9, 90, True, 98, 5, 'x'),
            (4, 40, True, 99, 1, 'x'), (8, 80, False, 102, 3, 'x')]
    one_by_one, many = engine.OrderBook(PAIR), engine.OrderBook(PAIR)
    for order_id, account_id, is_buy, price, remaining, _ in rows:
        one_by_one.load_resting(order_id, account_id, 'buy' if is_buy else 'sell', price, remaining)
    many.load_resting_many(rows)
    # then the two books hold the same orders in the same priority, and nothing is touched
    assert many.open_orders() == one_by_one.open_orders()
    assert many.depth() == one_by_one.depth() == ([(99, 1), (98, 5)], [(100, 3), (102, 3)])
    assert many.drain_touched_levels() == set()
    many.validate_internal_state()
    # and a taker meets them in that priority: 7 before 3
    events = many.apply(engine.NewOrder(20, 200, 'buy', 'limit', 100, 3))
    assert [e.maker_order_id for e in events if isinstance(e, engine.Trade)] == [7, 3]


@pytest.mark.parametrize('rows', [
    [(1, 10, True, 100, 0)],                         # nothing remaining
    [(1, 10, True, 0, 1)],                           # bad price
    [(5, 10, True, 90, 1)],                          # duplicate id
    [(1, 10, True, 99, 1), (2, 10, True, 101, 1)],   # the second crosses the ask at 101
    [(1, 10, False, 95, 1), (2, 10, True, 96, 1)],   # a bid above a loaded ask
])
def test_load_resting_many_rejects_bad_rows(engine, rows):
    book = engine.OrderBook(PAIR)
    book.load_resting(5, 50, 'sell', 101, 1)
    with pytest.raises(ValueError):
        book.load_resting_many(rows)


def test_load_stop_rejects_non_stop():
    with pytest.raises(ValueError):
        OrderBook(PAIR).load_stop(limit(1, 'buy', 100, 1))


def test_events_are_immutable():
    events = OrderBook(PAIR).apply(limit(1, 'buy', 100, 1))
    assert events == [Rested(1, 'buy', 100, 1)]
    with pytest.raises(AttributeError):
        events[0].price = 5


def random_stream(seed, count):
    rng = random.Random(seed)
    commands = []
    for order_id in range(1, count + 1):
        r = rng.random()
        account = rng.randint(1, 5)
        side = rng.choice(('buy', 'sell'))
        if r < 0.15:
            commands.append(cancel(rng.randint(1, order_id)))
        elif r < 0.20:
            commands.append(market(order_id, side, size=rng.randint(1, 20), account=account))
        elif r < 0.25:
            commands.append(stop(order_id, side, rng.randint(90, 110), size=rng.randint(1, 5),
                                 price=rng.choice((None, rng.randint(90, 110))),
                                 account=account, trigger=rng.choice((None, 'above', 'below'))))
        else:
            commands.append(NewOrder(
                order_id, account, side, 'limit', rng.randint(90, 110), rng.randint(1, 20),
                None, None, rng.choice(('GTC', 'GTC', 'IOC', 'FOK')),
                rng.random() < 0.1,
                rng.choice(('cancel_oldest', 'cancel_newest', 'cancel_both'))))
    return commands


def run(commands):
    book = OrderBook(PAIR)
    out = []
    for command in commands:
        out.append(typed(book.apply(command)))
        out.append(sorted(book.drain_touched_levels()))
    return out, book.depth(), book.last_trade_price


def test_same_stream_twice_gives_identical_events():
    # given one seeded stream of 5,000 mixed commands
    commands = random_stream(7, 5_000)
    # when it is applied to two fresh books
    first, second = run(commands), run(commands)
    # then every event, touched set and the final book agree
    assert first == second
    assert sum(1 for batch in first[0] for e in batch if e[0] == 'Trade') > 100
