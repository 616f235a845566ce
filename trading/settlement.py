"""A batch's engine events as order states, trade and fill rows and ledger postings: pure, no database.

Events and fee rates go in; the changed orders, the trades with their fills, and one settlement
journal holding each account's net change per asset, bucket and kind over the batch (lines of kind
``trade``, ``fee`` (to the fee account) and ``order_release`` (unused holds)) come out. A batch of hundreds of trades posts tens of ledger
lines, not thousands: its fills are the per-trade detail, and ``trading.audit`` checks every
settlement against them.
"""

import logging
from collections import defaultdict
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from exchange.money import DECIMAL_PLACES, EXACT
from trading.engine_impl import engine
from trading.ledger import Bucket, Journal, Posting, Reason
from trading.models import Fill, Order, Side

logger = logging.getLogger(__name__)

FEE_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
AVAILABLE, LOCKED, FEE, TRADE = Bucket.AVAILABLE, Bucket.LOCKED, Reason.FEE, Reason.TRADE
# Plain strings to compare sides with on the per-trade and per-level paths: a str compared with a TextChoices member
# takes seven times as long.
BUY, SELL = Side.BUY.value, Side.SELL.value
ZERO = Decimal(0)
CLOSING_STATUS = {
    engine.Filled: Order.Status.FILLED,
    engine.Cancelled: Order.Status.CANCELLED,
    engine.Expired: Order.Status.EXPIRED,
    engine.Rejected: Order.Status.REJECTED,
}


def to_units(value: Decimal, step: Decimal) -> int:
    """An exact multiple of ``step`` as an integer count (validation put every value on its grid)."""
    units, rest = EXACT.divmod(value, step)
    if rest:
        raise ValueError(f"{value} is not a multiple of {step}")
    return int(units)


def limit_hold(side: str, price: Decimal, size: Decimal) -> Decimal:
    """What an order of ``size`` at limit ``price`` holds: the size for a sell, what it may spend for a buy."""
    return size if side == Side.SELL else price * size


def plain_resting(side: str, price: Decimal, left: Decimal, status: str, filled: Decimal, executed_value: Decimal,
                  fee: Decimal, hold: Decimal) -> bool:
    """Whether an order resting at ``price`` with ``left`` to fill is exactly what ``WorkingOrder.resting``
    rebuilds from the book (unfilled, holding what its size needs): then the matcher need not keep it."""
    return (status == Order.Status.OPEN and not filled and not executed_value and not fee
            and hold == limit_hold(side, price, left))


def charge(amount: Decimal, rate: Decimal) -> Decimal:
    """A fee, rounded down: rounding may cost the exchange a fraction of a unit, never the trader."""
    return (amount * rate).quantize(FEE_QUANTUM, ROUND_DOWN)  # the rounding passed by keyword costs twice


@dataclass(slots=True, eq=False)
class WorkingOrder:
    """The matcher's copy of an order it is matching or holds on the book (a generated __init__: one
    is built per order read)."""

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
    trigger: str | None
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

    @classmethod
    def resting(cls, order_id: int, account_id: int, side: str, price: Decimal, size: Decimal,
                hold_asset_id: int) -> "WorkingOrder":
        """An order resting on the book since before the batch, known from the book alone: unfilled, and
        holding exactly what its size needs at its price (the matcher keeps no copy of such an order:
        see ``plain_resting``). Its book priority stays as stored (None: not written); the fields that
        neither settlement nor the order's state read are a GTC limit order's."""
        return cls(order_id, account_id, side, Order.Type.LIMIT, price, size, None, None, None, Order.TimeInForce.GTC,
                   False, Order.SelfTradePrevention.CANCEL_OLDEST, None, Order.Status.OPEN, ZERO, ZERO, ZERO,
                   hold_asset_id, limit_hold(side, price, size), None)

    @property
    def limit_price(self) -> Decimal | None:
        """The price the engine sees: the limit, or the protection price of a market buy given by size."""
        return self.price if self.price is not None else self.protection_price

    def state(self, now: datetime) -> tuple:
        """The order's matched state: WRITTEN_ORDER_FIELDS' values."""
        return (self.status, self.filled_size, self.executed_value, self.fee, self.hold_remaining,
                self.book_priority, self.done_at, self.reject_reason, self.cancel_reason, now)


# The order columns the matcher reads (WorkingOrder's fields the database fills), and those it writes back.
ORDER_FIELDS = tuple(item.name for item in fields(WorkingOrder) if item.default is MISSING)
WRITTEN_ORDER_FIELDS = ["status", "filled_size", "executed_value", "fee", "hold_remaining", "book_priority",
                        "done_at", "reject_reason", "cancel_reason", "updated_at"]


class SettledTrade(NamedTuple):
    maker: WorkingOrder
    taker: WorkingOrder
    price: Decimal
    size: Decimal
    quote: Decimal
    taker_side: str
    buyer_fee: Decimal
    seller_fee: Decimal


class TradeRecord(NamedTuple):
    """A committed trade, as the publisher needs it."""

    pk: int
    price: Decimal
    size: Decimal
    taker_side: str
    executed_at: datetime


