"""The sandbox's testnet money: the faucet, and the starting balance of an account opened in the sandbox.

Both credit through the ledger as a deposit does (a journal against the outside world), with the
reason ``faucet``. The faucet gives at most ``SANDBOX_FAUCET_DAILY_LIMITS`` of an asset to an account
per UTC day, counting only what the faucet gave (not the starting balance).
"""

import math
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from exchange.errors import FaucetLimitReached, InvalidField
from exchange.money import EXACT, format_amount
from trading import ledger
from trading.models import Asset, Balance, LedgerEntry, Wallet
from trading.signals import announce_balances
from trading.sql import ExactSum

FAUCET_REFERENCE = "sandbox:faucet"
STARTING_BALANCE_REFERENCE = "sandbox:starting-balance"


def in_sandbox() -> bool:
    return settings.EXCHANGE_ENVIRONMENT == "sandbox"


def credit(account: Account, asset: Asset, amount: Decimal, *, reference: str, memo: str) -> None:
    ledger.adjust_balance(account_id=account.pk, asset_id=asset.pk, amount=amount, reference=reference, memo=memo,
                          reason=LedgerEntry.Reason.FAUCET)


def check_faucet_request(symbol: str, amount: Decimal) -> tuple[Asset, Decimal]:
    """The asset asked for and its daily limit, if the faucet gives it and ``amount`` is a positive
    amount of it (no finer than the asset's precision)."""
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is None:
        raise InvalidField("asset", f"Unknown asset {symbol!r}.")
    limits = {symbol: limit for symbol, limit in settings.SANDBOX_FAUCET_DAILY_LIMITS.items() if Decimal(limit) > 0}
    if asset.symbol not in limits:  # a limit of 0: none given
        raise InvalidField("asset", f"The faucet gives {', '.join(sorted(limits))} only.")
    if amount <= 0:
        raise InvalidField("amount", "Must be greater than zero.")
    if amount.normalize().as_tuple().exponent < -asset.precision:
        raise InvalidField("amount", f"At most {asset.precision} decimal places for {asset.symbol}.")
    limit = Decimal(limits[asset.symbol])
    if amount > limit:  # no day gives it: not a limit to wait out
        raise InvalidField("amount", f"At most {limit.normalize():f} {asset.symbol} a day.")
    return asset, limit


def utc_day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)  # settings.TIME_ZONE is UTC


def given_since(account: Account, asset: Asset, since: datetime) -> Decimal:
    total = LedgerEntry.objects.filter(
        account=account, asset=asset, reason=LedgerEntry.Reason.FAUCET, reference=FAUCET_REFERENCE,
        bucket=LedgerEntry.Bucket.AVAILABLE, created_at__gte=since,
    ).aggregate(total=ExactSum("amount"))["total"]
    return Decimal(total or 0)


@transaction.atomic
def request_faucet(account: Account, symbol: str, amount: Decimal) -> dict:
    """Credit ``amount`` of an asset to the account's spot balance, within the day's limit; past it,
    FAUCET_LIMIT_REACHED and nothing is written. Sandbox only (the view answers 404 elsewhere)."""
    asset, limit = check_faucet_request(symbol, amount)
    now = timezone.now()
    day_start = utc_day_start(now)
    # Two requests of one account queue on its balance row, so the second counts the first's credit.
    ledger.lock_balances([(account.pk, asset.pk, Wallet.SPOT)])
    remaining = EXACT.subtract(limit, given_since(account, asset, day_start))
    step = Decimal(1).scaleb(-asset.precision)
    if amount > remaining:
        retry_after = math.ceil((day_start + timedelta(days=1) - now).total_seconds())
        raise FaucetLimitReached(asset.symbol, format_amount(limit, step), format_amount(max(remaining, 0), step),
                                 retry_after)
    credit(account, asset, amount, reference=FAUCET_REFERENCE, memo="sandbox faucet")
    announce_balances(account.pk)
    balance = Balance.objects.get(account=account, asset=asset, wallet=Wallet.SPOT)
    return {
        "asset": asset.symbol,
        "amount": format_amount(amount, step),
        "available": format_amount(balance.available, step),
        "remaining_today": format_amount(EXACT.subtract(remaining, amount), step),
    }


def grant_starting_balance(account: Account) -> None:
    """Credit ``SANDBOX_STARTING_BALANCES`` to a new account (assets not created yet, and amounts of 0, are
    skipped)."""
    amounts = {symbol: Decimal(amount) for symbol, amount in settings.SANDBOX_STARTING_BALANCES.items()
               if Decimal(amount)}
    for asset in Asset.objects.filter(symbol__in=amounts).order_by("pk"):
        credit(account, asset, amounts[asset.symbol], reference=STARTING_BALANCE_REFERENCE,
               memo="sandbox starting balance")


def on_account_opened(sender, account: Account, **kwargs) -> None:
    """accounts.signals.account_opened's receiver: in the sandbox, a new account starts with money."""
    if in_sandbox():
        grant_starting_balance(account)
