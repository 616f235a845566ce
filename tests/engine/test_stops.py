"""Stop orders: waiting, triggering, immediate trigger, cascades, cancels."""

import pytest

from trading.engine import (
    Cancelled, Expired, Filled, OrderBook, Rested, Trade, Triggered, Untriggered,
)

from .helpers import PAIR, book_with, cancel, limit, market, stop, typed


def book_with_last_trade(price):
    """A book whose last trade printed at ``price`` (and is empty)."""
    book = book_with(limit(901, 'sell', price, 1), limit(902, 'buy', price, 1))
    assert book.last_trade_price == price
    return book


def print_at(book, price, ask_id):
    """A one-lot trade at ``price``: a sell (``ask_id``) rests and the next id buys it; the buy's events."""
    book.apply(limit(ask_id, 'sell', price, 1))
    return book.apply(limit(ask_id + 1, 'buy', price, 1))


def test_stop_waits_unseen_in_depth():
    # given a last trade at 100
    book = book_with_last_trade(100)
    # when a buy stop at 105 arrives
    events = book.apply(stop(1, 'buy', 105, size=2))
    # then it waits and is not part of the book depth
    assert typed(events) == typed([Untriggered(1)])
    assert book.depth(5) == ([], [])
    assert book.stop_order(1).stop_price == 105
    assert book.drain_touched_levels() == set()


def test_stop_without_any_last_trade_waits():
    book = OrderBook(PAIR)
    assert typed(book.apply(stop(1, 'sell', 100, size=1))) == typed([Untriggered(1)])


def test_buy_stop_triggers_when_trade_at_or_above_stop_and_becomes_market():
    # given a waiting buy stop at 105 and asks at 106
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 105, size=2))
    book.apply(limit(2, 'sell', 106, 5))
    # when a trade prints at 105
    events = print_at(book, 105, ask_id=3)
    # then the stop triggers after that order and buys at market
    assert typed(events) == typed([
        Trade(3, 4, 1003, 1004, 'buy', 105, 1), Filled(3), Filled(4),
        Triggered(1), Trade(2, 1, 1002, 1001, 'buy', 106, 2), Filled(1)])
    assert book.stop_order(1) is None


def test_buy_stop_does_not_trigger_below_stop_price():
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 105, size=2))
    events = print_at(book, 104, ask_id=2)
    assert not any(isinstance(e, Triggered) for e in events)
    assert book.stop_order(1) is not None


def test_sell_stop_triggers_at_or_below_and_becomes_limit_with_price():
    # given a sell stop-limit: stop 95, limit 94
    book = book_with_last_trade(100)
    book.apply(stop(1, 'sell', 95, size=3, price=94))
    book.apply(limit(2, 'buy', 95, 1))
    # when a sell prints at 95
    events = book.apply(limit(3, 'sell', 95, 1))
    # then the stop enters as a sell limit at 94 and rests (no bids left)
    assert typed(events) == typed([
        Trade(2, 3, 1002, 1003, 'sell', 95, 1), Filled(2), Filled(3),
        Triggered(1), Rested(1, 'sell', 94, 3)])
    assert book.best_ask() == 94


def test_sell_stop_above_last_price_triggers_immediately():
    # given a last trade at 100 and a bid to sell into
    book = book_with_last_trade(100)
    book.apply(limit(1, 'buy', 99, 5))
    # when a sell stop at 101 arrives (100 <= 101 already holds)
    events = book.apply(stop(2, 'sell', 101, size=2))
    # then it triggers at once and trades, with no Untriggered
    assert typed(events) == typed([
        Triggered(2), Trade(1, 2, 1001, 1002, 'sell', 99, 2), Filled(2)])


def test_buy_stop_at_last_price_triggers_immediately():
    book = book_with_last_trade(100)
    events = book.apply(stop(1, 'buy', 100, size=2))
    assert typed(events) == typed([Triggered(1), Expired(1, 2)])


