"""The exchange's invariants, checked against the committed database (``manage.py audit_ledger``).

Every asset is conserved (balances, the fee account included, equal what entered from outside);
no bucket is negative; every journal sums to zero per asset; each bucket of each balance equals the
sum of its ledger entries; each locked balance equals what holds it (its live orders' holds, and
what the apps above register with ``register_holds``: withdrawals awaiting payout, earn
subscriptions); each matcher batch's settlement journal moves exactly what its
fills say, and each trade has exactly its maker's and its taker's fill of its price and size, so every
trade is settled once; every trade and fill names existing rows, and each
order's filled size equals its fills; the book is not crossed and equals the resting orders; the
per-minute candles add up to the trades; and what the apps above register with ``register_check``
(each money movement record has its journal).
"""

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal
from itertools import groupby
from operator import itemgetter

from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from accounts.models import Account
from trading.batch_writer import settlement_reference
from trading.models import (AuditRun, Balance, BookLevel, Candle, Fill, LedgerEntry, LiveOrder, MatcherCommand, Order,
                            Side, Trade, Wallet)
from trading.backends import store
from trading.sql import ExactSum

Hold = tuple[int, int, str, Decimal]  # (account id, asset id, wallet, amount) that a locked bucket must cover
HOLD_SOURCES: list[Callable[[], Iterable[Hold]]] = []
CHECKS: list[Callable[[], list[str]]] = []


def register_holds(source: Callable[[], Iterable[Hold]]) -> Callable[[], Iterable[Hold]]:
    """Count what ``source`` yields as held in the locked buckets it names; apps above trading (which
    trading cannot import) register theirs when they are ready."""
    HOLD_SOURCES.append(source)
    return source


def register_check(check: Callable[[], list[str]]) -> Callable[[], list[str]]:
    """Run ``check`` in the audit's snapshot and report the problem sentences it returns; apps above
    trading register theirs when they are ready."""
    CHECKS.append(check)
    return check


@register_holds
def order_holds() -> Iterable[Hold]:
    for order in Order.objects.filter(status__in=Order.LIVE_STATUSES).only("account", "hold_asset", "hold_remaining"):
        yield order.account_id, order.hold_asset_id, Wallet.SPOT, order.hold_remaining


def audit() -> list[str]:
    """Every violated invariant, as a sentence; an empty list when the books balance. Read in one
    snapshot: a batch committing while the audit reads must not look like a broken invariant."""
    with store().snapshot():
        return audit_snapshot()


# The rows an audit run reports having read, counted in its snapshot.
COUNTED = {"ledger_entries": LedgerEntry, "balances": Balance, "orders": Order, "trades": Trade,
           "pending_commands": MatcherCommand}


def run_audit(trigger: str, started_by: str = "") -> AuditRun:
    """Audit as ``audit()`` does, while trading goes on, and keep the result (``AuditRun``), written
    after the snapshot has ended."""
    started_at, clock = timezone.now(), time.monotonic()
    with store().snapshot():
        counts = {name: model.objects.count() for name, model in COUNTED.items()}
        problems = audit_snapshot()
    return AuditRun.objects.create(
        trigger=trigger, started_by=started_by, started_at=started_at,
        duration=timedelta(seconds=time.monotonic() - clock), clean=not problems, problem_count=len(problems),
        problems=problems[:AuditRun.KEPT_PROBLEMS], counts=counts)


