"""Transfers between an account's own wallets (spot, margin, earn), through the one ledger.

Orders trade from ``spot`` only; ``margin`` holds collateral (borrowing comes later) and ``earn``
what is subscribed to earn products. A transfer is a record and a journal of two postings (the
source wallet's available balance down, the target's up), written in one transaction: refused
with INSUFFICIENT_FUNDS, nothing is written.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from exchange.errors import DuplicateClientTransferId, InvalidField
from trading import ledger
from trading.models import Asset, LedgerEntry
from trading.signals import announce_balances
from wallets.audit import RecordJournal, record_journal
from wallets.models import Transfer
from wallets.requests import ClientRequest, access_asset, earlier_request, make_once


@dataclass(frozen=True)
class TransferRequest(ClientRequest):
    asset: str
    amount: Decimal
    source: str
    target: str
    client_transfer_id: str | None = None

    client_id_field = "client_transfer_id"


def existing_for_retry(account, request: TransferRequest) -> Transfer | None:
    """The transfer an earlier identical request made; DUPLICATE_CLIENT_TRANSFER_ID if the id was used otherwise."""
    return earlier_request(Transfer.objects.select_related("asset").filter(account=account), request,
                           lambda existing: DuplicateClientTransferId(request.client_transfer_id, existing.pk))


def make_transfer(account, request: TransferRequest) -> tuple[Transfer, bool]:
    """Move funds between two of the account's wallets. Returns (transfer, created); a repeat of a
    request with the same client_transfer_id returns the first transfer (``make_once``)."""
    return make_once(lambda: do_make_transfer(account, request), lambda: existing_for_retry(account, request))


def check_transfer(request: TransferRequest) -> Asset:
    """The asset to move, if the request names one, a positive amount and two different wallets."""
    if request.amount <= 0:
        raise InvalidField("amount", "Must be greater than zero.")
    if request.source == request.target:
        raise InvalidField("to", "Must be a different wallet from `from`.")
    return access_asset(request.asset)


def do_make_transfer(account, request: TransferRequest) -> Transfer:
    asset = check_transfer(request)
    with transaction.atomic():
        record = Transfer.objects.create(
            account=account, asset=asset, amount=request.amount, source=request.source, target=request.target,
            client_transfer_id=request.client_transfer_id, request_digest=request.digest(),
        )
        ledger.apply_journal(transfer_journal(record))
        announce_balances(account.pk)
    return record


def transfer_journal(transfer: Transfer) -> ledger.Journal:
    """The source wallet's available balance down, the target's up."""
    account_id, asset_id, amount = transfer.account_id, transfer.asset_id, transfer.amount
    return ledger.Journal(
        reason=LedgerEntry.Reason.TRANSFER,
        reference=f"transfer:{transfer.pk}",
        postings=[ledger.Posting(account_id, asset_id, -amount, ledger.Bucket.AVAILABLE, transfer.source),
                  ledger.Posting(account_id, asset_id, amount, ledger.Bucket.AVAILABLE, transfer.target)],
    )


def transfer_journals() -> Iterable[RecordJournal]:
    """Each transfer's journal (wallets.audit)."""
    for transfer in Transfer.objects.only("account", "asset", "amount", "source", "target").order_by("pk").iterator(
            chunk_size=5000):
        yield record_journal(f"transfer {transfer.pk}", [transfer_journal(transfer)])