def test_recovered_last_trade_price_is_used_for_immediate_trigger():
    # given a restarted book whose last trade price was restored
    book = OrderBook(PAIR)
    book.last_trade_price = 100
    # when a buy stop-limit at 99 arrives
    events = book.apply(stop(1, 'buy', 99, size=1, price=98))
    # then it triggers immediately and rests as a limit
    assert typed(events) == typed([Triggered(1), Rested(1, 'buy', 98, 1)])


def test_a_last_trade_recovered_between_two_ticks_triggers_only_the_stops_it_met():
    # given restarted books whose last trade printed between ticks 100 and 101 (a grid made coarser)
    def arriving(side, stop_price):
        book = OrderBook(PAIR)
        book.last_trade_between(100, 101)
        return typed(book.apply(stop(1, side, stop_price, size=1, price=90)))

    # then stops at either tick that the price did not reach wait, and those it passed trigger
    assert arriving('buy', 101) == arriving('sell', 100) == typed([Untriggered(1)])
    assert arriving('buy', 100) == typed([Triggered(1), Rested(1, 'buy', 90, 1)])
    assert arriving('sell', 101) == typed([Triggered(1), Rested(1, 'sell', 90, 1)])


def test_a_trade_after_a_recovery_between_ticks_is_the_last_trade_again():
    book = OrderBook(PAIR)
    book.last_trade_between(100, 101)
    book.apply(limit(901, 'sell', 100, 1))
    book.apply(limit(902, 'buy', 100, 1))  # prints at 100 exactly
    # a sell stop at 100 is met by it, though the tick above was the recovered bound
    assert typed(book.apply(stop(1, 'sell', 100, size=1, price=90))) == typed([Triggered(1), Rested(1, 'sell', 90, 1)])


def test_stops_trigger_in_order_of_acceptance_not_price():
    # given two sell stops, the higher-priced one accepted second
    book = book_with_last_trade(100)
    book.apply(stop(1, 'sell', 97, size=1, price=90))
    book.apply(stop(2, 'sell', 99, size=1, price=90))
    book.apply(limit(3, 'buy', 96, 1))
    # when a trade prints at 96 (triggers both)
    events = book.apply(limit(4, 'sell', 96, 1))
    # then they enter in acceptance order: 1 then 2
    assert [e.order_id for e in events if isinstance(e, Triggered)] == [1, 2]


@pytest.mark.parametrize('side, last, limit_price, early, late', [
    # buy stop at 103 over bids at 104 and 99: a sell sweeps 104 then 99, below the stop
    ('buy', 100, 50, 104, 99),
    # sell stop at 103 over asks at 102 and 106: a buy sweeps 102 then 106, above the stop
    ('sell', 105, 200, 102, 106),
])
def test_stop_triggers_on_an_early_print_of_a_sweep(side, last, limit_price, early, late):
    # given a stop-limit at 103 and two one-lot orders on its side, at ``early`` and ``late``
    book = book_with_last_trade(last)
    book.apply(stop(1, side, 103, size=1, price=limit_price))
    book.apply(limit(2, side, early, 1))
    book.apply(limit(3, side, late, 1))
    # when a market order sweeps both (the last print is on the far side of the stop)
    events = book.apply(market(4, 'sell' if side == 'buy' else 'buy', size=2))
    # then the early print still triggered it: every trade counts
    assert [e.price for e in events if isinstance(e, Trade)] == [early, late]
    assert typed(events)[-2:] == typed([Triggered(1), Rested(1, side, limit_price, 1)])
    assert book.last_trade_price == late


def test_cascade_stop_triggers_another_stop_in_same_apply():
    # given: stop 1 (buy, at 101) will buy the ask at 102, which triggers
    # stop 2 (buy, at 102) that buys the ask at 103
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 101, size=1))
    book.apply(stop(2, 'buy', 102, size=1))
    book.apply(limit(3, 'sell', 101, 1))
    book.apply(limit(4, 'sell', 102, 1))
    book.apply(limit(5, 'sell', 103, 1))
    # when a buy prints at 101
    events = book.apply(limit(6, 'buy', 101, 1))
    # then 1 triggers, trades at 102, which triggers 2, which trades at 103
    assert typed(events) == typed([
        Trade(3, 6, 1003, 1006, 'buy', 101, 1), Filled(3), Filled(6),
        Triggered(1), Trade(4, 1, 1004, 1001, 'buy', 102, 1), Filled(4), Filled(1),
        Triggered(2), Trade(5, 2, 1005, 1002, 'buy', 103, 1), Filled(5), Filled(2)])
    assert book.last_trade_price == 103


