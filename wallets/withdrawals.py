"""Withdrawals: money leaving an account's spot wallet for an address in its address book.

A withdrawal goes ``pending_review`` → ``approved`` → ``sent``; an operator may reject it while it
is pending review or approved, and its holder may cancel it while it is pending review. Each state
change is one transaction on the locked withdrawal row, so two operators (or an operator and the
holder) racing cannot both apply theirs: the second finds the state changed and is refused.

Through the ledger (reference ``withdrawal:<id>``): the request moves amount + fee from the spot
wallet's available to its locked bucket (kind ``withdrawal``); a rejection or cancel moves it back
(kind ``withdrawal``); ``sent`` debits the locked bucket, the amount to the outside world (kind
``withdrawal``) and the fee to the fee account's spot wallet (kind ``withdrawal_fee``), in one
journal. There is no blockchain here: a custody system pays the withdrawal out, and an operator
marks it sent with the network's transaction id.

A request is refused, writing nothing, when the asset's withdrawals are disabled, the address is
not in the account's book for that asset or its waiting period has not passed, the amount is below
the asset's minimum or finer than its precision, the account's withdrawals of the asset over the
last 24 hours (rolling; every state but rejected and cancelled) would pass its tier's daily limit,
or the spot wallet's available balance is short of amount + fee.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account
from accounts.services import fee_account
from exchange.errors import (
    DuplicateClientWithdrawalId, InvalidField, WithdrawalAddressNotAllowed, WithdrawalAddressNotYetUsable,
    WithdrawalLimitExceeded, WithdrawalNotCancellable, WithdrawalNotFound, WithdrawalsDisabled,
)
from exchange.fields import to_milliseconds
from exchange.money import format_amount
from trading import ledger
from trading.audit import Hold
from trading.models import Asset, LedgerEntry, Wallet
from trading.signals import announce_balances
from wallets.audit import RecordJournal, record_journal
from wallets.models import AssetWalletSettings, TierWithdrawalLimit, Withdrawal, WithdrawalAddress
from wallets.requests import ClientRequest, access_asset, earlier_request, make_once

Status = Withdrawal.Status
LIMIT_WINDOW = timedelta(hours=24)
# An address or transaction id on any network, as given: printable ASCII without spaces (an
# address's tag or memo included, e.g. "r9cZA...?dt=42"); matched exactly, never normalised.
ADDRESS = TX_ID = re.compile(r"[!-~]{1,128}")


class OperatorRefusal(Exception):
    """An operator's action that cannot be applied; the message says why. Nothing was written."""


class TransitionRefused(OperatorRefusal):
    def __init__(self, withdrawal: Withdrawal, wanted: str):
        super().__init__(f"Withdrawal {withdrawal.pk} is {withdrawal.status}; it cannot be {wanted}.")
        self.withdrawal = withdrawal


@dataclass(frozen=True)
class WithdrawalRequest(ClientRequest):
    asset: str
    amount: Decimal
    address: str
    client_withdrawal_id: str | None = None

    client_id_field = "client_withdrawal_id"


def shown_amount(asset: Asset, value: Decimal) -> str:
    """An amount at the asset's precision, as the API and the pages show it."""
    return format_amount(value, Decimal(1).scaleb(-asset.precision))


def daily_limit(account: Account, asset: Asset, asset_settings: AssetWalletSettings) -> Decimal | None:
    """The account's tier's limit for the asset, else the asset's default; None: no limit."""
    tier_limit = (TierWithdrawalLimit.objects.filter(rate_tier_id=account.rate_tier_id, asset=asset)
                  .values_list("daily_limit", flat=True).first())
    return tier_limit if tier_limit is not None else asset_settings.daily_withdrawal_limit


# The address book.

def add_address(account: Account, asset: Asset, address: str, label: str = "") -> WithdrawalAddress:
    """Put an address in the account's book; usable for withdrawals once the waiting period
    (``WITHDRAWAL_ADDRESS_WAITING_PERIOD``) has passed. An address already in the book is refused."""
    if not ADDRESS.fullmatch(address):
        raise InvalidField("address", "1 to 128 printable ASCII characters, without spaces.")
    now = timezone.now()
    try:
        with transaction.atomic():
            return WithdrawalAddress.objects.create(
                account=account, asset=asset, address=address, label=label, created_at=now,
                usable_from=now + settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD,
            )
    except IntegrityError:
        raise InvalidField("address", f"Already in your {asset.symbol} address book.") from None


def remove_address(account: Account, address_id: int) -> WithdrawalAddress | None:
    """Take an address out of the account's book (withdrawals already requested to it stay as they
    are); None if the account has no such address."""
    entry = WithdrawalAddress.objects.filter(account=account, pk=address_id).select_related("asset").first()
    if entry is not None:
        entry.delete()
    return entry


def check_address(account: Account, asset: Asset, address: str, now: datetime) -> None:
    """The address is in the account's book and usable now; its entry locked to the caller's commit, so that
    a removal in flight either waits for the request or is seen by it."""
    entry = WithdrawalAddress.objects.select_for_update().filter(account=account, asset=asset,
                                                                 address=address).first()
    if entry is None:
        raise WithdrawalAddressNotAllowed(asset.symbol, address)
    if entry.usable_from > now:
        raise WithdrawalAddressNotYetUsable(asset.symbol, address, to_milliseconds(entry.usable_from))


