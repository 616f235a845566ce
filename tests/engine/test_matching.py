"""Matching rules: priority, partial fills, time in force, post-only, market."""

import pytest

from trading.engine import (
    Cancelled, Expired, Filled, NewOrder, OrderBook, OrderType, Rejected, Rested, SelfTradePrevention, Side,
    TimeInForce, Trade,
)

from .helpers import PAIR, book_with, limit, market, typed


def test_resting_limit_emits_rested_and_shows_in_depth():
    # given an empty book
    book = OrderBook(PAIR)
    # when a buy limit arrives with nothing to match
    events = book.apply(limit(1, 'buy', 100, 5))
    # then it rests and is the best bid
    assert typed(events) == typed([Rested(1, 'buy', 100, 5)])
    assert book.best_bid() == 100 and book.best_ask() is None
    assert book.depth(10) == ([(100, 5)], [])
    assert book.open_order(1).remaining == 5


def test_better_price_matches_first_then_fifo_within_level():
    # given asks at 101 (ids 1 then 2) and a better ask at 100 arriving last
    book = book_with(limit(1, 'sell', 101, 3), limit(2, 'sell', 101, 3),
                     limit(3, 'sell', 100, 3))
    # when a buy sweeps 7 lots up to 101
    events = book.apply(limit(4, 'buy', 101, 7))
    # then price first (100), then time (1 before 2), at the makers' prices
    trades = [e for e in events if isinstance(e, Trade)]
    assert [(t.maker_order_id, t.price, t.size) for t in trades] == [
        (3, 100, 3), (1, 101, 3), (2, 101, 1)]
    assert book.open_order(2).remaining == 2
    assert book.depth(5) == ([], [(101, 2)])


def test_trade_fields_and_filled_events_order():
    # given one resting sell from account 7
    book = book_with(limit(1, 'sell', 100, 5, account=7))
    # when account 8 buys exactly 5 at a higher limit
    events = book.apply(limit(2, 'buy', 105, 5, account=8))
    # then the trade prints at the maker's price, maker Filled right after it,
    # then the taker's Filled
    assert typed(events) == typed([
        Trade(1, 2, 7, 8, 'buy', 100, 5), Filled(1), Filled(2)])
    assert book.best_ask() is None and book.best_bid() is None
    assert book.last_trade_price == 100


def test_partial_fill_of_maker_keeps_its_priority():
    # given two asks at the same price
    book = book_with(limit(1, 'sell', 100, 10), limit(2, 'sell', 100, 10))
    # when a small buy takes part of the first
    book.apply(limit(3, 'buy', 100, 4))
    # then the next buy still hits order 1 first
    events = book.apply(limit(4, 'buy', 100, 8))
    trades = [(e.maker_order_id, e.size) for e in events if isinstance(e, Trade)]
    assert trades == [(1, 6), (2, 2)]
    assert book.level_size('sell', 100) == 8


def test_partial_fill_of_gtc_taker_rests_remainder():
    # given 3 lots offered at 100
    book = book_with(limit(1, 'sell', 100, 3))
    # when a buy of 10 at 101 arrives
    events = book.apply(limit(2, 'buy', 101, 10))
    # then it trades 3 and rests 7 at its own price
    assert typed(events) == typed([
        Trade(1, 2, 1001, 1002, 'buy', 100, 3), Filled(1), Rested(2, 'buy', 101, 7)])
    assert book.depth(1) == ([(101, 7)], [])


def test_limit_does_not_trade_through_its_price():
    # given asks at 100 and 102
    book = book_with(limit(1, 'sell', 100, 2), limit(2, 'sell', 102, 2))
    # when a buy limited at 101 wants 5
    events = book.apply(limit(3, 'buy', 101, 5))
    # then it only takes the 100 level and rests the rest at 101
    assert [e.price for e in events if isinstance(e, Trade)] == [100]
    assert book.depth(5) == ([(101, 3)], [(102, 2)])


def test_ioc_expires_its_remainder():
    # given 2 lots bid at 100
    book = book_with(limit(1, 'buy', 100, 2))
    # when an IOC sell of 5 at 100 arrives
    events = book.apply(limit(2, 'sell', 100, 5, time_in_force='IOC'))
    # then 2 trade and 3 expire; nothing rests
    assert typed(events) == typed([
        Trade(1, 2, 1001, 1002, 'sell', 100, 2), Filled(1), Expired(2, 3)])
    assert book.depth(5) == ([], [])


def test_ioc_that_cannot_trade_expires_whole():
    book = book_with(limit(1, 'buy', 99, 2))
    events = book.apply(limit(2, 'sell', 100, 5, time_in_force='IOC'))
    assert typed(events) == typed([Expired(2, 5)])
    assert book.depth(5) == ([(99, 2)], [])