def test_cancel_waiting_stop_emits_cancelled_and_it_never_triggers():
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 101, size=4))
    assert typed(book.apply(cancel(1))) == typed([Cancelled(1, 4, 'user')])
    events = print_at(book, 101, ask_id=2)
    assert not any(isinstance(e, Triggered) for e in events)


def test_cancel_waiting_funds_stop_reports_funds():
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 101, funds=5000))
    assert typed(book.apply(cancel(1))) == typed([Cancelled(1, 5000, 'user')])


def test_funds_stop_triggers_as_funds_market_buy():
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 101, funds=250))
    book.apply(limit(2, 'sell', 102, 5))
    events = print_at(book, 101, ask_id=3)
    assert typed(events)[-3:] == typed([
        Triggered(1), Trade(2, 1, 1002, 1001, 'buy', 102, 2), Expired(1, 46)])


def test_load_stop_does_not_trigger_even_if_condition_holds():
    # given a recovered book with last trade 100
    book = OrderBook(PAIR)
    book.last_trade_price = 100
    # when a buy stop at 99 is re-loaded
    book.load_stop(stop(1, 'buy', 99, size=1))
    # then it waits; the next trade at/above 99 triggers it
    assert book.stop_order(1) is not None
    assert Triggered(1) in print_at(book, 100, ask_id=2)


@pytest.mark.parametrize('bad', [
    stop(1, 'buy', None, size=1),                  # no stop price
    stop(1, 'buy', 0, size=1),                     # non-positive
    stop(1, 'buy', 100, size=1, funds=10),         # size and funds
    stop(1, 'sell', 100, funds=10),                # funds on a sell
    stop(1, 'buy', 100, price=100, funds=10),      # stop-limit by funds
    stop(1, 'buy', 100),                           # no size
])
def test_structurally_impossible_stop_raises(bad):
    book = book_with_last_trade(100)
    with pytest.raises(ValueError):
        book.apply(bad)
    assert book.stop_order(1) is None


def test_duplicate_id_of_waiting_stop_raises():
    book = book_with_last_trade(100)
    book.apply(stop(1, 'buy', 105, size=1))
    with pytest.raises(ValueError):
        book.apply(limit(1, 'buy', 90, 1))


# -- trigger: 'above' or 'below' whatever the side


def test_take_profit_sell_waits_above_and_triggers_on_a_trade_at_or_above():
    # given a last trade at 100 and a sell stop-limit triggering above 105 (a take-profit)
    book = book_with_last_trade(100)
    assert typed(book.apply(stop(1, 'sell', 105, size=2, price=104, trigger='above'))) == typed([Untriggered(1)])
    # when a trade prints below the stop, it waits
    assert not any(isinstance(e, Triggered) for e in print_at(book, 101, ask_id=3))
    # and when one prints at 105 it enters as its limit and sells into the bid at 104
    book.apply(limit(2, 'buy', 104, 2))
    events = print_at(book, 105, ask_id=5)
    assert typed(events)[-4:] == typed([Triggered(1), Trade(2, 1, 1002, 1001, 'sell', 104, 2), Filled(2),
                                        Filled(1)])
    book.validate_internal_state()


def test_buy_stop_below_triggers_on_a_trade_at_or_below():
    # given a last trade at 100 and a buy stop triggering below 95 (buy the dip), asks at 96
    book = book_with_last_trade(100)
    assert typed(book.apply(stop(1, 'buy', 95, size=1, trigger='below'))) == typed([Untriggered(1)])
    book.apply(limit(2, 'sell', 96, 5))
    # when a trade prints above 95 it waits; at 95 it buys at market
    assert not any(isinstance(e, Triggered) for e in print_at(book, 97, ask_id=3))
    book.apply(limit(10, 'buy', 95, 1))
    events = book.apply(limit(11, 'sell', 95, 1))
    assert typed(events) == typed([
        Trade(10, 11, 1010, 1011, 'sell', 95, 1), Filled(10), Filled(11),
        Triggered(1), Trade(2, 1, 1002, 1001, 'buy', 96, 1), Filled(1)])


