"""Transfers between an account's own wallets (spot, margin, earn), through the one ledger.

Orders trade from ``spot`` only; ``margin`` holds collateral (borrowing comes later) and ``earn``
what is subscribed to earn products. A transfer is a record and a journal of two postings (the
source wallet's available balance down, the target's up), written in one transaction: refused
with INSUFFICIENT_FUNDS, nothing is written.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction

from exchange.errors import DuplicateClientTransferId, ExchangeError, InvalidField
from trading import ledger
from trading.models import Asset, LedgerEntry
from wallets.announce import announce_balances
from wallets.models import Transfer


@dataclass(frozen=True)
class TransferRequest:
    asset: str
    amount: Decimal
    source: str
    target: str
    client_transfer_id: str | None = None

    def digest(self) -> str:
        """Equal for the same transfer however its amount was spelt ("1" and "1.00" are one amount)."""
        canonical = {**asdict(self), "amount": format(self.amount.normalize(), "f")}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def access_asset(symbol: str) -> Asset:
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is None:
        raise InvalidField("asset", f"Unknown asset {symbol!r}.")
    return asset


def existing_for_retry(account, request: TransferRequest) -> Transfer | None:
    """The transfer an earlier identical request made; DUPLICATE_CLIENT_TRANSFER_ID if the id was used otherwise."""
    if request.client_transfer_id is None:
        return None
    existing = (Transfer.objects.select_related("asset")
                .filter(account=account, client_transfer_id=request.client_transfer_id).first())
    if existing is not None and existing.request_digest != request.digest():
        raise DuplicateClientTransferId(request.client_transfer_id, existing.pk)
    return existing


def make_transfer(account, request: TransferRequest) -> tuple[Transfer, bool]:
    """Move funds between two of the account's wallets. Returns (transfer, created).

    Repeating a request with the same client_transfer_id returns the first transfer with
    created=False, also when the two requests race (the unique constraint decides: the second insert
    waits for the first to commit, then fails, and the lookup finds it) and also when the repeat
    itself would now be refused (funds since moved): the lookup happens only then.
    """
    try:
        return do_make_transfer(account, request), True
    except (ExchangeError, IntegrityError):
        existing = existing_for_retry(account, request)
        if existing is None:
            raise
        return existing, False


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
        ledger.apply_journal(ledger.Journal(
            reason=LedgerEntry.Reason.TRANSFER,
            reference=f"transfer:{record.pk}",
            postings=[
                ledger.Posting(account.pk, asset.pk, -request.amount, ledger.Bucket.AVAILABLE, request.source),
                ledger.Posting(account.pk, asset.pk, request.amount, ledger.Bucket.AVAILABLE, request.target),
            ],
        ))
        announce_balances(account.pk)
    return record
