"""The ledger as an account holder reconciles with it: every change of their balances, each with the
balance of its bucket after it.

Entries are per bucket (``available`` or ``locked``) of one wallet's balance of one asset, and for one
balance their ids are in commit order: every writer locks the balance row before it inserts entries
for it (``trading.ledger``) and holds the lock until it commits. So nothing is stored for the
balance after an entry: it is the bucket's balance now less the entries of that bucket written after
it, read with the page in one snapshot:

- the page itself (by the index on (account, asset, id), or by id with the account as a filter);
- the balance rows of the page's assets;
- the sum of the entries of those assets newer than the page's newest entry, per (asset, wallet,
  bucket): one aggregate, done in the database, over the entries above the page;
- the entries of those assets within the page's span that the filters left out (a page of one kind
  skips the others, which still moved the balance): none when the filters are only asset and wallet.

A page costs what lies above it: the sum runs over every entry of its assets newer than the page, so
reading far back (page N of a busy account) costs N pages' worth of index entries, summed in the
database; a narrow filter (kind, time) adds the skipped entries between its rows. The balance after
is never rounded: amounts are summed exactly (``ExactSum``: SQLite stores them as text) and
subtracted in a context that traps any rounding.
"""

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal

from django.db.models import QuerySet

from exchange.money import EXACT
from trading.backends import store
from trading.models import Balance, LedgerEntry
from trading.sql import ExactSum

Reason = LedgerEntry.Reason
# The kind a client sees for each reason the ledger records: the same word, but for the legacy
# ``settlement`` (a batch's trades, fees and releases in one line, before the kinds were split),
# shown as ``trade``, and the sandbox's testnet money (``faucet``), shown as the ``deposit`` it is.
KIND_OF_REASON = {**{reason: reason for reason in Reason.values},
                  Reason.SETTLEMENT: Reason.TRADE, Reason.FAUCET: Reason.DEPOSIT}
KINDS = list(dict.fromkeys(KIND_OF_REASON.values()))
REASONS_OF_KIND = {kind: [reason for reason, of in KIND_OF_REASON.items() if of == kind] for kind in KINDS}

BucketKey = tuple[int, str, str]  # (asset id, wallet, bucket)


def entries_of(account) -> QuerySet:
    """The account's ledger entries, with what renders them (the asset's precision)."""
    return LedgerEntry.objects.filter(account=account).select_related("asset")


def page_with_balances_after(account, rows: QuerySet, paginate: Callable[[QuerySet], list]) -> list[LedgerEntry]:
    """``paginate(rows)``, the account's entries in either order, each with ``balance_after`` set, all
    read in one snapshot."""
    with store().snapshot():
        page = paginate(rows)
        set_balances_after(account, page)
    return page


def recent_entries(account, limit: int) -> list[LedgerEntry]:
    """The account's ``limit`` newest entries, each with ``balance_after``."""
    return page_with_balances_after(account, entries_of(account), lambda rows: list(rows.order_by("-id")[:limit]))


def set_balances_after(account, page: list[LedgerEntry]) -> None:
    """Set ``balance_after`` on each entry of ``page`` (the account's, in either order). Run it in the
    snapshot that read the page."""
    if not page:
        return
    newest, oldest = max(entry.pk for entry in page), min(entry.pk for entry in page)
    around = LedgerEntry.objects.filter(account=account, asset__in={entry.asset_id for entry in page},
                                        wallet__in={entry.wallet for entry in page})
    after: dict[BucketKey, Decimal] = defaultdict(Decimal)
    for balance in Balance.objects.filter(account=account, asset__in={entry.asset_id for entry in page}):
        after[(balance.asset_id, balance.wallet, LedgerEntry.Bucket.AVAILABLE)] = balance.available
        after[(balance.asset_id, balance.wallet, LedgerEntry.Bucket.LOCKED)] = balance.locked
    for later in around.filter(pk__gt=newest).values("asset", "wallet", "bucket").annotate(total=ExactSum("amount")):
        key = (later["asset"], later["wallet"], later["bucket"])
        after[key] = EXACT.subtract(after[key], later["total"])
    skipped = around.filter(pk__gt=oldest, pk__lt=newest).exclude(pk__in=[entry.pk for entry in page])
    walk = [(entry.pk, (entry.asset_id, entry.wallet, entry.bucket), entry.amount, entry) for entry in page]
    walk += [(pk, (asset, wallet, bucket), amount, None)
             for pk, asset, wallet, bucket, amount in skipped.values_list("pk", "asset", "wallet", "bucket", "amount")]
    walk.sort(key=lambda step: step[0], reverse=True)
    for _, key, amount, entry in walk:
        if entry is not None:
            entry.balance_after = after[key]
        after[key] = EXACT.subtract(after[key], amount)