# Requests, by the account holder.

def check_withdrawal(account: Account, request: WithdrawalRequest) -> tuple[Asset, AssetWalletSettings]:
    """The asset and its settings, if the request may be made (funds and the daily limit apart); in the
    request's transaction (check_address locks the book's entry)."""
    asset = access_asset(request.asset)
    asset_settings = AssetWalletSettings.of(asset)
    if not asset_settings.withdraw_enabled:
        raise WithdrawalsDisabled(asset.symbol)
    if request.amount <= 0:
        raise InvalidField("amount", "Must be greater than zero.")
    if request.amount.normalize().as_tuple().exponent < -asset.precision:
        raise InvalidField("amount", f"At most {asset.precision} decimal places for {asset.symbol}.")
    if request.amount < asset_settings.withdraw_minimum:
        raise InvalidField("amount", f"Must be at least the minimum withdrawal, "
                                     f"{shown_amount(asset, asset_settings.withdraw_minimum)} {asset.symbol}.")
    check_address(account, asset, request.address, timezone.now())
    return asset, asset_settings


def check_daily_limit(account: Account, asset: Asset, asset_settings: AssetWalletSettings, amount: Decimal) -> None:
    limit = daily_limit(account, asset, asset_settings)
    if limit is None:
        return
    used = sum(Withdrawal.objects.filter(account=account, asset=asset, created_at__gt=timezone.now() - LIMIT_WINDOW)
               .exclude(status__in=(Status.REJECTED, Status.CANCELLED)).values_list("amount", flat=True), Decimal(0))
    if used + amount > limit:
        raise WithdrawalLimitExceeded(asset.symbol, shown_amount(asset, limit), shown_amount(asset, used),
                                      shown_amount(asset, max(limit - used, Decimal(0))))


def existing_for_retry(account: Account, request: WithdrawalRequest) -> Withdrawal | None:
    """The withdrawal an earlier identical request made; DUPLICATE_CLIENT_WITHDRAWAL_ID if the id was used otherwise."""
    return earlier_request(Withdrawal.objects.select_related("asset").filter(account=account), request,
                           lambda existing: DuplicateClientWithdrawalId(request.client_withdrawal_id, existing.pk))


def request_withdrawal(account: Account, request: WithdrawalRequest) -> tuple[Withdrawal, bool]:
    """Ask for a withdrawal, holding its amount plus fee. Returns (withdrawal, created); a repeat of
    a request with the same client_withdrawal_id returns the first withdrawal (``make_once``)."""
    return make_once(lambda: do_request_withdrawal(account, request), lambda: existing_for_retry(account, request))


def do_request_withdrawal(account: Account, request: WithdrawalRequest) -> Withdrawal:
    with transaction.atomic():
        asset, asset_settings = check_withdrawal(account, request)
        # The spot balance is locked before the limit is summed: the account's requests for the asset
        # queue here, so two of them cannot both fit under the limit that only one fits under.
        ledger.lock_balances([(account.pk, asset.pk, Wallet.SPOT)])
        check_daily_limit(account, asset, asset_settings, request.amount)
        withdrawal = Withdrawal.objects.create(
            account=account, asset=asset, amount=request.amount, fee=asset_settings.withdraw_fee,
            address=request.address, client_withdrawal_id=request.client_withdrawal_id,
            request_digest=request.digest(),
        )
        ledger.apply_journal(moving_hold(withdrawal, ledger.Bucket.AVAILABLE, ledger.Bucket.LOCKED))
        announce_balances(account.pk)
    return withdrawal


def access_withdrawal(account: Account, withdrawal_id: int, *, lock: bool = False) -> Withdrawal:
    """One of the account's withdrawals (locked for a state change when ``lock``); anyone else's is not found."""
    rows = Withdrawal.objects.select_for_update() if lock else Withdrawal.objects.select_related("asset")
    withdrawal = rows.filter(account=account, pk=withdrawal_id).first()
    if withdrawal is None:
        raise WithdrawalNotFound(withdrawal_id)
    return withdrawal


def cancel_withdrawal(account: Account, withdrawal_id: int) -> Withdrawal:
    """Cancel a withdrawal pending review, releasing its hold. Cancelling a cancelled one returns it
    unchanged; any other state is WITHDRAWAL_NOT_CANCELLABLE."""
    with transaction.atomic():
        withdrawal = access_withdrawal(account, withdrawal_id, lock=True)
        if withdrawal.status == Status.CANCELLED:
            return withdrawal
        if withdrawal.status != Status.PENDING_REVIEW:
            raise WithdrawalNotCancellable(withdrawal.pk, withdrawal.status)
        return change_state(withdrawal, Status.CANCELLED,
                            moving_hold(withdrawal, ledger.Bucket.LOCKED, ledger.Bucket.AVAILABLE))


# Operators' transitions.

