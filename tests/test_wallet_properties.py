"""Random sequences of everything that moves money: deposits, limit orders that trade (the pair's
matcher run in process), cancels, transfers between wallets, earn subscriptions and redemptions,
days of interest, withdrawal requests, their cancels and the operators' approvals, rejections and
payouts. After every step each asset is conserved (all balances equal what entered from outside),
no balance is negative, each bucket equals the sum of its ledger entries, each bucket's newest entry
has it as its balance after, and the audit finds nothing. A refused step writes nothing; a step that
goes through moves exactly what it should."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from accounts.services import fee_account, interest_account, open_account
from earn.interest import accrue_interest
from earn.models import EarnProduct, InterestAccrual, Subscription
from earn.subscriptions import SubscriptionRequest, redeem, subscribe
from exchange.errors import ExchangeError
from trading import dispatch, ledger, services
from trading.audit import audit
from trading.models import Asset, Balance, LedgerEntry, Order
from trading.orders import OrderRequest
from trading.sql import ExactSum
from wallets.deposits import credit_deposit
from wallets.models import AssetWalletSettings, Deposit, Transfer, Withdrawal, WithdrawalAddress
from wallets.statements import recent_entries
from wallets.transfers import TransferRequest, make_transfer
from wallets.withdrawals import (
    OperatorRefusal, WithdrawalRequest, add_address, approve_withdrawal, cancel_withdrawal, mark_sent,
    reject_withdrawal, request_withdrawal,
)

from .conftest import ledger_snapshot
from .earn_fixtures import at, clock  # noqa: F401 (fixtures)

D = Decimal
SYMBOLS = ("USD", "BTC")
AMOUNTS = {"USD": [D("5"), D("40"), D("250.25"), D("1200")], "BTC": [D("0.0005"), D("0.02"), D("0.3"), D("1.5")]}
FEES = {"USD": D("1"), "BTC": D("0.0005")}  # per withdrawal
WALLETS = ("spot", "margin", "earn")
Status = Withdrawal.Status

who = st.integers(0, 2)
money = st.sampled_from([(symbol, amount) for symbol in SYMBOLS for amount in AMOUNTS[symbol]])
pick = st.one_of(st.just(-1), st.integers(0, 1000))  # one of the records made so far (modulo), often the newest

BucketKey = tuple[int, str, str, str]  # (account id, asset symbol, wallet, bucket)


def bucket_values() -> dict[BucketKey, Decimal]:
    return {(balance.account_id, balance.asset.symbol, balance.wallet, bucket): getattr(balance, bucket)
            for balance in Balance.objects.select_related("asset") for bucket in ("available", "locked")}


def moved(before: dict[BucketKey, Decimal], after: dict[BucketKey, Decimal]) -> dict[BucketKey, Decimal]:
    return {key: change for key in before.keys() | after.keys()
            if (change := after.get(key, D(0)) - before.get(key, D(0)))}


def written() -> tuple:
    """Balances, ledger entries and every record a step could write."""
    return (ledger_snapshot(), Deposit.objects.count(), Transfer.objects.count(), Order.objects.count(),
            sorted(Withdrawal.objects.values_list("id", "status")),
            sorted(Subscription.objects.values_list("id", "status")), InterestAccrual.objects.count())


class WalletMachine(RuleBasedStateMachine):
    """Each example runs in a savepoint rolled back at its end, with the matchers forgotten."""

    clock = None  # the test's clock (tests/earn_fixtures.py), set before the machine runs

    def __init__(self):
        super().__init__()
        self.savepoint = transaction.atomic()
        self.savepoint.__enter__()
        dispatch.reset()
        self.clock.set(at(1))
        self.entered: dict[str, Decimal] = defaultdict(Decimal)
        self.orders: list[Order] = []
        self.subscriptions: list[Subscription] = []
        self.withdrawals: list[Withdrawal] = []
        self.deposits = 0
        self.last_values: dict[BucketKey, Decimal] = {}  # the balances the last step left
        self.open_the_exchange()

    def teardown(self):
        transaction.set_rollback(True)
        self.savepoint.__exit__(None, None, None)
        dispatch.reset()

    def open_the_exchange(self):
        self.assets = {symbol: Asset.objects.get(symbol=symbol) for symbol in SYMBOLS}
        self.accounts = [open_account(get_user_model().objects.create_user(f"trader{n}")) for n in range(3)]
        self.fee_account, self.interest_account = fee_account(), interest_account()
        self.minimums = {"USD": D("10"), "BTC": D("0.001")}
        for symbol, limit in (("USD", D("2000")), ("BTC", None)):
            AssetWalletSettings.objects.create(asset=self.assets[symbol], withdraw_minimum=self.minimums[symbol],
                                               withdraw_fee=FEES[symbol], daily_withdrawal_limit=limit)
        for account in self.accounts:
            for symbol in SYMBOLS:
                add_address(account, self.assets[symbol], f"{symbol.lower()}-address-{account.pk}")
                self.credit(account, symbol, AMOUNTS[symbol][-1])
        past = self.clock.now() - timedelta(days=1)  # the waiting period has passed
        WithdrawalAddress.objects.update(created_at=past, usable_from=past)
        self.products = [
            EarnProduct.objects.create(asset=self.assets["USD"], annual_rate=D("0.365"), min_amount=D("10"),
                                       capacity=D("3000")),  # flexible, 0.1 % a day
            EarnProduct.objects.create(asset=self.assets["BTC"], annual_rate=D("0.0365"), lock_days=2,
                                       min_amount=D("0.01"), capacity=D("2")),
        ]
        self.fund_interest_account("USD", D("1"))  # a few days' worth at most: accrual stops short, then resumes
        self.fund_interest_account("BTC", D("0.0001"))

    def attempt(self, call, changes: dict | None, refusals=()) -> bool:
        """``call()``: True if it went through, the balances moved by exactly ``changes`` (unless None);
        False if refused with one of ``refusals`` (codes, or OperatorRefusal), having written nothing."""
        before, snapshot = bucket_values(), written()
        try:
            call()
        except (ExchangeError, OperatorRefusal) as refusal:
            assert getattr(refusal, "code", OperatorRefusal) in refusals, refusal
            assert written() == snapshot
            return False
        if changes is not None:
            assert moved(before, bucket_values()) == {key: change for key, change in changes.items() if change}
        return True

    def available(self, account, symbol: str, wallet: str = "spot") -> Decimal:
        return bucket_values().get((account.pk, symbol, wallet, "available"), D(0))

    # Money entering.

    def fund_interest_account(self, symbol: str, amount: Decimal) -> None:
        ledger.adjust_balance(account_id=self.interest_account.pk, asset_id=self.assets[symbol].pk, amount=amount,
                              reference="interest_funding:test", memo="operator")
        self.entered[symbol] += amount

    @rule(who=who, money=money)
    def deposit(self, who, money):
        self.credit(self.accounts[who], *money)

    def credit(self, account, symbol: str, amount: Decimal) -> None:
        self.deposits += 1
        assert self.attempt(lambda: credit_deposit(account, self.assets[symbol], amount, f"tx-{self.deposits}",
                                                   credited_by="test"),
                            {(account.pk, symbol, "spot", "available"): amount})
        self.entered[symbol] += amount

    @rule(money=money)
    def fund_interest(self, money):
        self.fund_interest_account(*money)

    # Trading.

    @rule(who=who, side=st.sampled_from(["buy", "sell"]), price=st.sampled_from([D("99.5"), D("100"), D("101")]),
          size=st.sampled_from([D("0.02"), D("0.1"), D("0.5")]))
    def order(self, who, side, price, size):
        request = OrderRequest("BTC-USD", side, "limit", price=price, size=size)
        self.attempt(lambda: self.orders.append(services.place_order(self.accounts[who], request)[0]), None,
                     ["INSUFFICIENT_FUNDS"])
        dispatch.matcher_for("BTC-USD").drain()

    @precondition(lambda self: self.orders)
    @rule(pick=pick)
    def cancel_order(self, pick):
        order = self.orders[pick % len(self.orders)]
        self.attempt(lambda: services.request_cancel(order.account, order.pk), None, ["ORDER_ALREADY_CLOSED"])
        dispatch.matcher_for("BTC-USD").drain()

    # Between wallets.

    @rule(who=who, money=money, source=st.sampled_from(("spot", *WALLETS)), destination=st.sampled_from(WALLETS))
    def transfer(self, who, money, source, destination):
        (symbol, amount), account = money, self.accounts[who]
        refusal = ("INVALID_REQUEST" if source == destination else
                   "INSUFFICIENT_FUNDS" if self.available(account, symbol, source) < amount else None)
        changes = {(account.pk, symbol, source, "available"): -amount,
                   (account.pk, symbol, destination, "available"): amount}
        went = self.attempt(lambda: make_transfer(account, TransferRequest(symbol, amount, source, destination)),
                            changes, [refusal])
        assert went == (refusal is None)

    @rule(who=who, product=st.integers(0, 1), size=st.integers(0, 3))
    def subscribe(self, who, product, size):
        product, account = self.products[product], self.accounts[who]
        symbol = product.asset.symbol
        amount = AMOUNTS[symbol][size]
        changes = {(account.pk, symbol, "spot", "available"): -amount, (account.pk, symbol, "earn", "locked"): amount}
        below_minimum, made = amount < product.min_amount, []
        if self.attempt(lambda: made.append(subscribe(account, SubscriptionRequest(product.pk, amount))[0]), changes,
                        ["INVALID_REQUEST"] if below_minimum else ["INSUFFICIENT_FUNDS", "EARN_CAPACITY_EXCEEDED"]):
            assert not below_minimum
            self.subscriptions += made

    @precondition(lambda self: self.subscriptions)
    @rule(pick=pick)
    def redeem(self, pick):
        subscription = self.subscriptions[pick % len(self.subscriptions)]
        subscription.refresh_from_db()
        account, symbol, amount = subscription.account, subscription.asset.symbol, subscription.amount
        changes = {(account.pk, symbol, "earn", "locked"): -amount, (account.pk, symbol, "spot", "available"): amount}
        locked = subscription.is_active and self.clock.now() < subscription.unlocks_at
        went = self.attempt(lambda: redeem(account, subscription.pk), changes if subscription.is_active else {},
                            ["SUBSCRIPTION_LOCKED"] if locked else [])
        assert went == (not locked)

    @rule()
    def a_day_passes(self):
        self.clock.advance(days=1)
        before = bucket_values()
        run = accrue_interest()
        changes = moved(before, bucket_values())
        paid = {symbol: -changes.get((self.interest_account.pk, symbol, "spot", "available"), D(0))
                for symbol in SYMBOLS}
        assert paid == {symbol: run.interest.get(symbol, D(0)) for symbol in SYMBOLS}
        assert all(key[2:] == ("earn", "available") for key in changes if key[0] != self.interest_account.pk)

    # Withdrawals.

    @rule(who=who, money=money)
    def withdraw(self, who, money):
        (symbol, amount), account = money, self.accounts[who]
        held, below_minimum, made = amount + FEES[symbol], amount < self.minimums[symbol], []
        if self.attempt(lambda: made.append(request_withdrawal(account, WithdrawalRequest(
                symbol, amount, f"{symbol.lower()}-address-{account.pk}"))[0]),
                {(account.pk, symbol, "spot", "available"): -held, (account.pk, symbol, "spot", "locked"): held},
                ["INVALID_REQUEST"] if below_minimum else ["INSUFFICIENT_FUNDS", "WITHDRAWAL_LIMIT_EXCEEDED"]):
            assert not below_minimum
            self.withdrawals += made

    def withdrawal(self, pick: int) -> Withdrawal:
        withdrawal = self.withdrawals[pick % len(self.withdrawals)]
        withdrawal.refresh_from_db()
        return withdrawal

    def released(self, withdrawal: Withdrawal) -> dict:
        account, symbol = withdrawal.account_id, withdrawal.asset.symbol
        return {(account, symbol, "spot", "locked"): -withdrawal.held, (account, symbol, "spot", "available"):
                withdrawal.held}

    @precondition(lambda self: self.withdrawals)
    @rule(pick=pick)
    def cancel_withdrawal(self, pick):
        withdrawal = self.withdrawal(pick)
        pending, cancelled = withdrawal.status == Status.PENDING_REVIEW, withdrawal.status == Status.CANCELLED
        went = self.attempt(lambda: cancel_withdrawal(withdrawal.account, withdrawal.pk),
                            self.released(withdrawal) if pending else {},
                            [] if pending or cancelled else ["WITHDRAWAL_NOT_CANCELLABLE"])
        assert went == (pending or cancelled)

    @precondition(lambda self: self.withdrawals)
    @rule(pick=pick)
    def approve(self, pick):
        withdrawal = self.withdrawal(pick)
        pending = withdrawal.status == Status.PENDING_REVIEW
        assert self.attempt(lambda: approve_withdrawal(withdrawal.pk, "op"), {},
                            [] if pending else [OperatorRefusal]) == pending

    @precondition(lambda self: self.withdrawals)
    @rule(pick=pick)
    def reject(self, pick):
        withdrawal = self.withdrawal(pick)
        holding = withdrawal.status in Withdrawal.HOLDING
        assert self.attempt(lambda: reject_withdrawal(withdrawal.pk, "op"), self.released(withdrawal),
                            [] if holding else [OperatorRefusal]) == holding

    @precondition(lambda self: self.withdrawals)
    @rule(pick=pick)
    def mark_sent(self, pick):
        withdrawal = self.withdrawal(pick)
        approved, symbol = withdrawal.status == Status.APPROVED, withdrawal.asset.symbol
        changes = {(withdrawal.account_id, symbol, "spot", "locked"): -withdrawal.held,
                   (self.fee_account.pk, symbol, "spot", "available"): withdrawal.fee}
        if self.attempt(lambda: mark_sent(withdrawal.pk, f"tx-out-{withdrawal.pk}", "op"), changes,
                        [] if approved else [OperatorRefusal]):
            assert approved
            self.entered[symbol] -= withdrawal.amount
        else:
            assert not approved

    # After every step.

    @invariant()
    def every_asset_is_conserved_and_no_balance_negative(self):
        held: dict[str, Decimal] = defaultdict(Decimal)
        for (_, symbol, _, _), value in bucket_values().items():
            held[symbol] += value
            assert value >= 0
        assert {symbol: held[symbol] for symbol in SYMBOLS} == {symbol: self.entered[symbol] for symbol in SYMBOLS}

    @invariant()
    def each_bucket_is_the_sum_of_its_entries(self):
        sums = {(entry["account"], entry["asset__symbol"], entry["wallet"], entry["bucket"]): entry["total"]
                for entry in LedgerEntry.objects.exclude(bucket="external").values(
                    "account", "asset__symbol", "wallet", "bucket").annotate(total=ExactSum("amount"))}
        values = bucket_values()
        assert {key: total for key, total in sums.items() if total} == {key: v for key, v in values.items() if v}
        for account_id in {account_id for account_id, *_ in moved(self.last_values, values)}:  # the step's accounts
            newest: dict[tuple, Decimal] = {}
            for entry in recent_entries(account_id, 20):  # newest first: the first of each bucket is its balance now
                key = (account_id, entry.asset.symbol, entry.wallet, entry.bucket)
                assert entry.balance_after == newest.get(key, values[key])
                newest[key] = entry.balance_after - entry.amount
        self.last_values = values

    @invariant()
    def the_audit_finds_nothing(self):
        assert audit() == []


@pytest.mark.django_db
def test_random_money_movements_keep_the_books(markets, request):
    WalletMachine.clock = request.getfixturevalue("clock")  # as a parameter, it would shadow the import
    run_state_machine_as_test(WalletMachine, settings=settings(
        max_examples=30, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
