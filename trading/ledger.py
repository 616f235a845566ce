"""The double-entry ledger: the only code that changes a Balance.

A journal is a set of postings that sums to zero per asset. Applying journals locks the touched
balance rows in primary-key order (no deadlocks between two writers), refuses the whole call if any
bucket would go below zero, then updates each balance once and writes one LedgerEntry per posting,
all in one transaction: either everything is applied or nothing is. ``hold_funds``, an order's hold
on one balance, does the same with one conditional update. Balances change only by adding in SQL
(``adding_statement``), never by writing a value computed in Python.
"""

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from exchange.errors import InsufficientFunds, InvalidRequest
from exchange.money import AMOUNT_LIMIT, EXACT
from trading.models import Asset, Balance, LedgerEntry, Wallet
from trading.backends import store
from trading.sql import Statement

Bucket = LedgerEntry.Bucket
Reason = LedgerEntry.Reason
BALANCE_KEY_FIELDS = ["account", "asset", "wallet"]  # a BalanceKey's fields
LEDGER_FIELDS = ["journal", "account", "asset", "wallet", "bucket", "amount", "reason", "reference", "memo",
                 "created_at"]


class UnbalancedJournal(ValueError):
    """A programming error: the postings of a journal must sum to zero per asset."""


@dataclass(frozen=True)
class Posting:
    account_id: int | None  # None: the outside world (deposits, withdrawals, adjustments)
    asset_id: int
    amount: Decimal
    bucket: str
    wallet: str = Wallet.SPOT
    reason: str | None = None  # the journal's, unless this line is of another kind (a batch's fees)