def test_fok_that_cannot_fill_fully_expires_with_no_side_effects():
    # given 4 lots offered over two levels
    book = book_with(limit(1, 'sell', 100, 2), limit(2, 'sell', 101, 2))
    before = book.depth(10)
    # when a FOK buy for 5 arrives
    events = book.apply(limit(3, 'buy', 101, 5, time_in_force='FOK'))
    # then it expires whole, with no trade, and the book is unchanged
    assert typed(events) == typed([Expired(3, 5)])
    assert book.depth(10) == before
    assert book.last_trade_price is None
    assert book.drain_touched_levels() == set()


def test_fok_that_can_fill_fills_across_levels():
    book = book_with(limit(1, 'sell', 100, 2), limit(2, 'sell', 101, 2))
    events = book.apply(limit(3, 'buy', 101, 4, time_in_force='FOK'))
    assert typed(events) == typed([
        Trade(1, 3, 1001, 1003, 'buy', 100, 2), Filled(1),
        Trade(2, 3, 1002, 1003, 'buy', 101, 2), Filled(2), Filled(3)])


def test_fok_only_counts_liquidity_within_its_limit():
    book = book_with(limit(1, 'sell', 100, 2), limit(2, 'sell', 102, 5))
    events = book.apply(limit(3, 'buy', 101, 4, time_in_force='FOK'))
    assert typed(events) == typed([Expired(3, 4)])
    assert book.level_size('sell', 100) == 2


def test_post_only_that_would_cross_is_rejected_without_side_effects():
    # given an ask at 100
    book = book_with(limit(1, 'sell', 100, 2))
    # when a post-only buy at 100 arrives
    events = book.apply(limit(2, 'buy', 100, 1, post_only=True))
    # then it is rejected and nothing changes
    assert typed(events) == typed([Rejected(2, 'POST_ONLY_WOULD_TAKE')])
    assert book.depth(5) == ([], [(100, 2)])
    assert book.open_order(2) is None
    assert book.drain_touched_levels() == set()


def test_post_only_that_does_not_cross_rests():
    book = book_with(limit(1, 'sell', 100, 2))
    events = book.apply(limit(2, 'buy', 99, 1, post_only=True))
    assert typed(events) == typed([Rested(2, 'buy', 99, 1)])


def test_market_by_size_sweeps_levels_and_expires_the_rest():
    # given 3 lots over two bid levels
    book = book_with(limit(1, 'buy', 100, 1), limit(2, 'buy', 99, 2))
    # when a market sell for 5 arrives
    events = book.apply(market(3, 'sell', size=5))
    # then it takes best price first, and the 2 unfilled lots expire
    assert typed(events) == typed([
        Trade(1, 3, 1001, 1003, 'sell', 100, 1), Filled(1),
        Trade(2, 3, 1002, 1003, 'sell', 99, 2), Filled(2), Expired(3, 2)])
    assert book.depth(5) == ([], [])
    assert book.last_trade_price == 99


def test_market_on_empty_side_expires_whole():
    book = book_with(limit(1, 'buy', 100, 1))
    assert typed(book.apply(market(2, 'buy', size=3))) == typed([Expired(2, 3)])


def test_market_fok_is_all_or_nothing():
    book = book_with(limit(1, 'sell', 100, 2))
    assert typed(book.apply(market(2, 'buy', size=3, time_in_force='FOK'))) == \
        typed([Expired(2, 3)])
    assert book.level_size('sell', 100) == 2


@pytest.mark.parametrize('lots_at_100, funds, lots_bought_at_110', [
    pytest.param(2, 420, 2, id='spends-exactly'),  # 2*100 + 2*110
    # after the 100 lot exactly 110 is left: it buys the last lot
    pytest.param(1, 210, 1, id='last-lot-when-funds-equal-its-price'),
])
def test_market_buy_by_funds_spends_exactly_and_is_filled(lots_at_100, funds, lots_bought_at_110):
    # given lots at 100 and 5 at 110
    book = book_with(limit(1, 'sell', 100, lots_at_100), limit(2, 'sell', 110, 5))
    # when a market buy with exactly enough funds for whole lots arrives
    events = book.apply(market(3, 'buy', funds=funds))
    # then it buys whole lots until the funds are gone, closing with Filled
    assert typed(events) == typed([
        Trade(1, 3, 1001, 1003, 'buy', 100, lots_at_100), Filled(1),
        Trade(2, 3, 1002, 1003, 'buy', 110, lots_bought_at_110), Filled(3)])
    assert book.level_size('sell', 110) == 5 - lots_bought_at_110


