"""A pair's single writer: the pure engine (``trading.engine``) wrapped with persistence.

The matcher takes the pair's queued commands (new orders, cancels) in id order, runs them through
the in-memory book, and commits everything that follows in ONE transaction per batch: order states,
trades and fills, ledger journals (fees to the fee account, holds released), the changed book
levels, the book sequence, and the deletion of the commands it processed. A matcher killed at any
instant therefore either redoes a whole batch or none of it. Publishing happens after the commit.

The book in memory is trusted only while ``BookState.batches`` says no one else has written since:
otherwise (another process, a failed commit) it is rebuilt from the open orders.
"""

import logging
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Account
from accounts.services import fee_account
from exchange.money import DECIMAL_PLACES, EXACT
from marketdata.checksum import CHECKSUM_DEPTH
from trading import engine, ledger, publishing
from trading.ledger import Bucket, Journal, Posting, Reason
from trading.models import BookLevel, BookState, Fill, Market, MatcherCommand, Order, Side, Trade
from trading.sql import update_rows

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
FEE_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
BOOK_SIDE = {"buy": BookLevel.Side.BID, "sell": BookLevel.Side.ASK}
CLOSING_STATUS = {
    engine.Filled: Order.Status.FILLED,
    engine.Cancelled: Order.Status.CANCELLED,
    engine.Expired: Order.Status.EXPIRED,
    engine.Rejected: Order.Status.REJECTED,
}


def to_units(value: Decimal, step: Decimal) -> int:
    """An exact multiple of ``step`` as an integer count (validation put every value on its grid)."""
    units = EXACT.divide(value, step)
    if units != units.to_integral_value():
        raise ValueError(f"{value} is not a multiple of {step}")
    return int(units)


def charge(amount: Decimal, rate: Decimal) -> Decimal:
    """A fee, rounded down: rounding may cost the exchange a fraction of a unit, never the trader."""
    return (amount * rate).quantize(FEE_QUANTUM, rounding=ROUND_DOWN)


def engine_price(order: Order) -> Decimal | None:
    return order.price if order.price is not None else order.protection_price


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
    orders: list[Order]
    trades: list[Trade]
    fills: list[Fill]
    delta: BookDelta | None