def audit_snapshot() -> list[str]:
    problems: list[str] = []
    entered = defaultdict(Decimal)
    journals = defaultdict(Decimal)
    settled = defaultdict(Decimal)
    buckets = defaultdict(Decimal)
    for journal, account_id, asset_id, wallet, bucket, amount, reference in LedgerEntry.objects.values_list(
        "journal", "account", "asset", "wallet", "bucket", "amount", "reference"
    ).iterator(chunk_size=5000):
        journals[(journal, asset_id)] += amount
        if bucket == LedgerEntry.Bucket.EXTERNAL:
            entered[asset_id] -= amount
        else:
            buckets[(account_id, asset_id, wallet, bucket)] += amount
        if reference.startswith("settlement:"):
            settled[(reference, account_id, asset_id)] += amount
    problems += [f"journal {j} does not sum to zero for asset {a}" for (j, a), total in journals.items() if total]

    held = defaultdict(Decimal)
    holds = defaultdict(Decimal)
    for source in HOLD_SOURCES:
        for account_id, asset_id, wallet, amount in source():
            holds[(account_id, asset_id, wallet)] += amount
    for balance in Balance.objects.iterator(chunk_size=5000):
        held[balance.asset_id] += balance.available + balance.locked
        if balance.available < 0 or balance.locked < 0:
            problems.append(f"negative balance {balance}")
        for bucket in (LedgerEntry.Bucket.AVAILABLE, LedgerEntry.Bucket.LOCKED):
            entries = buckets.pop((balance.account_id, balance.asset_id, balance.wallet, bucket), Decimal(0))
            if getattr(balance, bucket) != entries:
                problems.append(f"{balance}: {bucket} {getattr(balance, bucket)} but its entries add to {entries}")
        if balance.locked != holds.pop((balance.account_id, balance.asset_id, balance.wallet), Decimal(0)):
            problems.append(f"{balance}: locked {balance.locked} is not what its orders, withdrawals and "
                            "subscriptions hold")
    problems += [f"holds {total} of account {a} asset {s} {w} have no balance"
                 for (a, s, w), total in holds.items() if total]
    problems += [f"entries of account {a} asset {s} {w} {b} add to {total} but there is no balance"
                 for (a, s, w, b), total in buckets.items() if total]
    for asset_id in set(entered) | set(held):
        if entered[asset_id] != held[asset_id]:
            problems.append(f"asset {asset_id}: {held[asset_id]} held but {entered[asset_id]} entered")

    problems += settlement_problems(settled)

    problems += dangling_keys()
    problems += trade_problems()
    filled = defaultdict(Decimal)
    for order_id, size in Fill.objects.values_list("order", "size").iterator(chunk_size=5000):
        filled[order_id] += size
    resting = defaultdict(Decimal)
    listed = dict(LiveOrder.objects.values_list("order", "market"))
    for order in Order.objects.iterator(chunk_size=5000):
        if order.filled_size != filled[order.pk]:
            problems.append(f"order {order.pk}: filled {order.filled_size} but its fills add to {filled[order.pk]}")
        if order.is_live != (listed.pop(order.pk, None) == order.market_id):
            problems.append(f"order {order.pk} is {order.status} but {'not ' * order.is_live}listed as live")
        if not order.is_live and order.hold_remaining:
            problems.append(f"order {order.pk} is {order.status} but still holds {order.hold_remaining}")
        if order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED):
            resting[(order.market_id, "bid" if order.side == "buy" else "ask", order.price)] += order.remaining_size
    levels = {(m, side, price): size for m, side, price, size in BookLevel.objects.values_list("market", "side", "price", "size")}
    problems += [f"live order {order_id} does not exist" for order_id in listed]
    if levels != dict(resting):
        problems.append("the book levels are not the resting orders")
    for market_id in {m for m, _, _ in levels}:
        bids = [p for (m, side, p) in levels if m == market_id and side == "bid"]
        asks = [p for (m, side, p) in levels if m == market_id and side == "ask"]
        if bids and asks and max(bids) >= min(asks):
            problems.append(f"market {market_id}: the book is crossed")
    for check in CHECKS:
        problems += check()
    return problems + candle_problems()


