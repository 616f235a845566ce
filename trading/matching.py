"""A pair's single writer: the pure engine (``trading.engine``) wrapped with persistence.

The matcher takes the pair's queued commands (new orders, cancels) in id order, runs them through
the in-memory book, and commits everything that follows in ONE transaction per batch: order states,
trades and fills, one settlement journal, the changed book levels, the book sequence, and the
deletion of the commands it processed. A matcher killed at any instant therefore either redoes a
whole batch or none of it. Publishing happens after the commit.

The settlement journal holds each account's net change per asset and bucket over the batch (trades,
fees to the fee account, unused holds released): a batch of hundreds of trades posts tens of ledger
lines, not thousands. The batch's fills are its per-trade detail, and ``trading.audit`` checks every
settlement against them.

The book, and the working copies of the orders on it, are trusted only while ``BookState.batches``
says no one else has written since: otherwise (another process, a failed commit) both are rebuilt
from the open orders. Orders are plain objects and rows go out as array parameters in one pipeline
of statements (``trading.sql``) because model instances and the ORM's bulk SQL were most of a
batch's time (docs/performance.md). Under a backlog on PostgreSQL, batch N is written on a second
thread while batch N+1 is matched (``drain_pipelined``).
"""

import gc
import logging
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.models import Account
from accounts.services import fee_account
from exchange.money import DECIMAL_PLACES, EXACT
from marketdata.checksum import CHECKSUM_DEPTH
from trading import engine, ledger, publishing
from trading.candles import BatchCandle, add_candle, batch_candle, candle_statement
from trading.ledger import Bucket, Journal, Posting, Reason
from trading.models import BookLevel, BookState, Fill, Market, MatcherCommand, Order, Side, Trade
from trading.sql import (Statement, delete_statement, execute, id_array, insert_statement, reserve_ids, select_rows,
                         update_statement, upsert_statement)

logger = logging.getLogger(__name__)

# Under a backlog a batch of 2,000 takes about 0.1 s here: larger batches match faster, and a
# create waiting for its batch still gets its result within its wait (docs/performance.md).
BATCH_SIZE = 2000
# Batches matched ahead of the committed ones while draining (each one's write waits for the one before).
PIPELINE_DEPTH = 2
# A drain's first batch is smaller: nothing is being written while it is matched, so a smaller one
# sets the writer to work sooner, and the orders at the head of a burst get their answers sooner
# (the drain of a 20,000-command backlog 4 % faster, its first answers in half the time).
FIRST_BATCH_SIZE = 500
FEE_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
BOOK_SIDE = {"buy": BookLevel.Side.BID, "sell": BookLevel.Side.ASK}
CLOSING_STATUS = {
    engine.Filled: Order.Status.FILLED,
    engine.Cancelled: Order.Status.CANCELLED,
    engine.Expired: Order.Status.EXPIRED,
    engine.Rejected: Order.Status.REJECTED,
}
TRADE_FIELDS = ["id", "market", "price", "size", "quote_amount", "taker_side", "maker_order", "taker_order",
                "executed_at", "batch"]
FILL_FIELDS = ["id", "trade", "order", "account", "market", "side", "liquidity", "price", "size", "fee",
               "fee_asset", "executed_at"]
RESTING = (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)


def grid(market: Market) -> tuple[Decimal, Decimal]:
    """What the book's integer ticks and lots are counted in."""
    return market.tick_size, market.lot_size


def to_units(value: Decimal, step: Decimal) -> int:
    """An exact multiple of ``step`` as an integer count (validation put every value on its grid)."""
    units, rest = EXACT.divmod(value, step)
    if rest:
        raise ValueError(f"{value} is not a multiple of {step}")
    return int(units)


def charge(amount: Decimal, rate: Decimal) -> Decimal:
    """A fee, rounded down: rounding may cost the exchange a fraction of a unit, never the trader."""
    return (amount * rate).quantize(FEE_QUANTUM, rounding=ROUND_DOWN)


def settlement_reference(pair: str, batch: int) -> str:
    return f"settlement:{pair}:{batch}"


