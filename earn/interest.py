"""Daily interest on earn subscriptions, paid once per subscription and UTC day.

A subscription earns for each whole UTC day it is held: from the day after it was subscribed to the
day before it is redeemed. A day's interest is ``amount × annual_rate / 365``, rounded down to the
asset's precision (what rounding leaves over is never paid, so interest never exceeds the rate), and
is paid from the interest account's spot available balance to the holder's earn available balance
(ledger kind ``interest``, reference ``interest:<subscription id>:<YYYY-MM-DD>``).

``accrue_interest`` pays every day not yet paid up to a given day (at most yesterday: a day is paid once
it has ended), oldest first, so a late run catches up on each missed day. Each (subscription, day) is
one transaction that first inserts its InterestAccrual row: the unique key on (subscription, period)
makes a second payment of the same day, from a run repeated or racing in another process, fail before it
writes anything, and the day is paid only if the subscription's row still owes it (a redemption that
commits after a run read its list ends the subscription before the day). A day whose interest rounds to
zero gets its row, and no ledger entry. When the interest account cannot pay a day, nothing of it is
written, that asset's accrual stops for the run (no balance goes negative, and later days wait for the
earlier one), and an InterestShortfall row (shown in the admin) and an error in the log tell operators
to fund it; the next run after funding pays every day owed.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_DOWN, Decimal, localcontext
from itertools import groupby

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.services import interest_account
from exchange.errors import InsufficientFunds, InvalidRequest
from trading import ledger
from trading.models import Asset, Balance, LedgerEntry, Wallet
from trading.signals import announce_balances
from wallets.audit import RecordJournal, record_journal

from earn.models import InterestAccrual, InterestShortfall, Subscription
from earn.subscriptions import ONE_DAY, utc_day

logger = logging.getLogger(__name__)
DAYS_PER_YEAR = 365


@dataclass
class AccrualRun:
    """What one run did: days paid and settled at zero, the interest paid per asset, where it stopped."""

    through: date
    paid: int = 0
    zero: int = 0
    interest: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    shortfalls: list[InterestShortfall] = field(default_factory=list)

    def summary(self) -> dict:
        return {"through": self.through.isoformat(), "paid": self.paid, "zero": self.zero,
                "interest": {symbol: format(amount, "f") for symbol, amount in sorted(self.interest.items())},
                "shortfalls": [str(shortfall) for shortfall in self.shortfalls]}


def daily_interest(amount: Decimal, annual_rate: Decimal, precision: int) -> Decimal:
    """``amount × annual_rate / 365`` rounded down to ``precision`` places: truncating the quotient at
    100 digits, then at the precision, is the floor of the exact value (both are non-negative)."""
    with localcontext(prec=100, rounding=ROUND_DOWN):
        return (amount * annual_rate / DAYS_PER_YEAR).quantize(Decimal(1).scaleb(-precision), rounding=ROUND_DOWN)


def last_whole_day() -> date:
    return utc_day(timezone.now()) - ONE_DAY


def accrue_interest(through: date | None = None) -> AccrualRun:
    """Pay every day not yet paid up to ``through`` (default, and at most, yesterday UTC)."""
    yesterday = last_whole_day()
    run = AccrualRun(min(through or yesterday, yesterday))
    payer = interest_account().pk
    owing = (Subscription.objects.filter(Q(status=Subscription.Status.ACTIVE) | Q(last_period__gt=F("accrued_through")),
                                         accrued_through__lt=run.through)
             .select_related("asset").order_by("asset_id", "pk"))
    stopped = set()
    for asset, subscriptions in groupby(owing, key=lambda subscription: subscription.asset):
        if not accrue_asset(asset, list(subscriptions), payer, run):
            stopped.add(asset.pk)
    InterestShortfall.objects.filter(resolved_at__isnull=True, period__lte=run.through).exclude(
        asset__in=stopped).update(resolved_at=timezone.now())
    return run


def accrue_asset(asset: Asset, subscriptions: list[Subscription], payer: int, run: AccrualRun) -> bool:
    """Pay the subscriptions' owed days, day by day; False if the interest account fell short."""
    day = min(subscription.accrued_through for subscription in subscriptions)
    while day < run.through:
        day += ONE_DAY
        for subscription in subscriptions:
            if subscription.accrued_through < day <= (subscription.last_period or run.through):
                interest = daily_interest(subscription.amount, subscription.annual_rate, asset.precision)
                try:
                    paid = accrue_period(subscription, day, interest, payer)
                except InsufficientFunds:
                    run.shortfalls.append(record_shortfall(subscription, day, interest, payer))
                    return False
                except InvalidRequest as refusal:  # a balance would pass what the ledger holds: the others go on
                    logger.error("interest on subscription %s for %s not paid: %s; %s's accrual stops for this run",
                                 subscription.pk, day, refusal.message, asset.symbol)
                    return False
                subscription.accrued_through = day
                if paid:
                    run.paid += bool(interest)
                    run.zero += not interest
                    run.interest[asset.symbol] += interest
    return True