def test_market_buy_by_funds_expires_with_unspent_funds():
    # given 2 lots at 100 and plenty at 110
    book = book_with(limit(1, 'sell', 100, 2), limit(2, 'sell', 110, 5))
    # when funds 400 arrive: 200 buys 2 lots at 100, 200 buys one at 110
    events = book.apply(market(3, 'buy', funds=400))
    # then the 90 notional left (less than one lot) expires as funds
    assert typed(events) == typed([
        Trade(1, 3, 1001, 1003, 'buy', 100, 2), Filled(1),
        Trade(2, 3, 1002, 1003, 'buy', 110, 1), Expired(3, 90)])


def test_market_buy_by_funds_expires_when_book_runs_out():
    book = book_with(limit(1, 'sell', 100, 2))
    events = book.apply(market(2, 'buy', funds=1000))
    assert typed(events) == typed([
        Trade(1, 2, 1001, 1002, 'buy', 100, 2), Filled(1), Expired(2, 800)])


def test_market_buy_by_funds_too_small_for_one_lot_touches_nothing():
    book = book_with(limit(1, 'sell', 100, 2))
    events = book.apply(market(2, 'buy', funds=99))
    assert typed(events) == typed([Expired(2, 99)])
    assert book.level_size('sell', 100) == 2
    assert book.drain_touched_levels() == set()


def test_level_emptied_and_refilled_keeps_price_order():
    # given asks at 100 and 101, and the 100 level traded away
    book = book_with(limit(1, 'sell', 100, 1), limit(2, 'sell', 101, 1),
                     limit(3, 'buy', 100, 1))
    # when a new ask arrives at 100 again, then another at 99
    book.apply(limit(4, 'sell', 100, 2))
    book.apply(limit(5, 'sell', 99, 3))
    # then depth is in price order and the best ask is 99
    assert book.depth(5) == ([], [(99, 3), (100, 2), (101, 1)])
    assert book.best_ask() == 99


@pytest.mark.parametrize('bad', [
    dict(price=None),
    dict(size=None),
    dict(price=0),
    dict(size=-1),
    dict(side='hold'),
    dict(time_in_force='GTD'),
    dict(stp='cancel_everything'),
    dict(type='iceberg'),
    dict(funds=100),
])
def test_structurally_impossible_limit_raises_and_changes_nothing(bad):
    book = book_with(limit(1, 'sell', 100, 2))
    with pytest.raises(ValueError):
        book.apply(limit(2, 'buy', 100, 1)._replace(**bad))
    assert book.depth(5) == ([], [(100, 2)])
    assert book.open_order(2) is None
    assert book.drain_touched_levels() == set()


@pytest.mark.parametrize('order', [
    market(2, 'buy'),                                  # neither size nor funds
    market(2, 'buy', size=1, funds=100),               # both
    market(2, 'sell', funds=100),                      # funds on a sell
    market(2, 'buy', size=1, post_only=True),          # post-only market
    market(2, 'buy', funds=100, time_in_force='FOK'),  # FOK by funds
    market(2, 'buy', size=1)._replace(price=100),      # market with a price
])
def test_structurally_impossible_market_raises(order):
    book = book_with(limit(1, 'sell', 100, 2))
    with pytest.raises(ValueError):
        book.apply(order)
    assert book.level_size('sell', 100) == 2


def test_duplicate_order_id_of_a_resting_order_raises():
    book = book_with(limit(1, 'sell', 100, 2))
    with pytest.raises(ValueError):
        book.apply(limit(1, 'buy', 90, 1))
    assert book.depth(5) == ([], [(100, 2)])


def test_unknown_command_raises_type_error():
    with pytest.raises(TypeError):
        OrderBook(PAIR).apply(('limit', 1))


def test_enum_members_and_their_string_values_are_the_same_command():
    # given the same three orders spelled with the enums and with plain strings
    def stream(buy, sell, limit_type, ioc, cancel_both):
        return [NewOrder(1, 7, sell, limit_type, 100, 2), NewOrder(2, 8, sell, limit_type, 100, 3),
                NewOrder(3, 7, buy, limit_type, 100, 4, time_in_force=ioc, stp=cancel_both)]
    with_enums = stream(Side.BUY, Side.SELL, OrderType.LIMIT, TimeInForce.IOC,
                        SelfTradePrevention.CANCEL_BOTH)
    with_strings = stream('buy', 'sell', 'limit', 'IOC', 'cancel_both')
    # when each runs on a fresh book
    got = [typed(event for command in commands for event in book.apply(command))
           for commands, book in ((with_enums, OrderBook(PAIR)), (with_strings, OrderBook(PAIR)))]
    # then both give the events of an IOC buy whose own resting order stops it (cancel_both)
    assert got[0] == got[1] == typed([
        Rested(1, 'sell', 100, 2), Rested(2, 'sell', 100, 3),
        Cancelled(1, 2, 'self_trade'), Cancelled(3, 4, 'self_trade')])
