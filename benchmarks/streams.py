"""Deterministic order streams for the matching-engine benchmark.

The stream is a list of engine-neutral records so that two different engines
(ours and ``lightmatchingengine``) can be fed exactly the same messages:

    ('limit',  order_id, account_id, side, price, size, tif)   tif: 'GTC' | 'IOC'
    ('market', order_id, account_id, side, size)
    ('cancel', order_id)

Order ids are 1, 2, 3, ... in submission order (this matches the ids that
lightmatchingengine hands out itself, so cancels need no id translation).

Shape of the default stream (seeded, so regenerating gives the identical list):
  * ~88 % limit orders inside a 101-level band (mid - 50 .. mid + 50): about
    40 % of them cross the touch by 0-3 ticks and trade, the rest rest near
    the touch with a thin tail up to 50 ticks deep; ~3 % of all messages are
    IOC limits,
  * ~10 % cancels: mostly of live orders, some of recent orders that may
    already have traded (cancel races, answered with CancelRejected),
  * ~2 % market orders,
  * 1,000 accounts, so self-trade prevention fires now and then.

Generated data is never committed: call ``generate()`` again, or write a copy
under /tmp with ``python benchmarks/streams.py /tmp/stream.txt``.
"""

from __future__ import annotations

import random
import sys

DEFAULT_SIZE = 1_000_000
DEFAULT_SEED = 20_240_601


def generate(
    n: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    mid: int = 10_000,
    half_band: int = 50,
    cancel_ratio: float = 0.10,
    market_ratio: float = 0.02,
    ioc_ratio: float = 0.03,
    accounts: int = 1_000,
    target_orders: int = 2_000,
) -> list[tuple]:
    """Return ``n`` records (see module docstring); same arguments, same list.

    To keep the book stationary (instead of growing without bound, which
    would measure list scans rather than matching) the generator shadows the
    book with a deliberately naive FIFO model (no self-trade prevention): it
    prices orders relative to the current touch, picks live orders to cancel,
    and sends a few more aggressive orders whenever the book holds more than
    ``target_orders`` orders.
    """
    rng = random.Random(seed)
    random_ = rng.random
    randint = rng.randint
    expovariate = rng.expovariate
    lowest, highest = mid - half_band, mid + half_band
    records: list[tuple] = []
    append = records.append
    shadow = _ShadowBook()
    next_id = 1
    cancel_cut = cancel_ratio
    market_cut = cancel_cut + market_ratio
    ioc_cut = market_cut + ioc_ratio
    for _ in range(n):
        r = random_()
        if r < cancel_cut and next_id > 1:
            if shadow.live_ids and random_() < 0.8:
                target = shadow.live_ids[randint(0, len(shadow.live_ids) - 1)]
            else:
                # A recent order, which may already have traded (cancel race).
                target = max(1, next_id - 1 - int(expovariate(1 / 10)))
            shadow.cancel(target)
            append(('cancel', target))
            continue
        is_buy = random_() < 0.5
        side = 'buy' if is_buy else 'sell'
        account = randint(1, accounts)
        size = randint(1, 100)
        order_id = next_id
        next_id += 1
        if r < market_cut:
            shadow.take(is_buy, None, size)
            append(('market', order_id, account, side, size))
            continue
        best_bid, best_ask = shadow.best_bid(), shadow.best_ask()
        if best_bid is None:
            best_bid = (best_ask - 1) if best_ask is not None else mid - 1
        if best_ask is None:
            best_ask = best_bid + 1
        aggressive = 0.5 if len(shadow.live_ids) > target_orders else 0.4
        if random_() < aggressive:
            # Through the touch by 0..3 ticks: trades, may sweep a level or two.
            price = best_ask + randint(0, 3) if is_buy else best_bid - randint(0, 3)
        else:
            # Passive, most near the touch, a thin tail up to half_band deep.
            offset = min(int(expovariate(1 / 6)), half_band)
            price = best_bid - offset if is_buy else best_ask + offset
        price = min(max(price, lowest), highest)
        tif = 'IOC' if r < ioc_cut else 'GTC'
        remaining = shadow.take(is_buy, price, size)
        if remaining and tif == 'GTC':
            shadow.rest(order_id, is_buy, price, remaining)
        append(('limit', order_id, account, side, price, size, tif))
    return records


class _ShadowBook:
    """Naive FIFO book used only to shape the stream (not a reference)."""

    def __init__(self) -> None:
        self.bids: dict[int, list[list[int]]] = {}
        self.asks: dict[int, list[list[int]]] = {}
        self.by_id: dict[int, tuple[list[int], bool, int]] = {}
        self.live_ids: list[int] = []
        self.slot: dict[int, int] = {}  # id -> index in live_ids (O(1) removal)

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def rest(self, order_id: int, is_buy: bool, price: int, size: int) -> None:
        entry = [order_id, size]
        (self.bids if is_buy else self.asks).setdefault(price, []).append(entry)
        self.by_id[order_id] = (entry, is_buy, price)
        self.slot[order_id] = len(self.live_ids)
        self.live_ids.append(order_id)

    def _forget(self, order_id: int) -> None:
        del self.by_id[order_id]
        index = self.slot.pop(order_id)
        last = self.live_ids.pop()
        if last != order_id:
            self.live_ids[index] = last
            self.slot[last] = index

    def cancel(self, order_id: int) -> None:
        found = self.by_id.get(order_id)
        if found is None:
            return
        entry, is_buy, price = found
        book = self.bids if is_buy else self.asks
        level = book[price]
        level.remove(entry)
        if not level:
            del book[price]
        self._forget(order_id)

    def take(self, is_buy: bool, limit: int | None, size: int) -> int:
        """Match an incoming order; return the unfilled size."""
        book = self.asks if is_buy else self.bids
        while size and book:
            price = min(book) if is_buy else max(book)
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            level = book[price]
            while size and level:
                entry = level[0]
                traded = min(size, entry[1])
                size -= traded
                entry[1] -= traded
                if entry[1] == 0:
                    level.pop(0)
                    self._forget(entry[0])
            if not level:
                del book[price]
        return size


def write(records: list[tuple], path: str) -> None:
    """Write records one per line, fields separated by spaces."""
    with open(path, 'w', encoding='ascii') as fh:
        for rec in records:
            fh.write(' '.join(map(str, rec)))
            fh.write('\n')


def read(path: str) -> list[tuple]:
    """Read records written by :func:`write`."""
    records: list[tuple] = []
    with open(path, encoding='ascii') as fh:
        for line in fh:
            f = line.split()
            kind = f[0]
            if kind == 'limit':
                records.append((kind, int(f[1]), int(f[2]), f[3], int(f[4]), int(f[5]), f[6]))
            elif kind == 'market':
                records.append((kind, int(f[1]), int(f[2]), f[3], int(f[4])))
            else:
                records.append((kind, int(f[1])))
    return records


if __name__ == '__main__':
    out = sys.argv[1] if len(sys.argv) > 1 else '/tmp/engine_stream.txt'
    count = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_SIZE
    write(generate(count), out)
    print(f'wrote {count} records to {out}')
