"""Small builders shared by the engine tests."""

from __future__ import annotations

from trading.engine import CancelOrder, NewOrder, OrderBook

PAIR = 'BTC-USD'


def limit(order_id, side, price, size, account=None, **options):
    """A limit order; by default every order has its own account (no STP)."""
    return NewOrder(order_id, account if account is not None else 1000 + order_id,
                    side, 'limit', price, size, None, None, **options)


def market(order_id, side, size=None, funds=None, account=None, **options):
    return NewOrder(order_id, account if account is not None else 1000 + order_id,
                    side, 'market', None, size, funds, None, **options)


def stop(order_id, side, stop_price, size=None, price=None, funds=None, account=None,
         **options):
    return NewOrder(order_id, account if account is not None else 1000 + order_id,
                    side, 'stop', price, size, funds, stop_price, **options)


def cancel(order_id):
    return CancelOrder(order_id)


def book_with(*commands):
    """A fresh book after applying ``commands`` (touched levels drained)."""
    book = OrderBook(PAIR)
    for command in commands:
        book.apply(command)
    book.drain_touched_levels()
    return book


def typed(events):
    """Events with their type: NamedTuples of equal fields compare equal."""
    return [(type(e).__name__, *e) for e in events]