@dataclass
class Settlement:
    """Settles one batch's events against the orders they name (``orders``: the matcher's working
    copies, and the plain resting orders it rebuilt from the book for this batch)."""

    market: object  # a Market: its grids, its assets, its pair
    orders: dict[int, WorkingOrder]
    fee_account_id: int
    fee_rates: dict[int, tuple[Decimal, Decimal]]  # account id: (maker, taker)
    now: datetime
    priority: int  # the last book priority given
    trades: list[SettledTrade] = field(default_factory=list)
    # (account id, asset id, bucket, kind): the batch's net change, kept apart per kind (trade, fee,
    # order_release) so that the ledger shows each
    net: dict[tuple[int, int, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    changed: dict[int, WorkingOrder] = field(default_factory=dict)

    def apply(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is engine.Trade:
                self.settle_trade(event)
            elif kind is engine.Rested:
                order = self.touch(event.order_id)
                order.status = Order.Status.PARTIALLY_FILLED if order.filled_size else Order.Status.OPEN
                self.priority += 1
                order.book_priority = self.priority
            elif kind in CLOSING_STATUS:
                self.close(self.touch(event.order_id), CLOSING_STATUS[kind], getattr(event, "reason", ""))
            elif kind is engine.Untriggered:
                order = self.touch(event.order_id)
                order.status = Order.Status.UNTRIGGERED
                # The stops that one price fires trigger in the order the engine took them: kept for a rebuild.
                self.priority += 1
                order.book_priority = self.priority
            elif kind is engine.CancelRejected:
                order = self.orders.get(event.order_id)
                if order is not None and order.status in Order.LIVE_STATUSES:
                    logger.error("%s: engine does not hold live order %s", self.market.pair, order.id)
            # engine.Triggered needs no row change: the events of the triggered order follow it.

    def touch(self, order_id: int) -> WorkingOrder:
        order = self.orders[order_id]
        self.changed[order_id] = order
        return order

    def post(self, account_id: int, asset_id: int, bucket: str, amount: Decimal, kind: str = Reason.TRADE) -> None:
        self.net[(account_id, asset_id, bucket, kind)] += amount

    def close(self, order: WorkingOrder, status: str, reason: str) -> None:
        order.status = status
        order.done_at = self.now
        if status == Order.Status.REJECTED:
            order.reject_reason = reason
        elif status == Order.Status.CANCELLED:
            order.cancel_reason = reason  # 'user' or 'self_trade'
        if order.hold_remaining:
            self.release(order.account_id, order.hold_asset_id, order.hold_remaining)
            order.hold_remaining = Decimal(0)

    def settle_trade(self, event: engine.Trade) -> None:
        market, fee_account_id = self.market, self.fee_account_id
        maker, taker = self.touch(event.maker_order_id), self.touch(event.taker_order_id)
        price, size = event.price * market.tick_size, event.size * market.lot_size
        quote = price * size
        buyer, seller = (taker, maker) if event.taker_side == BUY else (maker, taker)
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
        self.trades.append(SettledTrade(maker, taker, price, size, quote, event.taker_side, buyer_fee, seller_fee))

        # Added in place: a call of post() for each of the ten cost more than the additions (docs/performance.md).
        base, quote_asset, net = market.base_id, market.quote_id, self.net
        buyer_id, seller_id = buyer.account_id, seller.account_id
        net[(seller_id, base, LOCKED, TRADE)] -= size
        net[(buyer_id, base, AVAILABLE, TRADE)] += size
        net[(buyer_id, quote_asset, LOCKED, TRADE)] -= quote
        net[(seller_id, quote_asset, AVAILABLE, TRADE)] += quote
        net[(buyer_id, base, AVAILABLE, FEE)] -= buyer_fee
        net[(fee_account_id, base, AVAILABLE, FEE)] += buyer_fee
        net[(seller_id, quote_asset, AVAILABLE, FEE)] -= seller_fee
        net[(fee_account_id, quote_asset, AVAILABLE, FEE)] += seller_fee
        if buyer_hold_used != quote:  # bought below its limit
            self.release(buyer_id, quote_asset, buyer_hold_used - quote)

    def release(self, account_id: int, asset_id: int, amount: Decimal) -> None:
        self.post(account_id, asset_id, Bucket.LOCKED, -amount, Reason.ORDER_RELEASE)
        self.post(account_id, asset_id, Bucket.AVAILABLE, amount, Reason.ORDER_RELEASE)

    def fee_rate(self, order: WorkingOrder, taker: WorkingOrder) -> Decimal:
        maker_rate, taker_rate = self.fee_rates[order.account_id]
        return taker_rate if order is taker else maker_rate

    def journal(self, reference: str) -> Journal | None:
        postings = [Posting(account_id, asset_id, amount, bucket, reason=kind)
                    for (account_id, asset_id, bucket, kind), amount in sorted(self.net.items()) if amount]
        return Journal(reason=Reason.TRADE, reference=reference, postings=postings) if postings else None

    def trade_rows(self, trade_ids: list[int], fill_ids: list[int]
                   ) -> tuple[list[tuple], list[tuple], list[TradeRecord]]:
        """The trade rows (``trade_ids``, one per trade; batch_writer.TRADE_FIELDS) and both fill rows of
        each (``fill_ids``, two per trade; FILL_FIELDS; a fill's fee is in the asset it receives), and the
        trades for publishing."""
        market, now = self.market, self.now
        fill_ids = iter(fill_ids)
        fee_assets = {side: market.fee_asset_id(side) for side in Side}
        trade_rows, fill_rows, records = [], [], []
        for trade_id, trade in zip(trade_ids, self.trades):
            maker, taker, price, size, quote, taker_side, buyer_fee, seller_fee = trade
            trade_rows.append((trade_id, price, size, quote, taker_side, maker.id, taker.id))
            records.append(TradeRecord(trade_id, price, size, taker_side, now))
            for order in (maker, taker):
                buys = order.side == BUY
                fill_rows.append((
                    next(fill_ids), trade_id, order.id, order.account_id, order.side,
                    Fill.Liquidity.TAKER if order is taker else Fill.Liquidity.MAKER, price, size,
                    buyer_fee if buys else seller_fee, fee_assets[order.side],
                ))
        return trade_rows, fill_rows, records
