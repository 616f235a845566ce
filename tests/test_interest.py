"""Daily interest on earn subscriptions: paid once per subscription and UTC day, from the interest
account, also when the job runs twice, late, or in two processes at once; stopped, never overdrawn,
when the interest account is short."""

import json
import logging
from datetime import date, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

import earn.interest
from accounts.services import interest_account
from earn.interest import accrue_interest, daily_interest, interest_journal
from earn.models import InterestAccrual, InterestShortfall
from earn.subscriptions import redeem
from earn.tasks import accrue_interest_task
from exchange.celery import app
from exchange.money import AMOUNT_LIMIT
from trading.audit import audit
from trading.ledger import adjust_balance, apply_journal
from trading.models import LedgerEntry

from .conftest import balance_of, ledger_snapshot
from .earn_fixtures import at, clock, fund_interest, make_product, subscribed  # noqa: F401 (fixtures)
from .racing import race

pytestmark = pytest.mark.django_db
DAY = at(2).date() - at(1).date()


def day(n: int) -> date:
    return at(n).date()


@pytest.fixture
def trader(funded):
    return funded("carol", USD="10000", BTC="2")


def interest_entries(subscription) -> list[tuple]:
    """The holder's side of the subscription's interest journals."""
    return sorted((e.reference, e.wallet, e.bucket, e.amount) for e in LedgerEntry.objects.filter(
        reason="interest", account=subscription.account, reference__startswith=f"interest:{subscription.pk}:"))


def paid_days(subscription) -> list[date]:
    return sorted(InterestAccrual.objects.filter(subscription=subscription).values_list("period", flat=True))


def test_a_days_interest_is_rounded_down_to_the_assets_precision():
    assert daily_interest(Decimal("1000"), Decimal("0.05"), 2) == Decimal("0.13")  # 0.136986...
    assert daily_interest(Decimal("0.1"), Decimal("0.05"), 8) == Decimal("0.00001369")  # 0.0000136986...
    assert daily_interest(Decimal("365"), Decimal("0.1"), 2) == Decimal("0.10")  # exact: nothing to round
    assert daily_interest(Decimal("1"), Decimal("0.01"), 2) == 0


@given(amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e12"), places=8),
       rate=st.decimals(min_value=0, max_value=Decimal("10"), places=6), precision=st.integers(0, 18))
def test_a_days_interest_is_the_largest_amount_on_the_grid_not_above_the_exact_one(amount, rate, precision):
    interest = daily_interest(amount, rate, precision)
    unit = Decimal(1).scaleb(-precision)

    assert interest % unit == 0
    assert interest * 365 <= amount * rate < (interest + unit) * 365


def test_each_whole_day_held_is_paid_once_from_the_interest_account(trader, make_product, fund_interest, clock):
    clock.set(at(1, hour=23))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.05"), "1000")
    fund_interest("USD", "100")
    clock.set(at(4, hour=0))  # days 2 and 3 have ended; day 1 was not held whole

    first = accrue_interest()
    again = accrue_interest()

    assert first.summary() == {"through": "2026-03-03", "paid": 2, "zero": 0, "interest": {"USD": "0.26"},
                               "shortfalls": []}
    assert again.summary()["paid"] == 0
    assert paid_days(subscription) == [day(2), day(3)]
    assert interest_entries(subscription) == [
        (f"interest:{subscription.pk}:2026-03-02", "earn", "available", Decimal("0.13")),
        (f"interest:{subscription.pk}:2026-03-03", "earn", "available", Decimal("0.13")),
    ]
    payer = balance_of(interest_account(), "USD")
    assert payer.available == Decimal("99.74")
    assert LedgerEntry.objects.filter(reason="interest", account=interest_account()).count() == 2
    assert balance_of(trader, "USD", "earn").available == Decimal("0.26")
    assert balance_of(trader, "USD", "earn").locked == 1000  # the principal stays subscribed
    subscription.refresh_from_db()
    assert subscription.accrued_through == day(3)
    assert audit() == []


def test_a_late_run_catches_up_every_missed_day_exactly_once(trader, make_product, fund_interest, clock):
    clock.set(at(1))
    usd = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")  # 0.10 a day
    fund_interest("USD", "100")
    clock.set(at(3))
    accrue_interest()
    btc = subscribed(trader, make_product("BTC", annual_rate="0.0365", min_amount="0.1"), "1")  # 0.0001 a day
    fund_interest("BTC", "1")
    clock.set(at(11, hour=1))  # nothing ran for a week

    run = accrue_interest()

    assert paid_days(usd) == [day(n) for n in range(2, 11)]
    assert paid_days(btc) == [day(n) for n in range(4, 11)]
    assert run.summary()["interest"] == {"BTC": "0.00070000", "USD": "0.80"}
    assert balance_of(trader, "USD", "earn").available == Decimal("0.90")
    assert balance_of(trader, "BTC", "earn").available == Decimal("0.0007")
    assert accrue_interest().summary()["paid"] == 0
    assert audit() == []


