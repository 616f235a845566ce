"""The statements that write one matched batch, and what the batch tells the world once committed.

Everything a batch changes commits in ONE transaction: order states (and the LiveOrder rows of the
orders it closed), trades and fills, the settlement journal, the minute's candle, the changed book
levels, the book's sequence, and the deletion of the commands it processed. Rows go out through the
store (``trading.backends``) as a few bulk statements in one pipeline, not as model instances
(docs/performance.md).
"""

from dataclasses import dataclass
from decimal import Decimal

from exchange.checksum import CHECKSUM_DEPTH
from trading import ledger
from trading.backends import store
from trading.candles import batch_candle, candle_statement
from trading.engine_impl import engine
from trading.models import BookLevel, BookState, Fill, LiveOrder, Market, MatcherCommand, Order, Trade
from trading.settlement import BUY, SELL, WRITTEN_ORDER_FIELDS, Settlement, TradeRecord
from trading.sql import Statement

BOOK_SIDE = {"buy": BookLevel.Side.BID, "sell": BookLevel.Side.ASK}
# The columns of a trade and a fill that differ from row to row (Settlement.trade_rows); the market, the time
# and the batch are the same for all of a batch's rows, and go in once per statement.
TRADE_FIELDS = ["id", "price", "size", "quote_amount", "taker_side", "maker_order", "taker_order"]
FILL_FIELDS = ["id", "trade", "order", "account", "side", "liquidity", "price", "size", "fee", "fee_asset"]
# An order's written state but its last field, updated_at: the batch's time for every order (WorkingOrder.state),
# which goes in once per statement.
*ORDER_STATE_FIELDS, UPDATED_AT = WRITTEN_ORDER_FIELDS


@dataclass
class BookDelta:
    sequence: int
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    top_bids: list[tuple[Decimal, Decimal]]  # the book's best levels after the delta, for the checksum
    top_asks: list[tuple[Decimal, Decimal]]


@dataclass
class BatchResult:
    """What a committed batch changed, for the post-commit hooks (``trading.signals.batch_committed``)."""

    market: Market
    commands: int  # processed
    states: dict[int, tuple | None]  # each processed order's state (WRITTEN_ORDER_FIELDS), None if unchanged
    orders: list[tuple[int, int]]  # (account_id, order_id) of every order whose state changed
    trades: list[TradeRecord]
    fills: list[tuple[int, int]]  # (account_id, fill_id)
    delta: BookDelta | None


@dataclass
class MatchedBatch:
    """A matched batch, ready to be written (``PairMatcher.write``)."""

    number: int  # BookState.batches once it is committed
    command_ids: list[int]
    statements: list[Statement]
    result: BatchResult


def book_changes(book: engine.OrderBook, market: Market, sequence: int) -> tuple[BookDelta | None, list, list]:
    """The levels the batch changed: one delta (the book's ``sequence`` + 1) if any, and the level rows
    to keep and to remove."""
    touched = book.drain_touched_levels()
    if not touched:
        return None, [], []
    tick, lot, market_id = market.tick_size, market.lot_size, market.pk
    top_bids, top_asks = book.depth(CHECKSUM_DEPTH)
    delta = BookDelta(
        sequence=sequence + 1, bids=[], asks=[],
        top_bids=[(price * tick, size * lot) for price, size in top_bids],
        top_asks=[(price * tick, size * lot) for price, size in top_asks],
    )
    removed, kept = [], []
    for side, levels in ((BUY, delta.bids), (SELL, delta.asks)):
        book_side = BOOK_SIDE[side]
        # Each side's prices sorted as integers: the (side, price) pairs sorted whole took 2.5x as long.
        for price_ticks in sorted([price_ticks for level_side, price_ticks in touched if level_side == side]):
            price, size = price_ticks * tick, book.level_size(side, price_ticks) * lot
            levels.append((price, size))
            if size:
                kept.append((market_id, book_side, price, size))
            else:
                removed.append((market_id, book_side, price))
    delta.bids.reverse()
    return delta, kept, removed


def settlement_reference(pair: str, batch: int) -> str:
    return f"settlement:{pair}:{batch}"


def batch_statements(settlement: Settlement, commands: list[tuple], book: engine.OrderBook, *, number: int,
                     sequence: int, priority: int) -> MatchedBatch:
    """The statements writing a settled batch on top of a book at ``sequence`` (ids for its trades and
    fills taken now, so that the write may run while the next batch is matched)."""
    market, now, run = settlement.market, settlement.now, store()
    delta, kept_levels, removed_levels = book_changes(book, market, sequence)
    ids = run.reserve_ids({Trade: len(settlement.trades), Fill: 2 * len(settlement.trades)})
    trade_rows, fill_rows, trades = settlement.trade_rows(ids[Trade], ids[Fill])
    statements = []
    if trade_rows:
        statements += [run.insert_statement(Trade, TRADE_FIELDS, trade_rows,
                                            same={"market": market.pk, "executed_at": now, "batch": number}),
                       run.insert_statement(Fill, FILL_FIELDS, fill_rows,
                                            same={"market": market.pk, "executed_at": now}),
                       candle_statement(batch_candle(market.pk, now, [trade[2:5] for trade in settlement.trades]))]
    journal = settlement.journal(settlement_reference(market.pair, number))
    if journal is not None:
        statements += ledger.journal_statements(journal)
    changed = settlement.changed
    states = {order_id: order.state(now) for order_id, order in changed.items()}
    if states:
        # An order rebuilt from the book has no book priority at hand (WorkingOrder.resting): it keeps its own.
        statements.append(run.update_statement(Order, ORDER_STATE_FIELDS,
                                               [(order_id, *state[:-1]) for order_id, state in states.items()],
                                               keep=("book_priority",), same={UPDATED_AT: now}))
    closed = [(order_id,) for order_id, order in changed.items() if order.done_at is not None]
    if closed:
        statements.append(run.delete_statement(LiveOrder, ["order"], closed))
    if removed_levels:
        statements.append(run.delete_statement(BookLevel, ["market", "side", "price"], removed_levels))
    if kept_levels:
        statements.append(run.upsert_statement(BookLevel, ["market", "side", "price", "size"], kept_levels,
                                               unique=["market", "side", "price"], update=["size"]))
    statements += [
        run.update_statement(BookState, ["sequence", "batches", "last_priority", "last_batch_at"],
                             [(market.pk, delta.sequence if delta else sequence, number, priority, now)],
                             key=["market"]),
        run.delete_statement(MatcherCommand, ["id"], [command[:1] for command in commands]),
    ]
    result = BatchResult(
        market=market,
        commands=len(commands),
        states={command[2]: states.get(command[2]) for command in commands},
        orders=[(order.account_id, order.id) for order in changed.values()],
        trades=trades,
        fills=[(row[3], row[0]) for row in fill_rows],
        delta=delta,
    )
    return MatchedBatch(number=number, command_ids=[command[0] for command in commands], statements=statements,
                        result=result)
