"""Property-based tests: random streams vs the reference model, and invariants."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.engine import CancelOrder, NewOrder

from .helpers import PAIR, translated, typed
from .reference_model import ReferenceBook

# Few accounts and a narrow price band so that crossing, level queues and
# self-trade prevention all happen often.
accounts = st.integers(1, 3)
sides = st.sampled_from(['buy', 'sell'])
prices = st.integers(95, 105)
sizes = st.integers(1, 10)
stp_modes = st.sampled_from(['cancel_oldest', 'cancel_oldest', 'cancel_newest', 'cancel_both'])

limit_orders = st.tuples(
    st.just('limit'), accounts, sides, prices, sizes,
    st.sampled_from(['GTC', 'GTC', 'GTC', 'IOC', 'FOK']),
    st.sampled_from([False, False, False, True]), stp_modes)
market_orders = st.tuples(
    st.just('market'), accounts, sides, sizes, st.integers(50, 2_500),
    st.booleans(), st.sampled_from(['GTC', 'IOC', 'FOK']), stp_modes)
stop_orders = st.tuples(
    st.just('stop'), accounts, sides, prices, st.none() | prices, sizes,
    st.integers(50, 2_500), st.booleans(), stp_modes, st.sampled_from([None, 'above', 'below']))
cancels = st.tuples(st.just('cancel'), st.integers(0, 30))

raw_commands = st.lists(
    st.one_of(limit_orders, limit_orders, limit_orders, market_orders, stop_orders, cancels),
    min_size=5, max_size=80)


def to_commands(raw):
    """Give the drawn commands sequential order ids; cancels pick one back."""
    commands, ids = [], []
    for item in raw:
        kind = item[0]
        if kind == 'cancel':
            back = item[1]
            target = ids[-1 - back] if back < len(ids) else 10_000 + back
            commands.append(CancelOrder(target))
            continue
        order_id = len(ids) + 1
        ids.append(order_id)
        if kind == 'limit':
            _, account, side, price, size, tif, post_only, stp = item
            commands.append(NewOrder(order_id, account, side, 'limit', price, size, None,
                                     None, tif, post_only, stp))
        elif kind == 'market':
            _, account, side, size, funds, use_funds, tif, stp = item
            if use_funds and side == 'buy':
                tif = 'IOC' if tif == 'FOK' else tif
                commands.append(NewOrder(order_id, account, side, 'market', None, None,
                                         funds, None, tif, False, stp))
            else:
                commands.append(NewOrder(order_id, account, side, 'market', None, size,
                                         None, None, tif, False, stp))
        else:
            _, account, side, stop_price, price, size, funds, use_funds, stp, trigger = item
            if use_funds and side == 'buy' and price is None:
                size = None
            else:
                funds = None
            commands.append(NewOrder(order_id, account, side, 'stop', price, size, funds,
                                     stop_price, 'GTC', False, stp, trigger))
    return commands


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_commands)
def test_engine_agrees_with_reference_model_event_for_event(engine, raw):
    # given the same random stream for the engine (pure or compiled) and the naive model
    book, model = engine.OrderBook(PAIR), ReferenceBook()
    commands = to_commands(raw)
    for command, own in zip(commands, translated(engine, commands)):
        # when each command is applied to both
        got = book.apply(own)
        expected = model.apply(command)
        book.validate_internal_state()
        # then events (with their types), touched levels and prices agree
        assert typed(got) == typed(expected), command
        assert book.drain_touched_levels() == model.touched, command
        model.touched = set()
        assert book.last_trade_price == model.last_trade_price
    # and so does the final book
    assert book.depth() == model.depth()
    assert [(o.order_id, o.remaining) for o in book.open_orders()] == [
        (o.order_id, o.remaining)
        for o in sorted(model.resting, key=lambda o: (o.side != 'buy',
                                                      -o.price if o.side == 'buy' else o.price,
                                                      o.arrival))]
    assert [s.order_id for s in book.stop_orders()] == [
        s.order_id for s in model.waiting_stops]


class Ledger:
    """Per-order bookkeeping from the event stream alone."""

    def __init__(self, engine):
        self.engine = engine
        self.orders = {}         # order_id -> NewOrder
        self.traded = {}         # order_id -> lots traded
        self.spent = {}          # order_id -> notional spent (funds orders)
        self.terminal = {}       # order_id -> terminal event

    def record(self, command, events):
        engine = self.engine
        if isinstance(command, engine.NewOrder):
            self.orders[command.order_id] = command
        for event in events:
            if isinstance(event, engine.Trade):
                assert event.maker_account_id != event.taker_account_id
                assert event.size > 0
                for order_id in (event.maker_order_id, event.taker_order_id):
                    self.traded[order_id] = self.traded.get(order_id, 0) + event.size
                self.spent[event.taker_order_id] = (
                    self.spent.get(event.taker_order_id, 0) + event.size * event.price)
            elif isinstance(event, (engine.Filled, engine.Cancelled, engine.Expired, engine.Rejected)):
                assert event.order_id not in self.terminal, event
                self.terminal[event.order_id] = event


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_commands)
def test_invariants_hold_after_every_command(engine, raw):
    book = engine.OrderBook(PAIR)
    ledger = Ledger(engine)
    for command in translated(engine, to_commands(raw)):
        events = book.apply(command)
        book.validate_internal_state()
        ledger.record(command, events)
        # the book is never crossed
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask
        # aggregates agree with the orders on the book
        bids, asks = book.depth()
        assert all(book.level_size('buy', p) == q > 0 for p, q in bids)
        assert all(book.level_size('sell', p) == q > 0 for p, q in asks)
        assert sum(q for _, q in bids + asks) == sum(o.remaining for o in book.open_orders())
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)

    # every order: traded + what is left/closed == its size (or funds)
    for order_id, order in ledger.orders.items():
        traded = ledger.traded.get(order_id, 0)
        terminal = ledger.terminal.get(order_id)
        resting = book.open_order(order_id)
        waiting = book.stop_order(order_id)
        assert (terminal is not None) + (resting is not None) + (waiting is not None) == 1
        if order.size is None:                       # funds market buy
            left = 0 if isinstance(terminal, engine.Filled) else getattr(terminal, 'remaining', None)
            if left is not None:
                assert ledger.spent.get(order_id, 0) + left == order.funds
            continue
        if resting is not None:
            assert traded + resting.remaining == order.size
        elif waiting is not None:
            assert traded == 0
        elif isinstance(terminal, engine.Filled):
            assert traded == order.size
        elif isinstance(terminal, engine.Rejected):
            assert traded == 0
        else:
            assert traded + terminal.remaining == order.size


def test_engine_agrees_with_reference_model_on_long_seeded_streams(engine):
    # given long streams (deeper queues, many levels emptied and reused)
    from .test_book import random_stream
    for seed in (1, 2, 3):
        book, model = engine.OrderBook(PAIR), ReferenceBook()
        commands = random_stream(seed, 2_000)
        # when both run them
        for command, own in zip(commands, translated(engine, commands)):
            # then they agree on every event and touched level
            assert typed(book.apply(own)) == typed(model.apply(command)), command
            book.validate_internal_state()
            assert book.drain_touched_levels() == model.touched
            model.touched = set()
        assert book.depth() == model.depth()