def test_a_run_pays_up_to_the_day_it_is_given_and_never_a_day_not_yet_over(trader, make_product, fund_interest, clock):
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "100")
    clock.set(at(6))

    assert accrue_interest(day(3)).summary()["through"] == "2026-03-03"
    assert paid_days(subscription) == [day(2), day(3)]
    assert accrue_interest(day(9)).summary()["through"] == "2026-03-05"  # day 6 is not over
    assert paid_days(subscription) == [day(n) for n in range(2, 6)]


def test_a_redeemed_subscription_is_paid_the_days_it_was_held_and_nothing_after(trader, make_product,
                                                                               fund_interest, clock):
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "100")
    clock.set(at(3))
    accrue_interest()  # day 2
    clock.set(at(6))
    redeem(trader, subscription.pk)  # held whole through day 5; day 6 is not paid
    clock.set(at(10))

    accrue_interest()
    accrue_interest()

    assert paid_days(subscription) == [day(n) for n in range(2, 6)]
    assert balance_of(trader, "USD", "earn").available == Decimal("0.40")
    assert balance_of(trader, "USD").available == 10000
    assert audit() == []


def test_a_redemption_committed_after_the_run_read_its_list_ends_the_days_it_pays(trader, make_product,
                                                                                  fund_interest, clock, monkeypatch):
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "100")
    pay_asset = earn.interest.accrue_asset

    def redeemed_meanwhile(*args):
        # The run started just after midnight and read the subscription as active; a redemption whose clock
        # read the day before (held through day 3) commits before the run pays.
        clock.set(at(4, hour=23) + timedelta(minutes=59, seconds=55))
        redeem(trader, subscription.pk)
        clock.set(at(5, hour=0) + timedelta(seconds=1))
        return pay_asset(*args)

    monkeypatch.setattr(earn.interest, "accrue_asset", redeemed_meanwhile)
    clock.set(at(5, hour=0) + timedelta(seconds=1))
    run = accrue_interest()

    assert run.paid == 2
    assert paid_days(subscription) == [day(2), day(3)]
    assert balance_of(trader, "USD", "earn").available == Decimal("0.20")
    assert audit() == []


@pytest.mark.parametrize("period, amount", [(8, "0.10"), (1, "0.10"), (4, "0.11")])  # after, first day, over
def test_the_audit_names_interest_no_subscription_owed(trader, make_product, fund_interest, clock, period, amount):
    """The accruals' journals match their rows; the audit also asks whether the row was owed: a day held
    (the day after subscribing to the last), at no more than the rate."""
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")  # 0.10 a day
    fund_interest("USD", "100")
    clock.set(at(6))
    redeem(trader, subscription.pk)  # last day held: day 5
    subscription.refresh_from_db()
    assert audit() == []

    # A faulty run's payment: accrue_period itself refuses a day the subscription's row does not owe.
    InterestAccrual.objects.create(subscription=subscription, period=day(period), amount=Decimal(amount))
    apply_journal(interest_journal(subscription, day(period), Decimal(amount), interest_account().pk))

    problems = audit()
    assert len(problems) == 1 and f"subscription {subscription.pk}" in problems[0], problems


def test_a_day_whose_interest_rounds_to_zero_is_settled_without_a_ledger_entry(trader, make_product,
                                                                               fund_interest, clock):
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.01", min_amount="1"), "1")  # 0.0000274 a day
    fund_interest("USD", "1")
    clock.set(at(4))
    before = ledger_snapshot()

    run = accrue_interest()

    assert run.summary()["zero"] == 2 and run.summary()["paid"] == 0
    assert list(InterestAccrual.objects.values_list("period", "amount")) == [(day(2), 0), (day(3), 0)]
    assert ledger_snapshot() == before
    subscription.refresh_from_db()
    assert subscription.accrued_through == day(3)


def usd_and_btc_subscribed_on_day_1(trader, make_product, fund_interest, clock, usd_funding: str) -> tuple:
    """A USD subscription earning 0.10 a day and a BTC one, the interest account funded with ``usd_funding`` USD
    and 1 BTC."""
    clock.set(at(1))
    usd = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    btc = subscribed(trader, make_product("BTC", annual_rate="0.0365", min_amount="0.1"), "1")
    fund_interest("USD", usd_funding)
    fund_interest("BTC", "1")
    return usd, btc