def candle_problems() -> list[str]:
    """Each market's candles add up to its trades, and each candle's prices are within its range."""
    traded = {market_id: (count, volume, quote) for market_id, count, volume, quote in
              Trade.objects.values("market").annotate(n=Count("id"), v=ExactSum("size"), q=ExactSum("quote_amount"))
              .values_list("market", "n", "v", "q")}
    candled = {market_id: (count, volume, quote) for market_id, count, volume, quote in
               Candle.objects.values("market").annotate(n=Sum("trades"), v=ExactSum("volume"), q=ExactSum("quote_volume"))
               .values_list("market", "n", "v", "q")}
    problems = [f"market {market_id}: candles count {candled.get(market_id)} but the trades {traded.get(market_id)}"
                for market_id in set(traded) | set(candled) if traded.get(market_id) != candled.get(market_id)]
    outside = Candle.objects.filter(Q(open__gt=F("high")) | Q(open__lt=F("low")) | Q(close__gt=F("high"))
                                    | Q(close__lt=F("low")))
    return problems + [f"candle {pk}: open or close outside its high and low" for pk in outside.values_list("pk", flat=True)]


def dangling_keys() -> list[str]:
    """Trades and fills name their rows without a database constraint (see trading.models)."""
    problems = []
    for model, keys in ((Trade, ("market", "maker_order", "taker_order")),
                        (Fill, ("trade", "order", "account", "market", "fee_asset"))):
        for name in keys:
            target = model._meta.get_field(name).related_model
            dangling = model.objects.exclude(**{f"{name}_id__in": target.objects.values("pk")})
            problems += [f"{model._meta.model_name} {pk} names no existing {name}" for pk in dangling.values_list("pk", flat=True)]
    return problems


def trade_problems() -> list[str]:
    """Each trade was settled once: one fill of its maker order and one of its taker order, each of the
    trade's price and size (settlement_problems holds the ledger to the fills), and its quote amount is
    price x size. Trades and fills are read in trade order side by side, a trade's fills at a time."""
    fills = groupby(Fill.objects.order_by("trade_id").values_list("trade", "liquidity", "order", "price", "size")
                    .iterator(chunk_size=5000), key=itemgetter(0))
    group = next(fills, None)
    problems = []
    for trade_id, maker_id, taker_id, price, size, quote in Trade.objects.order_by("pk").values_list(
        "pk", "maker_order", "taker_order", "price", "size", "quote_amount",
    ).iterator(chunk_size=5000):
        while group is not None and group[0] < trade_id:  # fills of no trade: dangling_keys names them
            group = next(fills, None)
        own = []
        if group is not None and group[0] == trade_id:
            own = sorted(group[1])
            group = next(fills, None)
        if own != [(trade_id, Fill.Liquidity.MAKER, maker_id, price, size),
                   (trade_id, Fill.Liquidity.TAKER, taker_id, price, size)]:
            problems.append(f"trade {trade_id}: its fills are not one of its maker's and one of its taker's, of its "
                            f"price and size ({len(own)} fills)")
        if quote != price * size:
            problems.append(f"trade {trade_id}: quote amount {quote} is not price x size")
    return problems


def settlement_problems(settled: dict[tuple[str, int, int], Decimal]) -> list[str]:
    """Compare what each settlement journal moved per account and asset (buckets together) with what
    its batch's fills say: the buyer gets the size less its fee and pays price x size, the seller
    the reverse, and the fee account gets both fees."""
    fee_account_id = Account.objects.filter(kind=Account.Kind.FEE).values_list("pk", flat=True).first()
    expected = defaultdict(Decimal)
    for account_id, side, price, size, fee, fee_asset_id, batch, pair, base_id, quote_id in Fill.objects.values_list(
        "account", "side", "price", "size", "fee", "fee_asset", "trade__batch", "market__pair", "market__base",
        "market__quote",
    ).iterator(chunk_size=5000):
        reference, quote = settlement_reference(pair, batch), price * size
        base_change, quote_change = (size - fee, -quote) if side == Side.BUY else (-size, quote - fee)
        expected[(reference, account_id, base_id)] += base_change
        expected[(reference, account_id, quote_id)] += quote_change
        expected[(reference, fee_account_id, fee_asset_id)] += fee
    problems = []
    for key in sorted(set(settled) | set(expected)):
        if settled.get(key, 0) != expected.get(key, 0):
            reference, account_id, asset_id = key
            problems.append(f"{reference}: account {account_id} asset {asset_id} moved {settled.get(key, 0)} "
                            f"but its fills say {expected.get(key, 0)}")
    return problems
