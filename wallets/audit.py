"""Each money movement record has exactly the journal it should (a check of ``trading.audit``).

Deposits, transfers, withdrawals, earn subscriptions and interest accruals each write their ledger
entries under a reference of their own (``deposit:<id>``, ``withdrawal:<id>``...). Their modules
register a source (``register_journals``) that yields, for every record, the entries its state says
it wrote, built by the same functions that wrote them. ``journal_problems`` compares those with the
entries of the record kinds in the ledger, reference by reference: a record whose entries differ
(one missing, altered or extra) is named with the difference, and entries of those kinds under a
reference no record claims are named too. Kind ``transfer`` is shared by transfers and earn
subscriptions, so one check sees every source: apps above (earn) register theirs here.
"""

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from trading.ledger import Journal
from trading.models import LedgerEntry

Reason = LedgerEntry.Reason
# (account id, None for the outside world; asset id; wallet; bucket; amount; kind)
Line = tuple[int | None, int, str, str, Decimal, str]
# (the record as a problem names it, e.g. "withdrawal 12 (sent)"; the reference of its entries; their lines)
RecordJournal = tuple[str, str, list[Line]]
JOURNAL_SOURCES: list[Callable[[], Iterable[RecordJournal]]] = []
# The kinds only these records write: an entry of one of them belongs to a record.
RECORD_KINDS = [Reason.DEPOSIT, Reason.WITHDRAWAL, Reason.WITHDRAWAL_FEE, Reason.TRANSFER, Reason.INTEREST]


def register_journals(source: Callable[[], Iterable[RecordJournal]]) -> Callable[[], Iterable[RecordJournal]]:
    JOURNAL_SOURCES.append(source)
    return source


def record_journal(name: str, journals: Sequence[Journal], reference: str | None = None) -> RecordJournal:
    """What a record wrote: the lines of ``journals``, all under their first's reference (``reference``
    when it wrote none)."""
    lines = [(posting.account_id, posting.asset_id, posting.wallet, posting.bucket, posting.amount,
              posting.reason or journal.reason) for journal in journals for posting in journal.postings]
    return name, reference or journals[0].reference, lines


def described(lines: Counter) -> str:
    def line(account_id, asset_id, wallet, bucket, amount, kind) -> str:
        where = "the outside world" if account_id is None else f"account {account_id} {wallet} {bucket}"
        return f"{format(amount.normalize(), '+f')} {kind} of asset {asset_id} in {where}"

    return ", ".join(line(*key) for key in lines.elements()) or "none"  # in journal order, or the ledger's


def journal_problems() -> list[str]:
    found: dict[str, Counter] = defaultdict(Counter)
    for *line, reference in LedgerEntry.objects.filter(reason__in=RECORD_KINDS).order_by("pk").values_list(
            "account", "asset", "wallet", "bucket", "amount", "reason", "reference").iterator(chunk_size=5000):
        found[reference][tuple(line)] += 1
    problems = []
    for source in JOURNAL_SOURCES:
        for name, reference, lines in source():
            expected, entries = Counter(lines), found.pop(reference, Counter())
            if entries != expected:
                problems.append(f"{name}: under {reference}, missing: {described(expected - entries)}; "
                                f"unexpected: {described(entries - expected)}")
    return problems + [f"{reference}: {entries.total()} ledger entries of kind "
                       f"{'/'.join(sorted({kind for *_, kind in entries}))} and no record of them"
                       for reference, entries in found.items()]