def test_a_short_interest_account_stops_accrual_without_going_negative(trader, make_product, fund_interest,
                                                                       clock, caplog):
    usd, btc = usd_and_btc_subscribed_on_day_1(trader, make_product, fund_interest, clock, usd_funding="0.25")
    clock.set(at(5))

    with caplog.at_level(logging.ERROR, logger="earn.interest"):
        run = accrue_interest()

    assert paid_days(usd) == [day(2), day(3)]  # day 4 would take 0.10 of the 0.05 left
    assert paid_days(btc) == [day(2), day(3), day(4)]  # another asset's accrual goes on
    assert balance_of(interest_account(), "USD").available == Decimal("0.05")
    shortfall = InterestShortfall.objects.get()
    assert (shortfall.asset.symbol, shortfall.period, shortfall.subscription, shortfall.needed, shortfall.available,
            shortfall.resolved_at) == ("USD", day(4), usd, Decimal("0.10"), Decimal("0.05"), None)
    assert run.shortfalls == [shortfall]
    assert "interest accrual of USD stopped at 2026-03-04" in caplog.text
    assert audit() == []

    with pytest.raises(CommandError, match="interest account is short"):
        call_command("accrue_interest", stdout=StringIO())
    assert InterestShortfall.objects.get().last_seen_at > shortfall.last_seen_at

    fund_interest("USD", "1")
    accrue_interest()

    assert paid_days(usd) == [day(2), day(3), day(4)]
    assert InterestShortfall.objects.get().resolved_at is not None
    assert audit() == []


def test_interest_a_balance_could_not_hold_stops_that_assets_accrual_only(trader, make_product, fund_interest,
                                                                          clock, caplog):
    usd, btc = usd_and_btc_subscribed_on_day_1(trader, make_product, fund_interest, clock, usd_funding="100")
    adjust_balance(account_id=trader.pk, asset_id=usd.asset_id, amount=AMOUNT_LIMIT - Decimal("0.05"),
                   reference="test:near-the-limit", memo="a balance a day's interest would take past the limit",
                   wallet="earn")
    clock.set(at(4))

    with caplog.at_level(logging.ERROR, logger="earn.interest"):
        run = accrue_interest()

    assert paid_days(usd) == [] and paid_days(btc) == [day(2), day(3)]
    assert run.summary()["interest"] == {"BTC": "0.00020000"}
    assert f"interest on subscription {usd.pk} for 2026-03-02 not paid" in caplog.text
    assert audit() == []


def test_the_command_pays_up_to_its_date_and_prints_what_it_did(trader, make_product, fund_interest, clock):
    clock.set(at(1))
    subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "10")
    clock.set(at(5))
    out = StringIO()

    call_command("accrue_interest", "--date", "2026-03-03", stdout=out)

    assert json.loads(out.getvalue()) == {"through": "2026-03-03", "paid": 2, "zero": 0, "interest": {"USD": "0.20"},
                                          "shortfalls": []}
    with pytest.raises(CommandError):
        call_command("accrue_interest", "--date", "March 3rd", stdout=StringIO())


def test_the_beat_schedule_runs_the_accrual_task(trader, make_product, fund_interest, clock):
    clock.set(at(1))
    subscription = subscribed(trader, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "10")
    clock.set(at(3))
    entry = app.conf.beat_schedule["earn-accrue-interest"]

    result = app.tasks[entry["task"]].apply()

    assert entry["task"] == accrue_interest_task.name
    assert result.get()["paid"] == 1 and paid_days(subscription) == [day(2)]


def test_operators_fund_the_interest_account_with_a_command(markets):
    out = StringIO()

    call_command("fund_interest_account", "USD", "500.25", "--memo", "May's interest", "--by", "alice", stdout=out)

    assert json.loads(out.getvalue()) == {"asset": "USD", "available": "500.25"}
    entry = LedgerEntry.objects.get(account=interest_account())
    assert (entry.reference, entry.memo, entry.reason) == ("interest_funding:alice", "May's interest", "adjustment")
    with pytest.raises(CommandError):
        call_command("fund_interest_account", "USD", "1.001", "--memo", "too fine", stdout=StringIO())
    with pytest.raises(CommandError, match="--by takes at most 103 characters"):
        call_command("fund_interest_account", "USD", "1", "--memo", "x", "--by", "b" * 104, stdout=StringIO())
    for memo in ("m" * 201, " "):  # the column takes 200: past it PostgreSQL refused with a traceback
        with pytest.raises(CommandError, match="--memo says why, in 1 to 200 characters"):
            call_command("fund_interest_account", "USD", "1", "--memo", memo, stdout=StringIO())
    assert LedgerEntry.objects.filter(account=interest_account()).count() == 1
    assert audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_runs_racing_each_other_pay_each_day_once(funded, make_product, fund_interest, clock):
    clock.set(at(1))
    product = make_product("USD", annual_rate="0.0365")
    subscriptions = [subscribed(funded(f"saver{n}", USD="1000"), product, "1000") for n in range(3)]
    fund_interest("USD", "100")

    for today, owed in ((4, 2), (7, 3)):
        clock.set(at(today))
        runs = race(lambda _: accrue_interest().paid, range(3))
        assert sum(runs) == owed * 3  # each day owed on each of three subscriptions, paid by one run

    for subscription in subscriptions:
        assert paid_days(subscription) == [day(n) for n in range(2, 7)]
        assert len(interest_entries(subscription)) == 5
    assert balance_of(interest_account(), "USD").available == Decimal("98.50")
    assert audit() == []