def locked_for(withdrawal_id: int, wanted: str, sources: Iterable[str]) -> Withdrawal:
    """The withdrawal, locked until the caller's transaction ends, if it is in one of ``sources``."""
    withdrawal = Withdrawal.objects.select_for_update().get(pk=withdrawal_id)
    if withdrawal.status not in sources:
        raise TransitionRefused(withdrawal, wanted)
    return withdrawal


def approve_withdrawal(withdrawal_id: int, operator: str) -> Withdrawal:
    with transaction.atomic():
        withdrawal = locked_for(withdrawal_id, "approved", [Status.PENDING_REVIEW])
        return change_state(withdrawal, Status.APPROVED, reviewed_by=operator)


def reject_withdrawal(withdrawal_id: int, operator: str) -> Withdrawal:
    """Refuse a withdrawal pending review or approved (not yet paid out), releasing its hold."""
    with transaction.atomic():
        withdrawal = locked_for(withdrawal_id, "rejected", Withdrawal.HOLDING)
        return change_state(withdrawal, Status.REJECTED,
                            moving_hold(withdrawal, ledger.Bucket.LOCKED, ledger.Bucket.AVAILABLE),
                            reviewed_by=operator)


def mark_sent(withdrawal_id: int, tx_id: str, operator: str) -> Withdrawal:
    """Record that a custody system paid an approved withdrawal out in transaction ``tx_id``: the
    hold is settled, the amount leaves the exchange and the fee goes to the fee account."""
    if not TX_ID.fullmatch(tx_id):
        raise OperatorRefusal("The transaction id must be 1 to 128 printable ASCII characters, without spaces.")
    with transaction.atomic():
        withdrawal = locked_for(withdrawal_id, "sent", [Status.APPROVED])
        return change_state(withdrawal, Status.SENT, settlement(withdrawal, fee_account().pk), tx_id=tx_id,
                            sent_by=operator)


# The state change and its journals.

def change_state(withdrawal: Withdrawal, status: str, journal: ledger.Journal | None = None, **fields) -> Withdrawal:
    """Within the caller's transaction, on the locked row: apply the journal, then the new state."""
    if journal is not None:
        ledger.apply_journal(journal)
        announce_balances(withdrawal.account_id)
    withdrawal.status = status
    for name, value in fields.items():
        setattr(withdrawal, name, value)
    withdrawal.save(update_fields=["status", "updated_at", *fields])
    return withdrawal


def reference(withdrawal: Withdrawal) -> str:
    return f"withdrawal:{withdrawal.pk}"


def moving_hold(withdrawal: Withdrawal, source: str, target: str) -> ledger.Journal:
    """Amount + fee between the spot wallet's available and locked buckets: the hold, or its release."""
    return ledger.bucket_transfer(withdrawal.account_id, withdrawal.asset_id, withdrawal.held, source=source,
                                  target=target, reason=LedgerEntry.Reason.WITHDRAWAL, reference=reference(withdrawal))


def settlement(withdrawal: Withdrawal, fee_account_id: int) -> ledger.Journal:
    account_id, asset_id, locked = withdrawal.account_id, withdrawal.asset_id, ledger.Bucket.LOCKED
    postings = [ledger.Posting(account_id, asset_id, -withdrawal.amount, locked),
                ledger.Posting(None, asset_id, withdrawal.amount, ledger.Bucket.EXTERNAL)]
    if withdrawal.fee:
        fee = LedgerEntry.Reason.WITHDRAWAL_FEE
        postings += [ledger.Posting(account_id, asset_id, -withdrawal.fee, locked, reason=fee),
                     ledger.Posting(fee_account_id, asset_id, withdrawal.fee, ledger.Bucket.AVAILABLE, reason=fee)]
    return ledger.Journal(reason=LedgerEntry.Reason.WITHDRAWAL, reference=reference(withdrawal), postings=postings)


def withdrawal_holds() -> Iterable[Hold]:
    """What withdrawals pending review or approved hold in spot locked buckets (trading.audit)."""
    holding = Withdrawal.objects.filter(status__in=Withdrawal.HOLDING).only("account", "asset", "amount", "fee")
    for withdrawal in holding:
        yield withdrawal.account_id, withdrawal.asset_id, Wallet.SPOT, withdrawal.held


def withdrawal_journals() -> Iterable[RecordJournal]:
    """Each withdrawal's journals as its state says (wallets.audit): the hold; then its release
    (rejected, cancelled) or its settlement (sent)."""
    fee_account_id = fee_account().pk
    for withdrawal in Withdrawal.objects.only("account", "asset", "amount", "fee", "status").order_by("pk").iterator(
            chunk_size=5000):
        journals = [moving_hold(withdrawal, ledger.Bucket.AVAILABLE, ledger.Bucket.LOCKED)]
        if withdrawal.status == Status.SENT:
            journals.append(settlement(withdrawal, fee_account_id))
        elif withdrawal.status not in Withdrawal.HOLDING:
            journals.append(moving_hold(withdrawal, ledger.Bucket.LOCKED, ledger.Bucket.AVAILABLE))
        yield record_journal(f"withdrawal {withdrawal.pk} ({withdrawal.status})", journals)