class NotOwed(Exception):
    """The subscription was redeemed before the day: a redemption committed after the run read it."""


def accrue_period(subscription: Subscription, period: date, interest: Decimal, payer: int) -> bool:
    """Pay one day's interest on one subscription; False if it was paid already (by another run), or is not
    owed (the subscription was redeemed before the day since the run read it)."""
    try:
        with transaction.atomic():
            InterestAccrual.objects.create(subscription=subscription, period=period, amount=interest)
            # The subscription's row, not the run's copy of it, says whether the day is owed: the update waits
            # for a redemption holding the row and then sees its last_period.
            owed = Subscription.objects.filter(Q(last_period__isnull=True) | Q(last_period__gte=period),
                                               pk=subscription.pk, accrued_through__lt=period)
            if not owed.update(accrued_through=period):
                raise NotOwed
            if interest:
                ledger.apply_journal(interest_journal(subscription, period, interest, payer))
                announce_balances(subscription.account_id)
    except NotOwed:
        return False
    except IntegrityError:
        if not InterestAccrual.objects.filter(subscription=subscription, period=period).exists():
            raise
        return False
    return True


def interest_reference(subscription_id: int, period: date) -> str:
    return f"interest:{subscription_id}:{period.isoformat()}"


def interest_journal(subscription: Subscription, period: date, interest: Decimal, payer: int) -> ledger.Journal:
    """A day's interest from the interest account's spot available to the holder's earn available."""
    return ledger.Journal(
        reason=LedgerEntry.Reason.INTEREST,
        reference=interest_reference(subscription.pk, period),
        postings=[
            ledger.Posting(payer, subscription.asset_id, -interest, ledger.Bucket.AVAILABLE, Wallet.SPOT),
            ledger.Posting(subscription.account_id, subscription.asset_id, interest, ledger.Bucket.AVAILABLE,
                           Wallet.EARN),
        ],
    )


def interest_journals() -> Iterable[RecordJournal]:
    """Each accrual's interest journal, none for a day that rounded to zero (wallets.audit)."""
    payer = interest_account().pk
    accruals = InterestAccrual.objects.select_related("subscription").only(
        "period", "amount", "subscription__account", "subscription__asset").order_by("pk")
    for accrual in accruals.iterator(chunk_size=5000):
        subscription = accrual.subscription
        yield record_journal(
            f"interest accrual {accrual.pk} (subscription {subscription.pk}, {accrual.period.isoformat()})",
            [interest_journal(subscription, accrual.period, accrual.amount, payer)] if accrual.amount else [],
            interest_reference(subscription.pk, accrual.period))


def unowed_interest() -> list[str]:
    """Accruals no subscription owed (trading.audit): a day not held (from the day after subscribing to
    its last day), or more than ``amount × annual_rate / 365`` unrounded, which a day's interest, rounded
    down, never exceeds (the asset's precision, which an operator may change, is not needed for that)."""
    problems = []
    accruals = InterestAccrual.objects.select_related("subscription").only(
        "period", "amount", "subscription__amount", "subscription__annual_rate", "subscription__created_at",
        "subscription__last_period").order_by("pk")
    for accrual in accruals.iterator(chunk_size=5000):
        subscription, day = accrual.subscription, accrual.period
        if not utc_day(subscription.created_at) < day <= (subscription.last_period or day):
            problems.append(f"interest accrual {accrual.pk}: subscription {subscription.pk} did not earn on "
                            f"{day.isoformat()}")
        elif accrual.amount * DAYS_PER_YEAR > subscription.amount * subscription.annual_rate:
            problems.append(f"interest accrual {accrual.pk}: {accrual.amount.normalize():f} for {day.isoformat()}, "
                            f"more than subscription {subscription.pk}'s rate pays a day")
    return problems


def record_shortfall(subscription: Subscription, period: date, needed: Decimal, payer: int) -> InterestShortfall:
    available = Balance.objects.filter(account_id=payer, asset_id=subscription.asset_id, wallet=Wallet.SPOT
                                       ).values_list("available", flat=True).first() or Decimal(0)
    now = timezone.now()
    details = {"subscription": subscription, "needed": needed, "available": available, "last_seen_at": now,
               "resolved_at": None}
    shortfall, created = InterestShortfall.objects.get_or_create(asset_id=subscription.asset_id, period=period,
                                                                 defaults=details)
    if not created:
        for name, value in details.items():
            setattr(shortfall, name, value)
        shortfall.save(update_fields=list(details))
    logger.error("interest accrual of %s stopped at %s: subscription %s is owed %s and the interest account has %s "
                 "available; fund the interest account (README, \"Earn\")", subscription.asset, period,
                 subscription.pk, needed, available)
    return shortfall