@pytest.mark.parametrize('side, trigger, stop_price, fires_at_once', [
    ('sell', 'above', 100, True),    # the last trade (100) is at the stop: at or above holds
    ('sell', 'above', 101, False),
    ('buy', 'below', 100, True),
    ('buy', 'below', 99, False),
    ('buy', 'above', 99, True),      # today's rules, said explicitly
    ('sell', 'below', 101, True),
])
def test_a_stop_already_crossed_on_arrival_triggers_at_once_in_its_direction(side, trigger, stop_price,
                                                                          fires_at_once):
    book = book_with_last_trade(100)
    events = book.apply(stop(1, side, stop_price, size=1, price=50 if side == 'buy' else 150, trigger=trigger))
    assert (typed(events)[0] == typed([Triggered(1)])[0]) is fires_at_once
    assert (book.stop_order(1) is None) is fires_at_once


@pytest.mark.parametrize('side, default', [('buy', 'above'), ('sell', 'below')])
@pytest.mark.parametrize('stop_price', [97, 100, 103])
def test_no_trigger_is_the_sides_direction(side, default, stop_price):
    # given two books with a last trade at 100, one stop without a trigger, one with the side's own
    implicit, explicit = book_with_last_trade(100), book_with_last_trade(100)
    # when each gets the stop, then both behave alike: at once or waiting, then on the same print
    assert typed(implicit.apply(stop(1, side, stop_price, size=1, price=100))) == typed(
        explicit.apply(stop(1, side, stop_price, size=1, price=100, trigger=default)))
    for price, ask_id in ((98, 3), (102, 5)):
        assert typed(print_at(implicit, price, ask_id)) == typed(print_at(explicit, price, ask_id))
    implicit.validate_internal_state()


def test_stops_of_both_directions_fire_in_acceptance_order_on_one_sweep():
    # given a take-profit sell above 102 (accepted first), a buy stop above 101 and a buy stop below 99
    book = book_with_last_trade(100)
    book.apply(stop(1, 'sell', 102, size=1, price=150, trigger='above'))
    book.apply(stop(2, 'buy', 101, size=1, price=140, trigger='above'))
    book.apply(stop(3, 'buy', 99, size=1, price=140, trigger='below'))
    book.apply(limit(4, 'sell', 102, 1))
    # when a buy prints at 102, both 'above' stops fire in acceptance order, the 'below' one waits
    events = book.apply(limit(5, 'buy', 102, 1))
    assert [e.order_id for e in events if isinstance(e, Triggered)] == [1, 2]
    assert book.stop_order(3) is not None
    book.validate_internal_state()


def test_load_stop_keeps_its_direction():
    book = OrderBook(PAIR)
    book.last_trade_price = 100
    book.load_stop(stop(1, 'sell', 105, size=1, trigger='above'))
    book.load_stop(stop(2, 'buy', 95, size=1, trigger='below'))
    book.validate_internal_state()
    assert book.stop_order(1).trigger == 'above'
    assert Triggered(1) in print_at(book, 105, ask_id=3)
    assert Triggered(2) not in print_at(book, 96, ask_id=5)
    assert Triggered(2) in print_at(book, 95, ask_id=7)


@pytest.mark.parametrize('bad', [
    stop(1, 'buy', 100, size=1, trigger='up'),
    limit(1, 'buy', 90, 1, trigger='above'),
    market(1, 'buy', size=1, trigger='below'),
])
def test_a_bad_trigger_or_one_on_an_order_that_is_not_a_stop_raises(bad):
    book = book_with_last_trade(100)
    with pytest.raises(ValueError):
        book.apply(bad)
    assert book.stop_order(1) is None and book.open_order(1) is None
    with pytest.raises(ValueError):
        OrderBook(PAIR).load_stop(stop(1, 'sell', 100, size=1, trigger='sideways'))
