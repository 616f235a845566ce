"""A pair's single writer: the pure engine (``trading.engine``) wrapped with persistence.

The matcher takes the pair's queued commands (new orders, cancels) in id order, runs them through
the in-memory book, settles the events (``trading.settlement``) and commits everything that follows
in ONE transaction per batch (``trading.batch_writer``). A matcher killed at any instant therefore
either redoes a whole batch or none of it. Post-commit hooks (``trading.signals``) publish it and
answer the waiting requests.

The book, and the working copies of the orders on it, are trusted only while ``BookState.batches``
says no one else has written since: otherwise (another process, a failed commit) both are rebuilt
from the open orders. Where the store writes concurrently (PostgreSQL) and the bus publishes from
any thread (Redis), a backlog is drained by the pipeline (``trading.pipeline``).
"""

import gc
import logging
import time
from decimal import ROUND_FLOOR, Decimal
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import BooleanField, F
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.models import Account
from accounts.services import fee_account
from exchange import metrics
from exchange.logs import log_context
from trading.backends import CompiledRead, bus, store
from trading.batch_writer import BatchResult, MatchedBatch, batch_statements
from trading.engine_impl import engine
from trading.models import BookState, Market, MatcherCommand, Order, Side, Trade
from trading.pipeline import Pipeline, StaleBook
from trading.settlement import ORDER_FIELDS, WRITTEN_ORDER_FIELDS, Settlement, WorkingOrder, plain_resting, to_units
from trading.signals import batch_committed, book_loaded, drain_finished
from trading.sql import id_array

logger = logging.getLogger(__name__)

# Under a backlog a batch of 2,000 takes about 0.1 s here: larger batches match faster, and a
# create waiting for its batch still gets its result within its wait (docs/performance.md).
BATCH_SIZE = 2000
RESTING = (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)
READ_CHUNK = 500  # ids per read of whole rows (SQLite's limit on parameters)


def book_row(tick: Decimal, lot: Decimal, order_id: int, account_id: int, side: str, price: Decimal, size: Decimal,
             status: str, filled: Decimal, value: Decimal, fee: Decimal, hold: Decimal) -> tuple:
    """A resting order's row of the book (``store().resting_book``, which PostgreSQL computes in its SQL):
    (id, account_id, is_buy, price in ticks, size left in lots, whether ``plain_resting``)."""
    left = size - filled
    return (order_id, account_id, side == Side.BUY, to_units(price, tick), to_units(left, lot),
            plain_resting(side, price, left, status, filled, value, fee, hold))


def grid(market: Market) -> tuple:
    """What the book's integer ticks and lots are counted in."""
    return market.tick_size, market.lot_size


class LockedState(NamedTuple):
    """The pair's BookState row as a batch locks it, with its market's status and grid (tick, lot)."""

    market_id: int
    sequence: int
    batches: int
    last_priority: int
    status: str
    grid: tuple


class PairMetrics:
    """The pair's matcher metrics (exchange/metrics.py), their labels bound once."""

    def __init__(self, pair: str):
        self.commands = metrics.MATCHER_COMMANDS.labels(pair)
        self.lag = metrics.MATCHER_LAG.labels(pair)
        self.batch_size = metrics.MATCHER_BATCH_SIZE.labels(pair)
        self.batch_write = metrics.MATCHER_BATCH_WRITE.labels(pair)
        self.sequence = metrics.MATCHER_LAST_SEQUENCE.labels(pair)
        self.trades = metrics.TRADES.labels(pair)
        self.bid_levels = metrics.BOOK_DEPTH.labels(pair, "bid")
        self.ask_levels = metrics.BOOK_DEPTH.labels(pair, "ask")

    def matched(self, commands: list[tuple], book: engine.OrderBook) -> None:
        """Each command's wait since its acceptance (its row's last field, queued_at in epoch seconds: the
        database's clock, which may be ahead of this host's, so at least 0); the book's depth."""
        now = time.time()
        metrics.observe_many(self.lag, [max(0.0, now - command[-1]) for command in commands])
        bids, asks = book.level_counts()
        self.bid_levels.set(bids)
        self.ask_levels.set(asks)

    def committed(self, result: BatchResult, write_started: float) -> None:
        self.batch_write.observe(time.perf_counter() - write_started)
        self.batch_size.observe(result.commands)
        self.commands.inc(result.commands)
        if result.trades:
            self.trades.inc(len(result.trades))
        if result.delta is not None:
            self.sequence.set(result.delta.sequence)


