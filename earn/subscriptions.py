"""Earn subscriptions: principal from an account's spot wallet into an earn product, and back.

Subscribing moves the amount from the spot wallet's available balance to the earn wallet's locked
bucket (ledger kind ``transfer``, reference ``earn_subscription:<id>``), where transfers between
wallets cannot reach it; redeeming moves it back to spot available under the same reference. Each is
one transaction with the subscription row: refused, nothing is written.

A subscription is refused when the product is unknown or inactive, the amount is below the
product's minimum or finer than the asset's precision, it would take the product past its capacity
(checked under a lock on the product row, so two subscriptions racing for the last of it cannot both
pass), or the spot wallet's available balance is short. A locked product's subscription cannot be
redeemed before ``unlocks_at``; redeeming one already redeemed changes nothing and returns it as it is.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from exchange.errors import (
    DuplicateClientSubscriptionId, EarnCapacityExceeded, EarnProductInactive, InvalidField, SubscriptionLocked,
    SubscriptionNotFound,
)
from exchange.fields import to_milliseconds
from exchange.money import format_amount
from trading import ledger
from trading.models import Asset, LedgerEntry, Wallet
from trading.signals import announce_balances
from wallets.audit import RecordJournal, record_journal
from wallets.deposits import DepositRefused, check_amount
from wallets.requests import ClientRequest, earlier_request, make_once

from earn.models import EarnProduct, Subscription

ONE_DAY = timedelta(days=1)
Bucket = ledger.Bucket


@dataclass(frozen=True)
class SubscriptionRequest(ClientRequest):
    product_id: int
    amount: Decimal
    client_subscription_id: str | None = None

    client_id_field = "client_subscription_id"


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def start_of(day: date) -> datetime:
    """The UTC midnight that starts ``day``."""
    return datetime.combine(day, time(), tzinfo=UTC)


def shown_amount(asset: Asset, value: Decimal) -> str:
    """An amount at the asset's precision, as the API and the pages show it."""
    return format_amount(value, Decimal(1).scaleb(-asset.precision))


def subscribe(account, request: SubscriptionRequest) -> tuple[Subscription, bool]:
    """Subscribe ``request.amount`` to the product. Returns (subscription, created); a repeat of a
    request with the same client_subscription_id returns the first subscription (``make_once``)."""
    return make_once(
        lambda: do_subscribe(account, request),
        lambda: earlier_request(Subscription.objects.filter(account=account).for_rendering(), request,
                                lambda earlier: DuplicateClientSubscriptionId(request.client_id, earlier.pk)),
    )


def check_subscription(request: SubscriptionRequest) -> EarnProduct:
    """The product, if it exists and the amount is one it takes (at least its minimum, on the asset's precision)."""
    product = EarnProduct.objects.select_related("asset").filter(pk=request.product_id).first()
    if product is None:
        raise InvalidField("product_id", f"No earn product {request.product_id}.")
    try:
        check_amount(product.asset, request.amount)
    except DepositRefused as refusal:
        raise InvalidField("amount", str(refusal)) from None
    if request.amount < product.min_amount:
        minimum = shown_amount(product.asset, product.min_amount)
        raise InvalidField("amount", f"Must be at least the product's minimum {minimum}.")
    return product


def principal_journal(subscription: Subscription, *, redeem: bool) -> ledger.Journal:
    """Spot available to earn locked (subscribe), or back (redeem)."""
    spot, earn = (Bucket.AVAILABLE, Wallet.SPOT), (Bucket.LOCKED, Wallet.EARN)
    (source_bucket, source), (target_bucket, target) = (earn, spot) if redeem else (spot, earn)
    account_id, asset_id, amount = subscription.account_id, subscription.asset_id, subscription.amount
    return ledger.Journal(
        reason=LedgerEntry.Reason.TRANSFER,
        reference=f"earn_subscription:{subscription.pk}",
        postings=[ledger.Posting(account_id, asset_id, -amount, source_bucket, source),
                  ledger.Posting(account_id, asset_id, amount, target_bucket, target)],
    )


def do_subscribe(account, request: SubscriptionRequest) -> Subscription:
    asset = check_subscription(request).asset
    with transaction.atomic():
        # Subscriptions to one product queue here, each then counting what those before it committed.
        product = EarnProduct.objects.select_for_update().get(pk=request.product_id)
        if not product.active:
            raise EarnProductInactive(product.pk)
        remaining = EarnProduct.objects.with_subscribed().get(pk=product.pk).remaining_capacity
        if request.amount > remaining:
            raise EarnCapacityExceeded(product.pk, asset.symbol, shown_amount(asset, remaining))
        now = timezone.now()
        subscription = Subscription.objects.create(
            account=account, asset=asset, amount=request.amount, product=product, annual_rate=product.annual_rate,
            created_at=now, unlocks_at=now + product.lock, accrued_through=utc_day(now),
            client_subscription_id=request.client_id, request_digest=request.digest(),
        )
        ledger.apply_journal(principal_journal(subscription, redeem=False))
        announce_balances(account.pk)
    return Subscription.objects.for_rendering().get(pk=subscription.pk)


def redeem(account, subscription_id: int) -> Subscription:
    """Move the subscription's principal back to spot; it earns nothing from the day of redemption on.
    Redeeming it again returns it unchanged."""
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().filter(account=account, pk=subscription_id).first()
        if subscription is None:
            raise SubscriptionNotFound(subscription_id)
        if subscription.is_active:
            now = timezone.now()
            if now < subscription.unlocks_at:
                raise SubscriptionLocked(subscription.pk, to_milliseconds(subscription.unlocks_at))
            subscription.status = Subscription.Status.REDEEMED
            subscription.redeemed_at = now
            subscription.last_period = utc_day(now) - ONE_DAY
            subscription.save(update_fields=["status", "redeemed_at", "last_period"])
            ledger.apply_journal(principal_journal(subscription, redeem=True))
            announce_balances(account.pk)
    return Subscription.objects.for_rendering().get(pk=subscription.pk)


def subscription_holds():
    """What the earn wallets' locked buckets hold: the principal of every active subscription."""
    for account_id, asset_id, amount in Subscription.objects.filter(status=Subscription.Status.ACTIVE).values_list(
            "account", "asset", "amount").iterator(chunk_size=5000):
        yield account_id, asset_id, Wallet.EARN, amount


def subscription_journals() -> Iterable[RecordJournal]:
    """Each subscription's principal moved into earn, and back if redeemed (wallets.audit)."""
    for subscription in Subscription.objects.only("account", "asset", "amount", "status").order_by("pk").iterator(
            chunk_size=5000):
        journals = [principal_journal(subscription, redeem=False)]
        if not subscription.is_active:
            journals.append(principal_journal(subscription, redeem=True))
        yield record_journal(f"earn subscription {subscription.pk} ({subscription.status})", journals)
