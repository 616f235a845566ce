"""The exchange's invariants, checked against the committed database (``manage.py audit_ledger``).

Every asset is conserved (balances, the fee account included, equal what entered from outside);
no bucket is negative; every journal sums to zero per asset; each account's locked balance equals
the holds of its live orders; each trade is settled by exactly one journal; each order's filled
size equals its fills; the book is not crossed and equals the resting orders.
"""

from collections import defaultdict
from decimal import Decimal

from trading.models import Balance, BookLevel, Fill, LedgerEntry, Order, Trade


def audit() -> list[str]:
    """Every violated invariant, as a sentence; an empty list when the books balance."""
    problems: list[str] = []
    entered = defaultdict(Decimal)
    journals = defaultdict(Decimal)
    trade_journals = defaultdict(set)
    for journal, asset_id, bucket, amount, reference in LedgerEntry.objects.values_list(
        "journal", "asset", "bucket", "amount", "reference"
    ).iterator(chunk_size=5000):
        journals[(journal, asset_id)] += amount
        if bucket == LedgerEntry.Bucket.EXTERNAL:
            entered[asset_id] -= amount
        if reference.startswith("trade:"):
            trade_journals[reference].add(journal)
    problems += [f"journal {j} does not sum to zero for asset {a}" for (j, a), total in journals.items() if total]

    held = defaultdict(Decimal)
    holds = defaultdict(Decimal)
    for order in Order.objects.filter(status__in=Order.LIVE_STATUSES).only("account", "hold_asset", "hold_remaining"):
        holds[(order.account_id, order.hold_asset_id)] += order.hold_remaining
    for balance in Balance.objects.iterator(chunk_size=5000):
        held[balance.asset_id] += balance.available + balance.locked
        if balance.available < 0 or balance.locked < 0:
            problems.append(f"negative balance {balance}")
        if balance.locked != holds.pop((balance.account_id, balance.asset_id), Decimal(0)):
            problems.append(f"{balance}: locked {balance.locked} is not the holds of its live orders")
    problems += [f"holds {total} of account {a} asset {s} have no balance" for (a, s), total in holds.items() if total]
    for asset_id in set(entered) | set(held):
        if entered[asset_id] != held[asset_id]:
            problems.append(f"asset {asset_id}: {held[asset_id]} held but {entered[asset_id]} entered")

    for trade_id in Trade.objects.values_list("pk", flat=True).iterator(chunk_size=5000):
        if len(trade_journals.pop(f"trade:{trade_id}", ())) != 1:
            problems.append(f"trade {trade_id} is not settled by exactly one journal")
    problems += [f"{reference} settles no trade" for reference in trade_journals]

    filled = defaultdict(Decimal)
    for order_id, size in Fill.objects.values_list("order", "size").iterator(chunk_size=5000):
        filled[order_id] += size
    resting = defaultdict(Decimal)
    for order in Order.objects.iterator(chunk_size=5000):
        if order.filled_size != filled[order.pk]:
            problems.append(f"order {order.pk}: filled {order.filled_size} but its fills add to {filled[order.pk]}")
        if not order.is_live and order.hold_remaining:
            problems.append(f"order {order.pk} is {order.status} but still holds {order.hold_remaining}")
        if order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED):
            resting[(order.market_id, "bid" if order.side == "buy" else "ask", order.price)] += order.remaining_size
    levels = {(m, side, price): size for m, side, price, size in BookLevel.objects.values_list("market", "side", "price", "size")}
    if levels != dict(resting):
        problems.append("the book levels are not the resting orders")
    for market_id in {m for m, _, _ in levels}:
        bids = [p for (m, side, p) in levels if m == market_id and side == "bid"]
        asks = [p for (m, side, p) in levels if m == market_id and side == "ask"]
        if bids and asks and max(bids) >= min(asks):
            problems.append(f"market {market_id}: the book is crossed")
    return problems
