"""Small builders shared by the engine tests."""

from __future__ import annotations

import os

import pytest

from trading import engine_impl
from trading.engine import CancelOrder, NewOrder

PAIR = 'BTC-USD'
IMPLEMENTATIONS = ('pure', 'compiled')


def implementation(name):
    """trading.engine itself, or its mypyc build: skipped where it was not built (no C compiler), a failure
    where ENGINE_IMPL=compiled demands it (CI)."""
    if name == 'pure':
        return engine_impl.pure
    try:
        return engine_impl.compiled()
    except ImportError as error:
        if os.environ.get('ENGINE_IMPL') == 'compiled':
            pytest.fail(f'ENGINE_IMPL=compiled, but {error}')
        pytest.skip(f'only the pure engine runs here: {error}')


def translated(engine, commands):
    """The same commands as ``engine``'s own classes: each build accepts only its own."""
    return [getattr(engine, type(command).__name__)(*command) for command in commands]


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


def book_with(*commands, engine=engine_impl.pure):
    """A fresh book of ``engine`` after applying ``commands`` (touched levels drained)."""
    book = engine.OrderBook(PAIR)
    for command in translated(engine, commands):
        book.apply(command)
    book.drain_touched_levels()
    return book


def typed(events):
    """Events with their type: NamedTuples of equal fields compare equal."""
    return [(type(e).__name__, *e) for e in events]
