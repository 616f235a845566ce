"""Deposits: money from the outside world, credited to an account's spot wallet.

An operator credits one in the admin, a custody system's script with ``manage.py credit_deposit``;
both come here. The Deposit row and its ledger journal (the account's spot available credited, the
outside world debited, reference ``deposit:<id>``) are written in one transaction. The external
transaction id is unique per asset, so crediting the same transaction twice is refused and writes
nothing, even when two credits race (the database's unique constraint decides).
"""

from collections.abc import Iterable
from decimal import Decimal

from django.db import IntegrityError, transaction

from accounts.models import Account
from exchange.errors import InvalidRequest
from exchange.money import AMOUNT_LIMIT
from trading import ledger
from trading.models import Asset, LedgerEntry
from trading.signals import announce_balances
from wallets.audit import RecordJournal, record_journal
from wallets.models import AssetWalletSettings, Deposit


EXTERNAL_ID_LENGTH = Deposit._meta.get_field("external_id").max_length
CREDITED_BY_LENGTH = Deposit._meta.get_field("credited_by").max_length


class DepositRefused(Exception):
    """A deposit that cannot be credited; the message says why, for the operator or the script."""


class DepositAlreadyCredited(DepositRefused):
    def __init__(self, deposit: Deposit):
        super().__init__(f"{deposit.asset.symbol} transaction {deposit.external_id!r} was already credited "
                         f"(deposit {deposit.pk}); nothing was written.")
        self.deposit = deposit


def check_amount(asset: Asset, amount: Decimal) -> None:
    if not amount.is_finite() or amount <= 0:
        raise DepositRefused("The amount must be greater than zero.")
    if amount.normalize().as_tuple().exponent < -asset.precision:
        raise DepositRefused(f"At most {asset.precision} decimal places for {asset.symbol}.")
    if amount >= AMOUNT_LIMIT:
        raise DepositRefused(f"The amount must be less than {AMOUNT_LIMIT:f}: a balance holds no more.")


def check_external_id(external_id: str) -> None:
    if not external_id or external_id != external_id.strip() or len(external_id) > EXTERNAL_ID_LENGTH:
        raise DepositRefused(f"The external id must be 1 to {EXTERNAL_ID_LENGTH} characters, "
                             "with no surrounding spaces.")


def credit_deposit(account: Account, asset: Asset, amount: Decimal, external_id: str, credited_by: str) -> Deposit:
    """Credit ``amount`` of ``asset`` to the account's spot wallet; raise DepositRefused, writing
    nothing, for a bad amount or a transaction already credited."""
    check_amount(asset, amount)
    if not AssetWalletSettings.of(asset).deposit_enabled:
        raise DepositRefused(f"Deposits of {asset.symbol} are disabled in its wallet settings; nothing was written.")
    check_external_id(external_id)
    if not 0 < len(credited_by) <= CREDITED_BY_LENGTH:
        raise DepositRefused(f"Who credits it is named in 1 to {CREDITED_BY_LENGTH} characters.")
    try:
        with transaction.atomic():
            deposit = Deposit.objects.create(account=account, asset=asset, amount=amount, external_id=external_id,
                                             credited_by=credited_by)
            ledger.apply_journal(deposit_journal(deposit))
            announce_balances(account.pk)
    except InvalidRequest as error:  # the balance would pass what the ledger holds
        raise DepositRefused(error.message) from None
    except IntegrityError:
        earlier = Deposit.objects.filter(asset=asset, external_id=external_id).select_related("asset").first()
        if earlier is None:
            raise
        raise DepositAlreadyCredited(earlier) from None
    return deposit


def deposit_journal(deposit: Deposit) -> ledger.Journal:
    """The account's spot available credited, the outside world debited."""
    return ledger.Journal(
        reason=LedgerEntry.Reason.DEPOSIT,
        reference=f"deposit:{deposit.pk}",
        memo=f"tx {deposit.external_id}",
        postings=[ledger.Posting(deposit.account_id, deposit.asset_id, deposit.amount, ledger.Bucket.AVAILABLE),
                  ledger.Posting(None, deposit.asset_id, -deposit.amount, ledger.Bucket.EXTERNAL)],
    )


def deposit_journals() -> Iterable[RecordJournal]:
    """Each deposit's journal (wallets.audit)."""
    for deposit in Deposit.objects.only("account", "asset", "amount", "external_id").order_by("pk").iterator(
            chunk_size=5000):
        yield record_journal(f"deposit {deposit.pk}", [deposit_journal(deposit)])
