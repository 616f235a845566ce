"""Trading fee rates as accounts see them, and fee tiers assigned by 30-day trading volume.

An account pays its rate tier's maker and taker rates on every market (the matcher reads them per
batch, trading.matcher). A tier with a ``min_30d_volume`` is assigned by volume: ``assign_fee_tiers``
(Celery beat daily, or ``manage.py assign_fee_tiers``) moves every user account that is on such a tier
to the one with the highest threshold its volume reaches. A tier without a threshold is manual: its
accounts are never moved, and no account is moved onto it.

Volume is counted in one reference asset (``settings.FEE_TIER_VOLUME_ASSET``, USD): the quote amount of
the account's fills, maker and taker, on the markets quoted in it, over the 30 days before the run.
Markets quoted in another asset (ETH-BTC) do not count: converting them would need a price the
exchange does not keep for the past.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import key_cache
from accounts.models import Account, RateTier
from exchange.fields import to_milliseconds
from trading.models import Fill, Market
from trading.sql import ExactSum, first_id_stamped_since

logger = logging.getLogger(__name__)

VOLUME_DAYS = 30
# Fills are numbered in the order they are matched and stamped with their batch's time; batches of
# different pairs interleave, so ids and times agree only to within a batch's time. A fill is looked
# for from the first id stamped this much before the window, far more than any batch takes.
ID_ORDER_SLACK = timedelta(hours=1)
CHUNK = 500  # ids per statement (SQLite's limit on parameters)


def market_fees(tier: RateTier) -> list[tuple[str, Decimal, Decimal]]:
    """(pair, maker rate, taker rate) of every market for an account on ``tier``."""
    return [(pair, tier.maker_fee_rate, tier.taker_fee_rate)
            for pair in Market.objects.order_by("pair").values_list("pair", flat=True)]


def volumes_since(since: datetime, asset: str) -> dict[int, Decimal]:
    """Each account's traded quote amount since ``since`` on the markets quoted in ``asset``."""
    first = first_id_stamped_since(Fill.objects.all(), "executed_at", since - ID_ORDER_SLACK)
    if first is None:
        return {}
    fills = Fill.objects.filter(pk__gte=first, executed_at__gte=since, market__quote__symbol=asset)
    return dict(fills.order_by().values("account_id").annotate(volume=ExactSum("trade__quote_amount"))
                .values_list("account_id", "volume"))


@dataclass(frozen=True)
class TierMove:
    account_id: int
    from_tier: str
    to_tier: str
    volume: Decimal


@dataclass
class TierAssignment:
    asset: str
    since: datetime
    accounts: int = 0  # user accounts on tiers assigned by volume
    moves: list[TierMove] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "volume_asset": self.asset, "since": to_milliseconds(self.since), "accounts": self.accounts,
            "moved": [{"account_id": move.account_id, "from": move.from_tier, "to": move.to_tier,
                       "volume_30d": format(move.volume.normalize(), "f")} for move in self.moves],
        }


def chunks(items: list, size: int = CHUNK):
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def assign_fee_tiers(now: datetime | None = None) -> TierAssignment:
    """Move each user account on a volume tier to the highest one its 30-day volume reaches (an account
    below every threshold stays where it is). Repeating a run moves nothing more; an account whose tier
    an operator changed meanwhile is left as the operator set it. The moved accounts' cached keys are
    forgotten, so signed requests see the new tier at once."""
    now = now or timezone.now()
    run = TierAssignment(settings.FEE_TIER_VOLUME_ASSET, now - timedelta(days=VOLUME_DAYS))
    ladder = list(RateTier.objects.filter(min_30d_volume__isnull=False).order_by("-min_30d_volume"))
    if not ladder:
        return run
    tiers = {tier.pk: tier for tier in ladder}
    accounts = list(Account.objects.filter(kind=Account.Kind.USER, rate_tier__in=ladder)
                    .values_list("pk", "rate_tier_id"))
    run.accounts = len(accounts)
    volumes = volumes_since(run.since, run.asset)
    wanted: dict[tuple[int, int], list[int]] = {}
    for account_id, tier_id in accounts:
        volume = volumes.get(account_id, Decimal(0))
        target = next((tier for tier in ladder if volume >= tier.min_30d_volume), None)
        if target is not None and target.pk != tier_id:
            wanted.setdefault((tier_id, target.pk), []).append(account_id)
    with transaction.atomic():
        for (from_id, to_id), account_ids in sorted(wanted.items()):
            for chunk in chunks(account_ids):
                # Only those still on the tier read above: an operator's change in between stands.
                moving = list(Account.objects.select_for_update().filter(pk__in=chunk, rate_tier_id=from_id)
                              .order_by("pk").values_list("pk", flat=True))
                Account.objects.filter(pk__in=moving).update(rate_tier_id=to_id)
                key_cache.forget_accounts(moving)  # QuerySet.update sends no post_save
                run.moves += [TierMove(account_id, tiers[from_id].name, tiers[to_id].name,
                                       volumes.get(account_id, Decimal(0))) for account_id in moving]
    return run