@dataclass(slots=True, eq=False)
class WorkingOrder:
    """The matcher's copy of an order it is matching or holds on the book (a generated __init__:
    assigning the fields one by one in a loop was a visible cost of reading a batch)."""

    id: int
    account_id: int
    side: str
    type: str
    price: Decimal | None
    size: Decimal | None
    funds: Decimal | None
    stop_price: Decimal | None
    protection_price: Decimal | None
    time_in_force: str
    post_only: bool
    stp: str
    status: str
    filled_size: Decimal
    executed_value: Decimal
    fee: Decimal
    hold_asset_id: int
    hold_remaining: Decimal
    book_priority: int | None
    done_at: datetime | None = None
    reject_reason: str = ""
    cancel_reason: str = ""

    @property
    def limit_price(self) -> Decimal | None:
        """The price the engine sees: the limit, or the protection price of a market buy given by size."""
        return self.price if self.price is not None else self.protection_price

    def written_row(self, now: datetime) -> tuple:
        return (self.id, self.status, self.filled_size, self.executed_value, self.fee, self.hold_remaining,
                self.book_priority, self.done_at, self.reject_reason, self.cancel_reason, now)


# The order columns the matcher reads (WorkingOrder's fields the database fills), and those it writes back.
ORDER_FIELDS = tuple(item.name for item in fields(WorkingOrder) if item.default is MISSING)
WRITTEN_ORDER_FIELDS = ["status", "filled_size", "executed_value", "fee", "hold_remaining", "book_priority",
                        "done_at", "reject_reason", "cancel_reason", "updated_at"]


class TradeRecord(NamedTuple):
    """A committed trade, as the publisher needs it (the fields streams.trade_texts reads)."""

    pk: int
    price: Decimal
    size: Decimal
    taker_side: str
    executed_at: datetime


@dataclass
class BookDelta:
    sequence: int
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    top_bids: list[tuple[Decimal, Decimal]]  # the book's best levels after the delta, for the checksum
    top_asks: list[tuple[Decimal, Decimal]]


@dataclass
class BatchResult:
    """What a committed batch changed, for publishing after the commit."""

    market: Market
    processed_order_ids: list[int]
    orders: list[tuple[int, int]]  # (account_id, order_id) of every order whose state changed
    trades: list[TradeRecord]
    fills: list[tuple[int, int]]  # (account_id, fill_id)
    delta: BookDelta | None


