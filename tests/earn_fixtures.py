"""Fixtures of the earn tests: products as operators define them, the interest account, and a clock
that interest accrual's days can be moved along."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.services import interest_account
from earn.models import EarnProduct
from earn.subscriptions import SubscriptionRequest, subscribe
from trading import ledger
from trading.models import Asset

real_now = timezone.now


class Clock:
    """Server time, moved by an offset from the real clock (so that it keeps running)."""

    def __init__(self):
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return real_now() + self.offset

    def set(self, moment: datetime) -> None:
        self.offset = moment - real_now()

    def advance(self, **delta) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Every ``timezone.now()`` (services, ``auto_now_add``, the ledger) reads this clock. Signed
    requests check their timestamp against it too: tests that move it use the services, or sessions."""
    clock = Clock()
    monkeypatch.setattr(timezone, "now", clock.now)
    return clock


def at(day: int, hour: int = 10) -> datetime:
    """A time on day ``day`` of a fixed month, UTC."""
    return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour)


@pytest.fixture
def make_product(markets):
    def make(asset="USD", annual_rate="0.05", lock_days=0, min_amount="10", capacity="100000", active=True):
        return EarnProduct.objects.create(
            asset=Asset.objects.get(symbol=asset), annual_rate=Decimal(annual_rate), lock_days=lock_days,
            min_amount=Decimal(min_amount), capacity=Decimal(capacity), active=active,
        )

    return make


@pytest.fixture
def fund_interest(markets):
    """Credit the interest account, as an operator funding it does."""

    def fund(symbol: str, amount: str) -> None:
        ledger.adjust_balance(account_id=interest_account().pk, asset_id=Asset.objects.get(symbol=symbol).pk,
                              amount=Decimal(amount), reference="interest_funding:test", memo="fixture")

    return fund


def subscribed(account, product, amount: str, client_subscription_id: str | None = None):
    subscription, created = subscribe(account, SubscriptionRequest(product.pk, Decimal(amount), client_subscription_id))
    assert created
    return subscription