class PairMatcher:
    def __init__(self, pair: str):
        self.pair = pair
        self.metrics = PairMetrics(pair)
        self.market: Market | None = None
        self.fee_account_id: int | None = None
        self.book: engine.OrderBook | None = None
        # Working copies of the orders on the book that the book alone cannot give back: waiting stops,
        # and resting orders with fills; a plain resting order is rebuilt from the book when an event
        # names it (book_orders).
        self.orders: dict[int, WorkingOrder] = {}
        self.batches = -1  # the batches the book holds: committed, or matched and being written
        self.sequence = 0
        self.priority = 0
        self.pipeline = Pipeline(self)
        # The batch's two reads, compiled once (store().compiled): the ORM would build them again per batch.
        self.lock_read: CompiledRead | None = None
        self.queue_reads: dict[tuple[bool, int], CompiledRead] = {}  # by (whether some are taken, limit)

    def engine_command(self, order: WorkingOrder) -> engine.NewOrder:
        """A market or stop-market buy given by size enters as IOC (or FOK) limit at its protection price."""
        tick, lot = self.market.tick_size, self.market.lot_size
        price, kind, time_in_force = order.limit_price, order.type, order.time_in_force
        if order.protection_price is not None:
            kind = Order.Type.LIMIT if order.type == Order.Type.MARKET else Order.Type.STOP
            time_in_force = Order.TimeInForce.FOK if time_in_force == Order.TimeInForce.FOK else Order.TimeInForce.IOC
        return engine.NewOrder(
            order_id=order.id,
            account_id=order.account_id,
            side=order.side,
            type=kind,
            price=None if price is None else to_units(price, tick),
            size=None if order.size is None else to_units(order.size, lot),
            funds=None if order.funds is None else to_units(order.funds, tick * lot),
            stop_price=None if order.stop_price is None else to_units(order.stop_price, tick),
            time_in_force=time_in_force,
            post_only=order.post_only,
            stp=order.stp,
            trigger=order.trigger,
        )

    def load(self, state: LockedState) -> None:
        """Rebuild the book from the committed open orders, in their time priority; keep a working copy
        only of those the book alone cannot give back (``trading.settlement.plain_resting``)."""
        if self.market is not None:
            # A rebuild, after a failure: its garbage (the failed drain's traceback and the batch its frames
            # hold) is freed first, which the freezes below would keep for good.
            gc.collect()
        self.market = Market.objects.with_assets().get(pk=state.market_id)
        self.fee_account_id = fee_account().pk
        tick, lot = self.market.tick_size, self.market.lot_size
        book = engine.OrderBook(self.pair)
        last_price = Trade.objects.filter(market=self.market).order_by("-id").values_list("price", flat=True).first()
        if last_price is not None:
            # The last trade may be off a grid made coarser since: stops arriving now must not trigger on a
            # price that never printed, rounded either way.
            below = int((last_price / tick).to_integral_value(rounding=ROUND_FLOOR))
            if below * tick == last_price:
                book.last_trade_price = below
            else:
                book.last_trade_between(below, below + 1)
        live = Order.objects.live(self.market)
        kept = []
        # One streamed read of the book in the engine's integers, a chunk at a time: a million resting
        # orders load in seconds, and only those with fills (or a hold other than their size needs) are
        # read whole below.
        for rows in store().resting_book(live.filter(status__in=RESTING), tick, lot, book_row):
            book.load_resting_many(rows)
            kept += [row[0] for row in rows if not row[5]]
            # Frozen as it grows (as all of it is below): else the collector's passes, triggered by the
            # book's own new objects, walk the whole growing book again and again.
            gc.freeze()
        # Waiting stops in the order the engine took them (stops written before they had a priority first).
        orders = [WorkingOrder(*row) for row in live.filter(status=Order.Status.UNTRIGGERED)
                  .order_by(F("book_priority").asc(nulls_first=True), "pk").values_list(*ORDER_FIELDS)]
        for order in orders:
            book.load_stop(self.engine_command(order))
        for start in range(0, len(kept), READ_CHUNK):
            orders += [WorkingOrder(*row) for row in live.filter(pk__in=kept[start:start + READ_CHUNK])
                       .values_list(*ORDER_FIELDS)]
        book.drain_touched_levels()
        self.book, self.batches, self.sequence, self.priority = book, state.batches, state.sequence, state.last_priority
        self.orders = {order.id: order for order in orders}
        for receiver, error in book_loaded.send_robust(PairMatcher, pair=self.pair, sequence=self.sequence):
            if error is not None:  # what a receiver keeps beside the book: the book itself is loaded
                logger.error("%s: %s failed after the book was loaded", self.pair, receiver.__qualname__,
                             exc_info=error)
        # What exists now (the book, the process's modules) lives on: keep it out of the cyclic
        # collector's full passes, which would walk it all every few batches (docs/performance.md).
        gc.freeze()

    # -- one batch

    def lock_state(self) -> LockedState:
        """The pair's BookState, with its market's status and grid, locked for this batch (made on the first).

        The market row is locked too (FOR NO KEY UPDATE: orders' foreign keys still insert), so that a
        halt or a grid change waits for the batch in flight, and a batch that waited for one reads the
        row as committed (PostgreSQL reads a joined row again after the wait only if it locks it)."""
        if self.lock_read is None:
            self.lock_read = store().compiled(
                BookState.objects.select_for_update(no_key=True).filter(market__pair=self.pair).order_by("pk")
                .values_list(*LockedState._fields[:4], "market__status", "market__tick_size", "market__lot_size")[:1])
        rows = store().read(self.lock_read, [self.pair])
        if not rows:
            BookState.objects.get_or_create(market=Market.objects.get(pair=self.pair))
            rows = store().read(self.lock_read, [self.pair])
        *fields, tick, lot = rows[0]
        return LockedState(*fields, (tick, lot))

    def lock_book(self) -> LockedState | None:
        """Lock the pair's state and make sure the book in memory is the committed one; None when the
        market is halted (frozen: its queue waits for the resume)."""
        state = self.lock_state()
        if state.status == Market.Status.HALTED:
            return None
        if (self.book is None or state.batches != self.batches or self.market.pk != state.market_id
                or grid(self.market) != state.grid):  # an operator changed the grid (trading/admin.py)
            self.load(state)
        return state

    def queued_commands(self, market_id: int, taken: list[int] = (), limit: int = 0) -> list[tuple]:
        """Up to ``limit`` (BATCH_SIZE) queued commands, oldest first, with their orders' fields, the id of the
        request that queued each and, last, when it was queued (epoch seconds); not those in ``taken`` (taken
        by batches whose writes have not committed yet, which delete them)."""
        limit = limit or BATCH_SIZE
        params = [market_id, id_array(taken)] if taken else [market_id]
        read = self.queue_reads.get((bool(taken), limit))
        if read is None:  # compiled once per shape: the parameters above are the queryset's, in its order
            commands = MatcherCommand.objects.filter(market_id=market_id)
            if taken:
                commands = commands.alias(taken=RawSQL(
                    f'"{MatcherCommand._meta.db_table}"."id" = ANY(%s::bigint[])', params[1:],
                    output_field=BooleanField(),
                )).filter(taken=False)
            read = self.queue_reads[(bool(taken), limit)] = store().compiled(commands.order_by("pk").values_list(
                "pk", "kind", *(f"order__{name}" for name in ORDER_FIELDS), "request_id",
                store().epoch_seconds(MatcherCommand, "queued_at"))[:limit])
        return store().read(read, params)

    def run_batch(self) -> BatchResult | None:
        """Process up to BATCH_SIZE queued commands in one transaction; None when the queue is empty."""
        try:
            with transaction.atomic():
                state = self.lock_book()
                if state is None:
                    return None
                commands = self.queued_commands(state.market_id)
                if not commands:
                    return None
                result = self.write(self.match(commands), state)
        except BaseException:
            self.book = None  # memory may be ahead of the database: rebuild before the next batch
            raise
        return result

    def match(self, commands: list[tuple]) -> MatchedBatch:
        """Run the commands through the book and settle the events into the statements that write the
        batch. Only memory changes here (and trade and fill ids are taken from their sequences)."""
        events = []
        for _, kind, *order_row, _, _ in commands:
            if kind == MatcherCommand.Kind.NEW:
                order = self.orders[order_row[0]] = WorkingOrder(*order_row)
                events.extend(self.book.apply(self.engine_command(order)))
            else:
                events.extend(self.book.apply(engine.CancelOrder(order_row[0])))
        account_ids = set()
        for event in events:
            if type(event) is engine.Trade:
                account_ids.update((event.maker_account_id, event.taker_account_id))
        self.orders.update(self.book_orders(events, commands))
        settlement = Settlement(
            market=self.market, orders=self.orders,
            fee_account_id=self.fee_account_id, now=timezone.now(), priority=self.priority,
            fee_rates={account.pk: (account.rate_tier.maker_fee_rate, account.rate_tier.taker_fee_rate)
                       for account in (Account.objects.filter(pk__in=account_ids).select_related("rate_tier")
                                       if account_ids else ())},  # a batch without trades: nothing built
        )
        settlement.apply(events)
        self.metrics.matched(commands, self.book)
        self.batches += 1
        self.priority = settlement.priority
        self.keep(settlement.changed.values())
        matched = batch_statements(settlement, commands, self.book, number=self.batches, sequence=self.sequence,
                                   priority=self.priority)
        if matched.result.delta is not None:
            self.sequence = matched.result.delta.sequence
        self.log_commands(commands, matched.result)
        return matched

    def log_commands(self, commands: list[tuple], result: BatchResult) -> None:
        """At DEBUG, a line for each command with the id of the request that queued it (its ``request_id``
        field), so an operator can follow one order from the web's log into the matcher's."""
        if not logger.isEnabledFor(logging.DEBUG):
            return
        status = WRITTEN_ORDER_FIELDS.index("status")
        for _, kind, order_id, *_, request_id, _ in commands:
            state = result.states.get(order_id)
            with log_context(request_id=request_id or ""):
                logger.debug("%s: %s order %s matched in batch %s: %s", self.pair, kind, order_id, self.batches,
                             "unchanged" if state is None else state[status])

    def book_orders(self, events: list, commands: list[tuple]) -> dict[int, WorkingOrder]:
        """The orders the events name that rested plainly before the batch (no working copy), rebuilt
        from the book: unfilled, each holding what its size at the start of the batch needs, that size
        being the lots it traded in the batch plus what it has left (on the book, or when cancelled)."""
        tick, lot, orders = self.market.tick_size, self.market.lot_size, self.orders
        known: dict[int, tuple] = {}  # order id: (account id, side, price)
        lots: dict[int, int] = {}  # order id: lots traded as a maker in the batch, then plus what is left
        for event in events:
            kind = type(event)
            if kind is engine.Trade:
                if event.maker_order_id not in orders:
                    maker_side = Side.SELL if event.taker_side == Side.BUY else Side.BUY
                    known[event.maker_order_id] = (event.maker_account_id, maker_side, event.price * tick)
                    lots[event.maker_order_id] = lots.get(event.maker_order_id, 0) + event.size
            elif kind is engine.Cancelled and event.order_id not in orders:
                lots[event.order_id] = lots.get(event.order_id, 0) + event.remaining
        if not lots:
            return {}
        for order_id in lots:
            resting = self.book.open_order(order_id)
            if resting is not None:  # traded, and rests still
                lots[order_id] += resting.remaining
        missing = [order_id for order_id in lots if order_id not in known]
        if missing:
            # Cancelled without trading: by a command (its row says who and where), or by self-trade
            # prevention (read: what an order is and where it rests never changes once it is accepted).
            rows = {row[2]: row for row in commands}
            unread = [order_id for order_id in missing if order_id not in rows]
            read = {row[0]: row[1:] for row in store().select_rows(Order.objects.filter(pk__in=unread).values_list(
                "pk", "account_id", "side", "price"))} if unread else {}
            for order_id in missing:
                row = rows.get(order_id)
                known[order_id] = ((row[3], row[4], row[6]) if row is not None else read[order_id])
        market = self.market
        return {order_id: WorkingOrder.resting(order_id, account_id, side, price, lots[order_id] * lot,
                                               market.base_id if side == Side.SELL else market.quote_id)
                for order_id, (account_id, side, price) in known.items()}

    def keep(self, changed) -> None:
        """Keep the working copies the book alone cannot give back: a waiting stop, a resting order with
        fills; drop closed orders and plain resting ones (an open order has its whole size left)."""
        orders = self.orders
        for order in changed:
            status = order.status
            if status == Order.Status.UNTRIGGERED or (status in RESTING and not plain_resting(
                    order.side, order.price, order.size, status, order.filled_size, order.executed_value, order.fee,
                    order.hold_remaining)):
                orders[order.id] = order
            else:
                orders.pop(order.id, None)

    def write(self, matched: MatchedBatch, state: LockedState) -> BatchResult:
        """Write a matched batch in the caller's transaction, on top of the batch before it; announce it
        on commit."""
        if state.batches != matched.number - 1:
            raise StaleBook(f"{self.pair}: batch {matched.number} would follow batch {state.batches}")
        if state.grid != grid(self.market):  # matched on the grid an operator has changed since (pipelined)
            raise StaleBook(f"{self.pair}: batch {matched.number} was matched on the grid before {state.grid}")
        started = time.perf_counter()
        store().execute(matched.statements)
        transaction.on_commit(lambda: self.announce(matched.result, started))
        return matched.result

    def announce(self, result: BatchResult, write_started: float) -> None:
        self.metrics.committed(result, write_started)
        batch_committed.send(PairMatcher, result=result)

    def drain(self) -> list[BatchResult]:
        """Run batches until the queue is empty: pipelined (outside any transaction of the caller's)
        where the store and the bus allow it, each batch then committed and announced on the writer
        thread."""
        if store().writes_concurrently and bus().publishes_from_any_thread and not connection.in_atomic_block:
            try:
                results = self.pipeline.drain(BATCH_SIZE)
            except StaleBook:
                # Another matcher wrote this pair's book (two workers overlapping in a deploy): the
                # book is rebuilt from the database once, and the queue drained from there.
                logger.warning("%s: another writer committed a batch; rebuilding the book", self.pair)
                results = self.pipeline.drain(BATCH_SIZE)
        else:
            results = []
            while (result := self.run_batch()) is not None:
                results.append(result)
        if self.market is not None:
            drain_finished.send(PairMatcher, market=self.market)
        bus().wait_published()
        return results