@dataclass
class Batch:
    """Turns one batch's engine events into order states, trade and fill rows and net postings."""

    matcher: "PairMatcher"
    fee_rates: dict[int, tuple[Decimal, Decimal]]
    # (maker, taker, price, size, quote, taker_side, buyer_fee, seller_fee) per trade
    trades: list[tuple] = field(default_factory=list)
    net: dict[tuple[int, int, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    changed: dict[int, WorkingOrder] = field(default_factory=dict)

    def apply(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is engine.Trade:
                self.settle_trade(event)
            elif kind is engine.Rested:
                order = self.touch(event.order_id)
                order.status = Order.Status.PARTIALLY_FILLED if order.filled_size else Order.Status.OPEN
                self.matcher.priority += 1
                order.book_priority = self.matcher.priority
            elif kind in CLOSING_STATUS:
                self.close(self.touch(event.order_id), CLOSING_STATUS[kind], getattr(event, "reason", ""))
            elif kind is engine.Untriggered:
                self.touch(event.order_id).status = Order.Status.UNTRIGGERED
            elif kind is engine.CancelRejected:
                order = self.matcher.orders.get(event.order_id)
                if order is not None and order.status in Order.LIVE_STATUSES:
                    logger.error("%s: engine does not hold live order %s", self.matcher.pair, order.id)
            # engine.Triggered needs no row change: the events of the triggered order follow it.

    def touch(self, order_id: int) -> WorkingOrder:
        order = self.matcher.orders[order_id]
        self.changed[order_id] = order
        return order

    def post(self, account_id: int, asset_id: int, bucket: str, amount: Decimal) -> None:
        self.net[(account_id, asset_id, bucket)] += amount

    def close(self, order: WorkingOrder, status: str, reason: str) -> None:
        order.status = status
        order.done_at = self.matcher.now
        if status == Order.Status.REJECTED:
            order.reject_reason = reason
        elif status == Order.Status.CANCELLED:
            order.cancel_reason = reason  # 'user' or 'self_trade'
        if order.hold_remaining:
            self.post(order.account_id, order.hold_asset_id, Bucket.LOCKED, -order.hold_remaining)
            self.post(order.account_id, order.hold_asset_id, Bucket.AVAILABLE, order.hold_remaining)
            order.hold_remaining = Decimal(0)

    def settle_trade(self, event: engine.Trade) -> None:
        market, fee_account_id = self.matcher.market, self.matcher.fee_account_id
        maker, taker = self.touch(event.maker_order_id), self.touch(event.taker_order_id)
        price, size = event.price * market.tick_size, event.size * market.lot_size
        quote = price * size
        buyer, seller = (taker, maker) if event.taker_side == Side.BUY else (maker, taker)
        buyer_fee = charge(size, self.fee_rate(buyer, taker))
        seller_fee = charge(quote, self.fee_rate(seller, taker))
        # A buy holds quote at its limit (or protection) price; funds-market buys hold exactly what they spend.
        buyer_hold_used = quote if buyer.funds is not None else buyer.limit_price * size

        for order, fee, hold_used in ((buyer, buyer_fee, buyer_hold_used), (seller, seller_fee, size)):
            order.filled_size += size
            order.executed_value += quote
            order.fee += fee
            order.hold_remaining -= hold_used
        maker.status = Order.Status.PARTIALLY_FILLED
        self.trades.append((maker, taker, price, size, quote, event.taker_side, buyer_fee, seller_fee))

        base, quote_asset = market.base_id, market.quote_id
        self.post(seller.account_id, base, Bucket.LOCKED, -size)
        self.post(buyer.account_id, base, Bucket.AVAILABLE, size - buyer_fee)
        self.post(fee_account_id, base, Bucket.AVAILABLE, buyer_fee)
        self.post(buyer.account_id, quote_asset, Bucket.LOCKED, -buyer_hold_used)
        self.post(buyer.account_id, quote_asset, Bucket.AVAILABLE, buyer_hold_used - quote)
        self.post(seller.account_id, quote_asset, Bucket.AVAILABLE, quote - seller_fee)
        self.post(fee_account_id, quote_asset, Bucket.AVAILABLE, seller_fee)

    def fee_rate(self, order: WorkingOrder, taker: WorkingOrder) -> Decimal:
        maker_rate, taker_rate = self.fee_rates[order.account_id]
        return taker_rate if order is taker else maker_rate

    def settlement(self, reference: str) -> Journal | None:
        postings = [Posting(account_id, asset_id, amount, bucket)
                    for (account_id, asset_id, bucket), amount in sorted(self.net.items()) if amount]
        return Journal(reason=Reason.SETTLEMENT, reference=reference, postings=postings) if postings else None


class PairMatcher:
    def __init__(self, pair: str):
        self.pair = pair
        self.market: Market | None = None
        self.fee_account_id: int | None = None
        self.book: engine.OrderBook | None = None
        self.orders: dict[int, WorkingOrder] = {}  # the orders on the book, resting or waiting stops
        self.batches = -1  # the batches the book holds: committed, or matched and being written
        self.sequence = 0
        self.priority = 0
        self.now = timezone.now()
        self._writer: ThreadPoolExecutor | None = None

    # -- conversions between the database's decimals and the engine's integers

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
        )

    def load(self, state: BookState) -> None:
        """Rebuild the book from the committed open orders, in their time priority."""
        self.market = Market.objects.select_related("base", "quote").get(pk=state.market_id)
        self.fee_account_id = fee_account().pk
        tick, lot = self.market.tick_size, self.market.lot_size
        book = engine.OrderBook(self.pair)
        last_price = Trade.objects.filter(market=self.market).order_by("-id").values_list("price", flat=True).first()
        # The last trade may be off a grid made coarser since (stops trigger on it): the nearest tick.
        book.last_trade_price = None if last_price is None else int(EXACT.divide(last_price, tick).to_integral_value())
        live = Order.objects.filter(market=self.market, status__in=(*RESTING, Order.Status.UNTRIGGERED))
        orders = [WorkingOrder(*row) for row in live.order_by("book_priority", "pk").values_list(*ORDER_FIELDS)]
        for order in orders:
            if order.status in RESTING:
                book.load_resting(order.id, order.account_id, order.side, to_units(order.limit_price, tick),
                                  to_units(order.size - order.filled_size, lot))
        for order in sorted(orders, key=lambda order: order.id):
            if order.status == Order.Status.UNTRIGGERED:
                book.load_stop(self.engine_command(order))
        book.drain_touched_levels()
        self.book, self.batches, self.sequence, self.priority = book, state.batches, state.sequence, state.last_priority
        self.orders = {order.id: order for order in orders}
        # What exists now (the book, the process's modules) lives on: keep it out of the cyclic
        # collector's full passes, which walked it all every few batches (15 % of a drain).
        gc.freeze()

    # -- one batch

    def lock_state(self) -> BookState:
        """The pair's BookState, with its market's status, locked for this batch (made on the first)."""
        states = BookState.objects.select_for_update(of=("self",)).select_related("market")
        state = states.filter(market__pair=self.pair).first()
        if state is None:
            BookState.objects.get_or_create(market=Market.objects.get(pair=self.pair))
            state = states.get(market__pair=self.pair)
        return state

    def lock_book(self) -> BookState | None:
        """Lock the pair's state and make sure the book in memory is the committed one; None when the
        market is halted (frozen: its queue waits for the resume)."""
        state = self.lock_state()
        if state.market.status == Market.Status.HALTED:
            return None
        if (self.book is None or state.batches != self.batches or self.market.pk != state.market_id
                or grid(self.market) != grid(state.market)):  # an operator changed the grid (trading/admin.py)
            self.load(state)
        return state

    def queued_commands(self, market_id: int, taken: list[int] = (), limit: int = 0) -> list[tuple]:
        """Up to ``limit`` (BATCH_SIZE) queued commands, oldest first, with their orders' fields; not those
        in ``taken`` (taken by batches whose writes have not committed yet, which delete them)."""
        commands = MatcherCommand.objects.filter(market_id=market_id)
        if taken:
            commands = commands.alias(taken=RawSQL(
                f'"{MatcherCommand._meta.db_table}"."id" = ANY(%s::bigint[])', [id_array(taken)],
                output_field=BooleanField(),
            )).filter(taken=False)
        return select_rows(commands.order_by("pk").values_list(
            "pk", "kind", *(f"order__{name}" for name in ORDER_FIELDS))[:limit or BATCH_SIZE])

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

    def match(self, commands: list[tuple]) -> "MatchedBatch":
        """Run the commands through the book and turn the events into the statements that write the batch.

        Only memory changes here (and trade and fill ids are taken from their sequences): the rows
        are taken now, so that the write may run while the next batch is matched (drain)."""
        self.now = timezone.now()
        events = []
        for _, kind, *order_row in commands:
            if kind == MatcherCommand.Kind.NEW:
                order = self.orders[order_row[0]] = WorkingOrder(*order_row)
                events.extend(self.book.apply(self.engine_command(order)))
            else:
                events.extend(self.book.apply(engine.CancelOrder(order_row[0])))
        account_ids = set()
        for event in events:
            if type(event) is engine.Trade:
                account_ids.update((event.maker_account_id, event.taker_account_id))
        batch = Batch(self, fee_rates={
            account.pk: (account.rate_tier.maker_fee_rate, account.rate_tier.taker_fee_rate)
            for account in Account.objects.filter(pk__in=account_ids).select_related("rate_tier")
        })
        batch.apply(events)
        self.batches += 1
        for order in batch.changed.values():
            if order.status not in Order.LIVE_STATUSES:
                del self.orders[order.id]
        delta, kept_levels, removed_levels = self.book_changes()
        trade_rows, fill_rows, trades = self.trade_rows(batch.trades)

        statements = [insert_statement(Trade, TRADE_FIELDS, trade_rows),
                      insert_statement(Fill, FILL_FIELDS, fill_rows)] if trade_rows else []
        candle = batch_candle(self.market.pk, self.now, [trade[2:5] for trade in batch.trades]) if trade_rows else None
        journal = batch.settlement(settlement_reference(self.pair, self.batches))
        if connection.vendor == "postgresql":
            # Elsewhere apply_journals and add_candle compute the amounts in Python.
            statements += ledger.journal_statements(journal) if journal is not None else []
            statements += [candle_statement(candle)] if candle is not None else []
            journal = candle = None
        if batch.changed:
            statements.append(update_statement(Order, WRITTEN_ORDER_FIELDS,
                                               [order.written_row(self.now) for order in batch.changed.values()]))
        if removed_levels:
            statements.append(delete_statement(BookLevel, ["market", "side", "price"], removed_levels))
        if kept_levels:
            statements.append(upsert_statement(BookLevel, ["market", "side", "price", "size"], kept_levels,
                                               unique=["market", "side", "price"], update=["size"]))
        statements += [
            update_statement(BookState, ["sequence", "batches", "last_priority"],
                             [(self.market.pk, self.sequence, self.batches, self.priority)], key=["market"]),
            delete_statement(MatcherCommand, ["id"], [command[:1] for command in commands]),
        ]
        result = BatchResult(
            market=self.market,
            processed_order_ids=[command[2] for command in commands],
            orders=[(order.account_id, order.id) for order in batch.changed.values()],
            trades=trades,
            fills=[(row[3], row[0]) for row in fill_rows],
            delta=delta,
        )
        return MatchedBatch(number=self.batches, command_ids=[command[0] for command in commands],
                            statements=statements, journal=journal, candle=candle, result=result)

    def write(self, matched: "MatchedBatch", state: BookState) -> BatchResult:
        """Write a matched batch in the caller's transaction, on top of the batch before it; publish
        it on commit."""
        if state.batches != matched.number - 1:
            raise StaleBook(f"{self.pair}: batch {matched.number} would follow batch {state.batches}")
        if matched.journal is not None:
            ledger.apply_journals([matched.journal])
        if matched.candle is not None:
            add_candle(matched.candle)
        execute(matched.statements)
        transaction.on_commit(lambda: publishing.publish_batch(matched.result))
        return matched.result

    def trade_rows(self, trades: list[tuple]) -> tuple[list[tuple], list[tuple], list[TradeRecord]]:
        """The batch's trade rows and both fill rows of each (a fill's fee is in the asset it receives),
        and the trades for publishing."""
        market, now, batch_number = self.market, self.now, self.batches
        market_id, base_id, quote_id = market.pk, market.base_id, market.quote_id
        ids = reserve_ids({Trade: len(trades), Fill: 2 * len(trades)})
        trade_ids, fill_ids = ids[Trade], iter(ids[Fill])
        trade_rows, fill_rows, records = [], [], []
        for trade_id, (maker, taker, price, size, quote, taker_side, buyer_fee, seller_fee) in zip(trade_ids, trades):
            trade_rows.append((trade_id, market_id, price, size, quote, taker_side, maker.id, taker.id, now,
                               batch_number))
            records.append(TradeRecord(trade_id, price, size, taker_side, now))
            for order in (maker, taker):
                buys = order.side == Side.BUY
                fill_rows.append((
                    next(fill_ids), trade_id, order.id, order.account_id, market_id, order.side,
                    Fill.Liquidity.TAKER if order is taker else Fill.Liquidity.MAKER, price, size,
                    buyer_fee if buys else seller_fee, base_id if buys else quote_id, now,
                ))
        return trade_rows, fill_rows, records

    def book_changes(self) -> tuple[BookDelta | None, list[tuple], list[tuple]]:
        """The levels the batch changed: one delta (sequence + 1) if any, and the level rows to keep and
        to remove."""
        touched = sorted(self.book.drain_touched_levels())
        if not touched:
            return None, [], []
        tick, lot, market_id = self.market.tick_size, self.market.lot_size, self.market.pk
        top_bids, top_asks = self.book.depth(CHECKSUM_DEPTH)
        self.sequence += 1
        delta = BookDelta(
            sequence=self.sequence, bids=[], asks=[],
            top_bids=[(price * tick, size * lot) for price, size in top_bids],
            top_asks=[(price * tick, size * lot) for price, size in top_asks],
        )
        removed, kept = [], []
        for side, price_ticks in touched:
            price, size = price_ticks * tick, self.book.level_size(side, price_ticks) * lot
            (delta.bids if side == Side.BUY else delta.asks).append((price, size))
            if size:
                kept.append((market_id, BOOK_SIDE[side], price, size))
            else:
                removed.append((market_id, BOOK_SIDE[side], price))
        delta.bids.sort(reverse=True)
        delta.asks.sort()
        return delta, kept, removed

    def drain(self) -> list[BatchResult]:
        """Run batches until the queue is empty.

        Pipelined (drain_pipelined) on PostgreSQL, outside any transaction of the caller's, when the
        channel layer is Redis: batches then commit, and are published, on the writer thread."""
        if connection.vendor == "postgresql" and not connection.in_atomic_block and settings.REDIS_URL:
            try:
                results = self.drain_pipelined()
            except StaleBook:
                # Another matcher wrote this pair's book (two workers overlapping in a deploy): the
                # book is rebuilt from the database once, and the queue drained from there.
                logger.warning("%s: another writer committed a batch; rebuilding the book", self.pair)
                results = self.drain_pipelined()
        else:
            results = []
            while (result := self.run_batch()) is not None:
                results.append(result)
        if self.market is not None:
            publishing.publish_owed_ticker(self.market)
        publishing.wait_published()
        return results

    def drain_pipelined(self) -> list[BatchResult]:
        """Drain with each batch in its own transaction, and under a backlog, batch N written and
        committed on a second thread and connection while batch N+1 is matched.

        A write is one pipeline of statements (trading.sql.execute): its thread waits on the database
        while this one matches, and the two cores work at once. Each write checks, under the pair's
        lock, that it follows the last committed batch, and refuses after a write of the drain that
        failed (write_in_chain), so nothing commits on top of a batch that did not."""
        with transaction.atomic():
            if self.lock_book() is None:
                return []
        results, writes, writer, chain = [], deque(), None, WriteChain()
        try:
            while True:
                if writes and (len(writes) >= PIPELINE_DEPTH or writes[0][0].done()):
                    results.append(writes.popleft()[0].result())
                    continue
                limit = BATCH_SIZE if results or writes else FIRST_BATCH_SIZE
                commands = self.queued_commands(self.market.pk, [i for _, ids in writes for i in ids], limit)
                if not commands:
                    if not writes:
                        break
                    # A command that committed after later ones were taken is found once the writes end.
                    results.append(writes.popleft()[0].result())
                    continue
                matched = self.match(commands)
                if writes or len(commands) == limit:
                    writer = writer or self.writer()
                    writes.append((writer.submit(self.write_in_chain, chain, matched), matched.command_ids))
                else:
                    results.append(self.write_in_chain(chain, matched))  # no backlog: nothing to overlap
        except MarketHalted:
            self.abandon(writes)
        except BaseException:
            self.abandon(writes)
            raise
        finally:
            if writer is not None:
                # The writer's connection is opened per backlog, not kept idle between them.
                writer.submit(connections.close_all).result()
        return results

    def write_in_chain(self, chain: "WriteChain", matched: "MatchedBatch") -> BatchResult:
        """Write and commit a batch in its own transaction, unless a write before it in this drain
        failed or was refused: the batch was matched on top of that one. (The batch numbers alone
        would let it commit after another matcher's batch of the same number.)"""
        if chain.broken:
            raise StaleBook(f"{self.pair}: a write before batch {matched.number} failed")
        try:
            with transaction.atomic():
                state = self.lock_state()
                if state.market.status == Market.Status.HALTED:
                    raise MarketHalted(self.pair)
                return self.write(matched, state)
        except BaseException:
            chain.broken = True
            raise

    def abandon(self, writes: deque) -> None:
        """After a failure here or a failed or refused write: wait for the writes still queued (those
        behind a failed write refuse: see write_in_chain); the book in memory may be ahead of the
        database and is rebuilt."""
        for future, _ in writes:
            future.exception()
        self.book = None

    def writer(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"matcher-writer-{self.pair}")
        return self._writer


@dataclass
class WriteChain:
    """One drain's writes, in order: each one is matched on top of the one before it."""

    broken: bool = False


class StaleBook(Exception):
    """The database holds batches this matcher's book does not (or lacks one it does)."""


class MarketHalted(Exception):
    """The market was halted while its backlog was being written: the rest waits for the resume."""


@dataclass
class MatchedBatch:
    """A matched batch, ready to be written: ``PairMatcher.write``."""

    number: int  # BookState.batches once it is committed
    command_ids: list[int]
    statements: list[Statement]
    journal: Journal | None  # the settlement, where it is not among the statements (SQLite)
    candle: BatchCandle | None  # likewise, the batch's addition to its minute's candle
    result: BatchResult