@dataclass(frozen=True)
class Journal:
    reason: str
    reference: str
    postings: Sequence[Posting]
    memo: str = ""
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def check_journal(journal: Journal) -> None:
    if not journal.postings:
        raise UnbalancedJournal(f"journal {journal.reference} has no postings")
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for posting in journal.postings:
        if not isinstance(posting.amount, Decimal) or not posting.amount.is_finite() or posting.amount == 0:
            raise UnbalancedJournal(f"posting amount must be a finite, non-zero Decimal: {posting.amount!r}")
        if (posting.bucket == Bucket.EXTERNAL) != (posting.account_id is None):
            raise UnbalancedJournal("only the external bucket has no account, and it never has one")
        totals[posting.asset_id] = EXACT.add(totals[posting.asset_id], posting.amount)
    unbalanced = {asset_id: total for asset_id, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedJournal(f"journal {journal.reference} does not sum to zero: {unbalanced}")


REFERENCE_LENGTH = LedgerEntry._meta.get_field("reference").max_length
MEMO_LENGTH = LedgerEntry._meta.get_field("memo").max_length

BalanceKey = tuple[int, int, str]  # (account_id, asset_id, wallet)


def net_changes(journals: Iterable[Journal]) -> dict[BalanceKey, list[Decimal]]:
    """Sum every posting into one [available, locked] change per balance row."""
    changes: dict[BalanceKey, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for journal in journals:
        for posting in journal.postings:
            if posting.account_id is None:
                continue
            change = changes[(posting.account_id, posting.asset_id, posting.wallet)]
            index = 0 if posting.bucket == Bucket.AVAILABLE else 1
            change[index] = EXACT.add(change[index], posting.amount)
    return changes


def missing_balances_statement(keys: list[BalanceKey]) -> Statement:
    """Create the balance rows of ``keys`` that do not exist yet, at zero."""
    return store().upsert_statement(Balance, [*BALANCE_KEY_FIELDS, "available", "locked"],
                                    [(*key, 0, 0) for key in keys], unique=BALANCE_KEY_FIELDS, update=[])


def entries_statement(journals: Sequence[Journal]) -> Statement:
    """Insert one ledger entry per posting of the journals."""
    now = timezone.now()
    return store().insert_statement(LedgerEntry, LEDGER_FIELDS, [
        (journal.id, posting.account_id, posting.asset_id, posting.wallet, posting.bucket, posting.amount,
         posting.reason or journal.reason, journal.reference, journal.memo, now)
        for journal in journals
        for posting in journal.postings
    ])


def lock_balances(keys: Iterable[BalanceKey]) -> dict[BalanceKey, Balance]:
    """Create missing balance rows, then lock all of them in primary-key order."""
    keys = sorted(keys)
    if not keys:
        return {}
    store().execute([missing_balances_statement(keys)])
    rows = store().lock_rows(Balance, BALANCE_KEY_FIELDS, keys)
    return {(row.account_id, row.asset_id, row.wallet): row for row in rows}


def refuse_shortfalls(shortfalls: list[tuple[Balance, str, Decimal]]) -> None:
    symbols = dict(Asset.objects.filter(pk__in={row.asset_id for row, _, _ in shortfalls}).values_list("pk", "symbol"))
    missing = [
        {"asset": symbols[row.asset_id], "wallet": row.wallet, "bucket": bucket, "missing": format(-value.normalize(), "f")}
        for row, bucket, value in shortfalls
    ]
    raise InsufficientFunds(missing)


def adding_statement(changes: list[tuple[BalanceKey, list[Decimal]]]) -> Statement:
    """Add each [available, locked] change to its balance row."""
    return store().update_statement(Balance, ["available", "locked"], [(*key, *change) for key, change in changes],
                                    key=BALANCE_KEY_FIELDS, add=True)


def apply_journals(journals: Sequence[Journal]) -> None:
    """Apply balanced journals atomically; raise INSUFFICIENT_FUNDS, writing nothing, if any bucket would go
    negative, and INVALID_REQUEST if one would pass what a balance column holds (only money from outside
    can: a deposit, an operator's adjustment)."""
    if not journals:
        return
    for journal in journals:
        check_journal(journal)
    changes = sorted(net_changes(journals).items())
    with transaction.atomic():
        balances = lock_balances(key for key, _ in changes)
        shortfalls = []
        for key, (available_change, locked_change) in changes:
            row = balances[key]
            for bucket, value in (("available", EXACT.add(row.available, available_change)),
                                  ("locked", EXACT.add(row.locked, locked_change))):
                if value < 0:
                    shortfalls.append((row, bucket, value))
                elif value >= AMOUNT_LIMIT:
                    raise InvalidRequest(f"A balance would reach {AMOUNT_LIMIT:f}, more than the ledger holds; "
                                         "nothing was written.")
        if shortfalls:
            refuse_shortfalls(shortfalls)
        store().execute([adding_statement(changes), entries_statement(journals)])


def journal_statements(journal: Journal) -> list[Statement]:
    """``apply_journals([journal])`` as statements that need no answer, for a pipeline: create missing
    rows, lock the rows in primary-key order, add each net change, insert the entries. A bucket that
    would go negative fails the balance table's CHECK constraint instead of raising INSUFFICIENT_FUNDS:
    for writers whose holds already cover every debit (the matcher's settlements), where a shortfall
    is a bug."""
    check_journal(journal)
    changes = sorted(net_changes([journal]).items())
    keys = [key for key, _ in changes]
    return [
        missing_balances_statement(keys),
        store().lock_statement(Balance, BALANCE_KEY_FIELDS, keys),
        adding_statement(changes),
        entries_statement([journal]),
    ]


def apply_journal(journal: Journal) -> None:
    apply_journals([journal])


def bucket_transfer(
    account_id: int, asset_id: int, amount: Decimal, *, source: str, target: str, reason: str, reference: str
) -> Journal:
    """Move an amount between two buckets of one account's balance: an order's hold, or its release."""
    return Journal(
        reason=reason,
        reference=reference,
        postings=[Posting(account_id, asset_id, -amount, source), Posting(account_id, asset_id, amount, target)],
    )


def hold_funds(account_id: int, asset_id: int, amount: Decimal, *, reference: str) -> None:
    """Move ``amount`` of an account's spot balance from available to locked: an order's hold.

    Raises INSUFFICIENT_FUNDS, writing nothing, when the available balance is short. One statement
    updates the row only if it can pay (the row lock makes concurrent holds queue and re-check), and
    the journal's two entries are written only if it did: where ``apply_journal`` takes four
    statements (create missing rows, lock, update, insert), every order pays for this one.
    """
    if not store().hold(*hold_statement(account_id, asset_id, amount, reference=reference)):
        refuse_hold(account_id, asset_id, amount)


def hold_statement(account_id: int, asset_id: int, amount: Decimal, *, reference: str) -> tuple[str, list, Statement]:
    """hold_funds's statement, for Store.hold: the conditional balance update (its SQL and parameters),
    and the journal's entries."""
    journal = bucket_transfer(account_id, asset_id, amount, source=Bucket.AVAILABLE, target=Bucket.LOCKED,
                              reason=Reason.ORDER_HOLD, reference=reference)
    check_journal(journal)
    add, as_amount = store().add, Balance._meta.get_field("available").get_db_prep_save
    update = (f"UPDATE trading_balance SET available = {add('available', '%s')}, locked = {add('locked', '%s')} "
              "WHERE account_id = %s AND asset_id = %s AND wallet = %s AND available >= %s")
    params = [as_amount(-amount, connection), as_amount(amount, connection), account_id, asset_id, Wallet.SPOT,
              as_amount(amount, connection)]
    return update, params, entries_statement([journal])


def refuse_hold(account_id: int, asset_id: int, amount: Decimal) -> None:
    """The INSUFFICIENT_FUNDS of a hold whose statement changed nothing."""
    row = Balance.objects.filter(account_id=account_id, asset_id=asset_id, wallet=Wallet.SPOT).first()
    available = row.available if row else Decimal(0)
    refuse_shortfalls([(row or Balance(account_id=account_id, asset_id=asset_id), Bucket.AVAILABLE,
                        EXACT.subtract(available, amount))])


def adjust_balance(
    *, account_id: int, asset_id: int, amount: Decimal, reference: str, memo: str, wallet: str = Wallet.SPOT,
    reason: str = Reason.ADJUSTMENT,
) -> None:
    """Credit (amount > 0) or debit (amount < 0) an account's available balance against the outside world."""
    apply_journal(
        Journal(
            reason=reason,
            reference=reference,
            memo=memo,
            postings=[
                Posting(account_id, asset_id, amount, Bucket.AVAILABLE, wallet),
                Posting(None, asset_id, -amount, Bucket.EXTERNAL, wallet),
            ],
        )
    )