@dataclass
class Batch:
    """Turns one batch's engine events into rows and journals."""

    matcher: "PairMatcher"
    orders: dict[int, Order]
    fee_rates: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)
    trades: list[tuple[Trade, list[Posting]]] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    journals: list[Journal] = field(default_factory=list)
    changed: dict[int, Order] = field(default_factory=dict)

    def apply(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is engine.Trade:
                self.settle_trade(event)
            elif kind is engine.Rested:
                order = self.touch(event.order_id)
                order.status = Order.Status.OPEN if not order.filled_size else Order.Status.PARTIALLY_FILLED
                self.matcher.priority += 1
                order.book_priority = self.matcher.priority
            elif kind in CLOSING_STATUS:
                self.close(self.touch(event.order_id), CLOSING_STATUS[kind], getattr(event, "reason", ""))
            elif kind is engine.Untriggered:
                self.touch(event.order_id).status = Order.Status.UNTRIGGERED
            elif kind is engine.CancelRejected:
                order = self.orders[event.order_id]
                if order.is_live:
                    logger.error("%s: engine does not hold live order %s", self.matcher.pair, order.pk)
            # engine.Triggered needs no row change: the events of the triggered order follow it.

    def touch(self, order_id: int) -> Order:
        order = self.orders[order_id]
        self.changed[order_id] = order
        return order

    def close(self, order: Order, status: str, reason: str) -> None:
        order.status = status
        order.done_at = self.matcher.now
        if status == Order.Status.REJECTED:
            order.reject_reason = reason
        if order.hold_remaining:
            self.journals.append(ledger.bucket_transfer(
                order.account_id, order.hold_asset_id, order.hold_remaining, source=Bucket.LOCKED,
                target=Bucket.AVAILABLE, reason=Reason.ORDER_RELEASE, reference=f"order:{order.pk}",
            ))
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
        buyer_hold_used = quote if buyer.funds is not None else engine_price(buyer) * size

        for order, fee, hold_used in ((buyer, buyer_fee, buyer_hold_used), (seller, seller_fee, size)):
            order.filled_size += size
            order.executed_value += quote
            order.fee += fee
            order.hold_remaining -= hold_used
            if order is maker:
                order.status = Order.Status.PARTIALLY_FILLED

        trade = Trade(market=market, price=price, size=size, quote_amount=quote, taker_side=event.taker_side,
                      maker_order=maker, taker_order=taker, executed_at=self.matcher.now)
        for order, fee, asset_id in ((buyer, buyer_fee, market.base_id), (seller, seller_fee, market.quote_id)):
            self.fills.append(
                Fill(trade=trade, order=order, account_id=order.account_id, market=market, side=order.side,
                     liquidity=Fill.Liquidity.TAKER if order is taker else Fill.Liquidity.MAKER,
                     price=price, size=size, fee=fee, fee_asset_id=asset_id, executed_at=self.matcher.now)
            )
        postings = [
            Posting(seller.account_id, market.base_id, -size, Bucket.LOCKED),
            Posting(buyer.account_id, market.base_id, size - buyer_fee, Bucket.AVAILABLE),
            Posting(fee_account_id, market.base_id, buyer_fee, Bucket.AVAILABLE),
            Posting(buyer.account_id, market.quote_id, -buyer_hold_used, Bucket.LOCKED),
            Posting(buyer.account_id, market.quote_id, buyer_hold_used - quote, Bucket.AVAILABLE),
            Posting(seller.account_id, market.quote_id, quote - seller_fee, Bucket.AVAILABLE),
            Posting(fee_account_id, market.quote_id, seller_fee, Bucket.AVAILABLE),
        ]
        self.trades.append((trade, [p for p in postings if p.amount]))

    def fee_rate(self, order: Order, taker: Order) -> Decimal:
        maker_rate, taker_rate = self.fee_rates[order.account_id]
        return taker_rate if order is taker else maker_rate


class PairMatcher:
    def __init__(self, pair: str):
        self.pair = pair
        self.market: Market | None = None
        self.fee_account_id: int | None = None
        self.book: engine.OrderBook | None = None
        self.batches = -1
        self.priority = 0
        self.now = timezone.now()

    # -- conversions between the database's decimals and the engine's integers

    def engine_command(self, order: Order) -> engine.NewOrder:
        """A market or stop-market buy given by size enters as IOC (or FOK) limit at its protection price."""
        tick, lot = self.market.tick_size, self.market.lot_size
        price, kind, time_in_force = engine_price(order), order.type, order.time_in_force
        if order.protection_price is not None:
            kind = Order.Type.LIMIT if order.type == Order.Type.MARKET else Order.Type.STOP
            time_in_force = Order.TimeInForce.FOK if time_in_force == Order.TimeInForce.FOK else Order.TimeInForce.IOC
        return engine.NewOrder(
            order_id=order.pk,
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
        book.last_trade_price = None if last_price is None else to_units(last_price, tick)
        orders = Order.objects.filter(market=self.market)
        resting = orders.filter(status__in=(Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)).order_by("book_priority")
        for order in resting:
            book.load_resting(order.pk, order.account_id, order.side, to_units(engine_price(order), tick),
                              to_units(order.remaining_size, lot), order.stp)
        for order in orders.filter(status=Order.Status.UNTRIGGERED).order_by("pk"):
            book.load_stop(self.engine_command(order))
        book.drain_touched_levels()
        self.book, self.batches, self.priority = book, state.batches, state.last_priority

    # -- one batch

    def run_batch(self) -> BatchResult | None:
        """Process up to BATCH_SIZE queued commands in one transaction; None when the queue is empty."""
        try:
            with transaction.atomic():
                market_id, status = Market.objects.values_list("pk", "status").get(pair=self.pair)
                if status == Market.Status.HALTED:
                    return None  # a halted market is frozen: its queue waits for the resume
                state, _ = BookState.objects.select_for_update().get_or_create(market_id=market_id)
                if self.book is None or state.batches != self.batches or self.market.pk != market_id:
                    self.load(state)
                commands = list(
                    MatcherCommand.objects.filter(market=self.market).select_related("order").order_by("pk")[:BATCH_SIZE]
                )
                if not commands:
                    return None
                result = self.settle(commands, state)
                transaction.on_commit(lambda: publishing.publish_batch(result))
        except BaseException:
            self.book = None  # memory may be ahead of the database: rebuild before the next batch
            raise
        self.batches = state.batches
        return result

    def settle(self, commands: list[MatcherCommand], state: BookState) -> BatchResult:
        self.now = timezone.now()
        orders = {command.order_id: command.order for command in commands}
        events = []
        for command in commands:
            if command.kind == MatcherCommand.Kind.NEW:
                events.extend(self.book.apply(self.engine_command(command.order)))
            else:
                events.extend(self.book.apply(engine.CancelOrder(command.order_id)))
        # Resting makers, stops a trade triggered and resting orders self-trade prevention cancelled.
        referenced = set()
        for event in events:
            if type(event) is engine.Trade:
                referenced.update((event.maker_order_id, event.taker_order_id))
            else:
                referenced.add(event.order_id)
        orders.update(Order.objects.in_bulk(referenced - orders.keys()))
        batch = Batch(self, orders)
        account_ids = {order.account_id for order in orders.values()}
        batch.fee_rates = {
            account.pk: (account.rate_tier.maker_fee_rate, account.rate_tier.taker_fee_rate)
            for account in Account.objects.filter(pk__in=account_ids).select_related("rate_tier")
        }
        batch.apply(events)

        trades = Trade.objects.bulk_create([trade for trade, _ in batch.trades])
        for fill in batch.fills:
            fill.trade_id = fill.trade.pk
        Fill.objects.bulk_create(batch.fills)
        journals = [
            Journal(reason=Reason.TRADE, reference=f"trade:{trade.pk}", postings=postings)
            for trade, postings in batch.trades
        ]
        ledger.apply_journals(journals + batch.journals)
        for order in batch.changed.values():
            order.updated_at = self.now
        update_rows(
            Order,
            list(batch.changed.values()),
            ["status", "filled_size", "executed_value", "fee", "hold_remaining", "book_priority", "done_at",
             "reject_reason", "updated_at"],
        )
        delta = self.save_book_levels(state)
        state.batches += 1
        state.last_priority = self.priority
        state.save()
        MatcherCommand.objects.filter(pk__in=[command.pk for command in commands]).delete()
        return BatchResult(
            market=self.market,
            processed_order_ids=[command.order_id for command in commands],
            orders=list(batch.changed.values()),
            trades=trades,
            fills=batch.fills,
            delta=delta,
        )

    def save_book_levels(self, state: BookState) -> BookDelta | None:
        """Write the levels this batch changed; one delta (sequence + 1) if any changed."""
        touched = sorted(self.book.drain_touched_levels())
        if not touched:
            return None
        tick, lot = self.market.tick_size, self.market.lot_size
        top_bids, top_asks = self.book.depth(CHECKSUM_DEPTH)
        delta = BookDelta(
            sequence=state.sequence + 1, bids=[], asks=[],
            top_bids=[(price * tick, size * lot) for price, size in top_bids],
            top_asks=[(price * tick, size * lot) for price, size in top_asks],
        )
        removed, kept = Q(), []
        for side, price_ticks in touched:
            price, size = price_ticks * tick, self.book.level_size(side, price_ticks) * lot
            (delta.bids if side == Side.BUY else delta.asks).append((price, size))
            if size:
                kept.append(BookLevel(market=self.market, side=BOOK_SIDE[side], price=price, size=size))
            else:
                removed |= Q(side=BOOK_SIDE[side], price=price)
        if removed:
            BookLevel.objects.filter(removed, market=self.market).delete()
        BookLevel.objects.bulk_create(
            kept, update_conflicts=True, unique_fields=["market", "side", "price"], update_fields=["size"]
        )
        delta.bids.sort(reverse=True)
        delta.asks.sort()
        state.sequence = delta.sequence
        return delta

    def drain(self) -> list[BatchResult]:
        """Run batches until the queue is empty."""
        results = []
        while (result := self.run_batch()) is not None:
            results.append(result)
        return results
