"""Throughput of trading.engine against lightmatchingengine on one stream.

Run from the repository root:

    .venv/bin/python benchmarks/engine_bench.py            # 1,000,000 messages
    .venv/bin/python benchmarks/engine_bench.py -n 200000 --repeat 5
    ENGINE_IMPL=pure .venv/bin/python benchmarks/engine_bench.py   # the pure module, not the compiled build

The engine is the one the exchange runs (trading.engine_impl): the mypyc build of trading.engine where
`make` built it, else the pure module; ENGINE_IMPL=pure|compiled forces either.

Both engines get exactly the same messages (benchmarks/streams.py), built
into their native call arguments before the clock starts; each run starts
from an empty book.  Runs alternate between the engines and the median is
reported, with min-max, because a 2-core machine is noisy.  Times are the process's CPU time (a
shared machine steals wall time; one thread, so CPU time is the engine's); --wall times the wall clock.

"messages/s" counts input messages (orders + cancels), the like-for-like
figure.  "events/s" counts the events our engine returns per second.

lightmatchingengine has no IOC, market-remainder expiry, or safe cancel of
a filled order, so its adapter does what a caller would have to: cancel an
IOC/market remainder right after the add, and skip cancels of orders it no
longer holds (its cancel_order asserts on those).  It has no self-trade
prevention either, so total traded volume differs slightly (printed).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import streams  # noqa: E402
from trading.engine_impl import engine

CancelOrder, NewOrder, OrderBook, Trade = engine.CancelOrder, engine.NewOrder, engine.OrderBook, engine.Trade
ENGINE_KIND = 'compiled' if engine.__name__.endswith('._compiled') else 'pure'
ENGINE_MODULE = engine.__name__

try:
    from lightmatchingengine.lightmatchingengine import LightMatchingEngine
    from lightmatchingengine.lightmatchingengine import OrderBook as LmeBook
except ImportError:  # pragma: no cover - reported at run time
    LightMatchingEngine = None

PAIR = 'BTC-USD'


def load_records(n: int, seed: int, regenerate: bool) -> tuple[list[tuple], str]:
    """The recorded stream: read from /tmp if present, else generate + save."""
    path = f'/tmp/engine_stream_{seed}_{n}.txt'
    if os.path.exists(path) and not regenerate:
        return streams.read(path), path
    records = streams.generate(n, seed=seed)
    streams.write(records, path)
    return records, path


def to_commands(records: list[tuple]) -> list:
    commands = []
    for rec in records:
        kind = rec[0]
        if kind == 'limit':
            _, order_id, account, side, price, size, tif = rec
            commands.append(NewOrder(order_id, account, side, 'limit', price, size,
                                     None, None, tif))
        elif kind == 'market':
            _, order_id, account, side, size = rec
            commands.append(NewOrder(order_id, account, side, 'market', None, size))
        else:
            commands.append(CancelOrder(rec[1]))
    return commands


def run_ours(commands: list, clock) -> tuple[float, int, int]:
    book = OrderBook(PAIR)
    apply = book.apply
    n_events = 0
    start = clock()
    for command in commands:
        n_events += len(apply(command))
    elapsed = clock() - start
    return elapsed, n_events, book


def traded_volume_ours(commands: list) -> int:
    book = OrderBook(PAIR)
    return sum(e.size for c in commands for e in book.apply(c) if e.__class__ is Trade)


def to_lme_ops(records: list[tuple]) -> list[tuple]:
    """(op, args...) with op 0 = add GTC, 1 = add then cancel remainder, 2 = cancel."""
    ops = []
    for rec in records:
        kind = rec[0]
        if kind == 'limit':
            side = 1 if rec[3] == 'buy' else 2
            ops.append((0 if rec[6] == 'GTC' else 1, rec[4], rec[5], side))
        elif kind == 'market':
            ops.append((1, 0, rec[4], 1 if rec[3] == 'buy' else 2))
        else:
            ops.append((2, rec[1], 0, 0))
    return ops


def run_lme(ops: list[tuple], clock):
    """Timed run of lightmatchingengine; returns (seconds, trade records, engine)."""
    engine = LightMatchingEngine()
    book = engine.order_books[PAIR] = LmeBook()
    add_order = engine.add_order
    cancel_order = engine.cancel_order
    known = book.order_id_map
    n_trades = 0
    start = clock()
    for op, a, b, side in ops:
        if op == 2:
            # Its cancel_order asserts if the order's level is gone (filled).
            order = known.get(a)
            if order is not None and order.leaves_qty:
                cancel_order(a, PAIR)
            continue
        order, trades = add_order(PAIR, a, b, side)
        n_trades += len(trades)
        if op == 1 and order.leaves_qty:
            cancel_order(order.order_id, PAIR)   # IOC / market: no resting
    elapsed = clock() - start
    return elapsed, n_trades, engine


def lme_traded_volume(ops: list[tuple]) -> int:
    """Untimed: lots traded by lightmatchingengine on the same stream."""
    engine = LightMatchingEngine()
    book = engine.order_books[PAIR] = LmeBook()
    volume = 0
    for op, a, b, side in ops:
        if op == 2:
            order = book.order_id_map.get(a)
            if order is not None and order.leaves_qty:
                engine.cancel_order(a, PAIR)
            continue
        order, _ = engine.add_order(PAIR, a, b, side)
        volume += order.cum_qty
        if op == 1 and order.leaves_qty:
            engine.cancel_order(order.order_id, PAIR)
    return volume


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-n', type=int, default=streams.DEFAULT_SIZE, help='messages')
    parser.add_argument('--seed', type=int, default=streams.DEFAULT_SEED)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--regenerate', action='store_true',
                        help='regenerate the stream even if cached in /tmp')
    parser.add_argument('--no-gc', action='store_true',
                        help='disable the cyclic GC while timing')
    parser.add_argument('--skip-lme', action='store_true')
    parser.add_argument('--wall', action='store_true', help='time the wall clock, not CPU time')
    parser.add_argument('--check', action='store_true',
                        help='also compare traded volume of both engines (untimed)')
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    records, path = load_records(args.n, args.seed, args.regenerate)
    commands = to_commands(records)
    ops = to_lme_ops(records)
    kinds = {}
    for rec in records:
        kind = rec[0] if rec[0] != 'limit' else f'limit {rec[6]}'
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f'stream: {len(records):,} messages from {path} '
          f'(loaded in {time.perf_counter() - t0:.1f}s)')
    print('  mix: ' + ', '.join(f'{k} {v / len(records):.1%}' for k, v in sorted(kinds.items())))
    prices = {rec[4] for rec in records if rec[0] == 'limit'}
    print(f'  limit prices span {len(prices)} levels ({min(prices)}..{max(prices)})')
    clock = time.perf_counter if args.wall else time.process_time
    print(f'python {sys.version.split()[0]}, gc {"off" if args.no_gc else "on"}, '
          f'engine {ENGINE_KIND} ({ENGINE_MODULE}), {"wall" if args.wall else "CPU"} time')

    use_lme = LightMatchingEngine is not None and not args.skip_lme
    # The pre-built inputs (millions of tuples) are not part of either engine:
    # move them out of the collector's sight so full collections during the
    # timed runs scan only what the engines themselves allocate.
    gc.collect()
    gc.freeze()
    ours, theirs = [], []
    n_events = lme_trades = 0
    book = None
    for _ in range(args.repeat):
        gc.collect()
        if args.no_gc:
            gc.disable()
        elapsed, n_events, book = run_ours(commands, clock)
        gc.enable()
        ours.append(elapsed)
        del book
        if use_lme:
            gc.collect()
            if args.no_gc:
                gc.disable()
            elapsed, lme_trades, engine = run_lme(ops, clock)
            del engine
            gc.enable()
            theirs.append(elapsed)

    def line(name: str, times: list[float], extra: str = '') -> float:
        rates = sorted(len(records) / t for t in times)
        median = statistics.median(rates)
        print(f'{name:<22} {median:>10,.0f} messages/s  '
              f'(min {rates[0]:,.0f}, max {rates[-1]:,.0f}; '
              f'median {statistics.median(times):.2f}s){extra}')
        return median

    ours_rate = line(f'trading.engine {ENGINE_KIND}', ours)
    events_rate = statistics.median(n_events / t for t in ours)
    print(f'{"":<22} {events_rate:>10,.0f} events/s    ({n_events:,} events returned)')
    if use_lme:
        lme_rate = line('lightmatchingengine', theirs)
        print(f'ratio (messages/s)     {ours_rate / lme_rate:>10.2f}x')
        print(f'{"":<22} {lme_trades:>10,} trade records returned by lightmatchingengine')
        if args.check:
            print(f'traded lots (untimed check): ours {traded_volume_ours(commands):,} '
                  f'(with STP), lightmatchingengine {lme_traded_volume(ops):,} (no STP)')


if __name__ == '__main__':
    main()
