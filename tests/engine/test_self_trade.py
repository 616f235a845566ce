"""Self-trade prevention: the incoming order's stp mode decides."""

from trading.engine import Cancelled, Expired, Filled, Rested, Trade

from .helpers import book_with, limit, market, typed


def own_and_other_asks():
    # Account 1 rests 2 lots at 100 first, account 2 rests 3 lots at 100 behind.
    return book_with(limit(1, 'sell', 100, 2, account=1),
                     limit(2, 'sell', 100, 3, account=2))


def test_cancel_oldest_cancels_own_resting_order_and_keeps_matching():
    # given an own ask ahead of someone else's ask
    book = own_and_other_asks()
    # when account 1 buys 3 with the default mode
    events = book.apply(limit(3, 'buy', 100, 3, account=1))
    # then its resting order is cancelled and it trades with account 2
    assert typed(events) == typed([
        Cancelled(1, 2, 'self_trade'),
        Trade(2, 3, 2, 1, 'buy', 100, 3), Filled(2), Filled(3)])
    assert book.open_order(1) is None
    assert book.depth(5) == ([], [])


def test_cancel_newest_cancels_incoming_remainder_and_keeps_resting_order():
    book = own_and_other_asks()
    events = book.apply(limit(3, 'buy', 100, 3, account=1, stp='cancel_newest'))
    assert typed(events) == typed([Cancelled(3, 3, 'self_trade')])
    assert book.open_order(1).remaining == 2
    assert book.level_size('sell', 100) == 5
    assert book.drain_touched_levels() == set()


def test_cancel_newest_after_partial_fill_cancels_only_the_remainder():
    # given someone else's ask ahead of an own ask
    book = book_with(limit(1, 'sell', 100, 2, account=2),
                     limit(2, 'sell', 100, 3, account=1))
    # when account 1 buys 4 with cancel_newest
    events = book.apply(limit(3, 'buy', 100, 4, account=1, stp='cancel_newest'))
    # then 2 trade and the remaining 2 are cancelled, nothing rests
    assert typed(events) == typed([
        Trade(1, 3, 2, 1, 'buy', 100, 2), Filled(1), Cancelled(3, 2, 'self_trade')])
    assert book.best_bid() is None
    assert book.open_order(2).remaining == 3


def test_cancel_both_cancels_resting_and_incoming():
    book = own_and_other_asks()
    events = book.apply(limit(3, 'buy', 100, 3, account=1, stp='cancel_both'))
    assert typed(events) == typed([
        Cancelled(1, 2, 'self_trade'), Cancelled(3, 3, 'self_trade')])
    assert book.open_order(1) is None
    assert book.depth(5) == ([], [(100, 3)])


def test_no_trade_between_same_account_even_for_market_orders():
    book = own_and_other_asks()
    events = book.apply(market(3, 'buy', size=10, account=1))
    assert all(e.maker_account_id != e.taker_account_id
               for e in events if isinstance(e, Trade))
    assert typed(events) == typed([
        Cancelled(1, 2, 'self_trade'),
        Trade(2, 3, 2, 1, 'buy', 100, 3), Filled(2), Expired(3, 7)])


def test_stp_applies_to_funds_market_buy_and_reports_funds():
    book = own_and_other_asks()
    events = book.apply(market(3, 'buy', funds=1000, account=1, stp='cancel_newest'))
    assert typed(events) == typed([Cancelled(3, 1000, 'self_trade')])


def test_fok_precheck_excludes_own_orders():
    # given 2 own lots and 3 others' lots at 100
    book = own_and_other_asks()
    # when account 1 sends a FOK for 4: only 3 are really available
    events = book.apply(limit(3, 'buy', 100, 4, account=1, time_in_force='FOK'))
    # then it expires whole and its own order is left alone
    assert typed(events) == typed([Expired(3, 4)])
    assert book.open_order(1).remaining == 2


def test_fok_that_fits_without_own_orders_cancels_them_on_the_way():
    book = own_and_other_asks()
    events = book.apply(limit(3, 'buy', 100, 3, account=1, time_in_force='FOK'))
    assert typed(events) == typed([
        Cancelled(1, 2, 'self_trade'),
        Trade(2, 3, 2, 1, 'buy', 100, 3), Filled(2), Filled(3)])


def test_fok_with_cancel_newest_that_would_meet_own_order_expires_whole():
    book = own_and_other_asks()
    events = book.apply(limit(3, 'buy', 100, 3, account=1, time_in_force='FOK',
                              stp='cancel_newest'))
    assert typed(events) == typed([Expired(3, 3)])
    assert book.level_size('sell', 100) == 5


def test_own_order_on_same_side_does_not_matter():
    book = book_with(limit(1, 'buy', 99, 2, account=1))
    events = book.apply(limit(2, 'buy', 99, 1, account=1))
    assert typed(events) == typed([Rested(2, 'buy', 99, 1)])
