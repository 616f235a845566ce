"""The audit (``trading.audit.audit``, ``manage.py audit_ledger``) of the wallets' records: each deposit,
transfer, withdrawal, earn subscription and interest accrual has exactly the journal its state says,
no entry of those kinds lacks its record, and each bucket equals the sum of its entries. Each
corruption of the database is named, by the record it breaks."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import F

from accounts.services import fee_account, interest_account
from earn.interest import accrue_interest
from earn.models import InterestAccrual, Subscription
from earn.subscriptions import redeem
from trading import ledger
from trading.audit import audit
from trading.models import Asset, Balance, LedgerEntry
from wallets.audit import journal_problems
from wallets.deposits import credit_deposit
from wallets.models import AssetWalletSettings, Deposit, Transfer, Withdrawal
from wallets.transfers import TransferRequest, make_transfer
from wallets.withdrawals import (
    WithdrawalRequest, add_address, approve_withdrawal, cancel_withdrawal, mark_sent, reject_withdrawal,
    request_withdrawal,
)

from .earn_fixtures import at, clock, make_product, subscribed  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
D = Decimal
ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


class Books:
    """One record of each kind and state, for carol."""

    def __init__(self, make_account, new_product, time):
        self.usd, self.btc = Asset.objects.get(symbol="USD"), Asset.objects.get(symbol="BTC")
        AssetWalletSettings.objects.create(asset=self.btc, withdraw_fee=D("0.0005"))
        self.carol = make_account("carol")
        time.set(at(1))
        self.deposit = credit_deposit(self.carol, self.usd, D("1000"), "tx-usd", credited_by="test")
        credit_deposit(self.carol, self.btc, D("2"), "tx-btc", credited_by="test")
        self.transfer, _ = make_transfer(self.carol, TransferRequest("USD", D("100"), "spot", "margin"))
        add_address(self.carol, self.btc, ADDRESS)
        self.withdrawals = {status: self.withdraw() for status in Withdrawal.Status.values}
        approve_withdrawal(self.withdrawals["approved"].pk, "op")
        approve_withdrawal(self.withdrawals["sent"].pk, "op")
        mark_sent(self.withdrawals["sent"].pk, "tx-out", "op")
        reject_withdrawal(self.withdrawals["rejected"].pk, "op")
        cancel_withdrawal(self.carol, self.withdrawals["cancelled"].pk)
        ledger.adjust_balance(account_id=interest_account().pk, asset_id=self.usd.pk, amount=D("10"),
                              reference="interest_funding:test", memo="fixture")
        self.active = subscribed(self.carol, new_product("USD", annual_rate="0.365"), "300")  # 0.30 a day
        self.redeemed = subscribed(self.carol, new_product("USD", annual_rate="0.0001"), "10")  # rounds to 0
        time.set(at(3))
        accrue_interest()  # day 2
        redeem(self.carol, self.redeemed.pk)
        self.paid = InterestAccrual.objects.get(subscription=self.active)
        self.zero = InterestAccrual.objects.get(subscription=self.redeemed)
        self.fee_account, self.interest_account = fee_account(), interest_account()
        for withdrawal in self.withdrawals.values():
            withdrawal.refresh_from_db()

    def withdraw(self) -> Withdrawal:
        withdrawal, _ = request_withdrawal(self.carol, WithdrawalRequest("BTC", D("0.1"), ADDRESS))
        return withdrawal


@pytest.fixture
def books(make_account, markets, settings, request) -> Books:
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(0)
    # The earn fixtures by name: as parameters, they would shadow their import.
    return Books(make_account, request.getfixturevalue("make_product"), request.getfixturevalue("clock"))


def entries(reference: str, **fields):
    return LedgerEntry.objects.filter(reference=reference, **fields)


def named(*problems: str) -> None:
    """The records' check names exactly these problems, and the audit reports them."""
    assert journal_problems() == list(problems)
    assert set(problems) <= set(audit())


def test_every_record_with_its_journal_passes(books):
    assert Withdrawal.objects.filter(status="sent", fee=D("0.0005")).exists()
    assert books.paid.amount == D("0.30") and books.zero.amount == 0
    assert Subscription.objects.filter(status="redeemed").count() == 1
    assert journal_problems() == []
    assert audit() == []


def test_a_deposit_without_its_outside_world_line(books):
    deposit = books.deposit
    entries(f"deposit:{deposit.pk}", bucket="external").delete()

    named(f"deposit {deposit.pk}: under deposit:{deposit.pk}, missing: -1000 deposit of asset {books.usd.pk} in "
          "the outside world; unexpected: none")


def test_a_deposit_record_deleted_leaves_entries_without_a_record(books):
    pk = books.deposit.pk
    Deposit.objects.filter(pk=pk).delete()

    named(f"deposit:{pk}: 2 ledger entries of kind deposit and no record of them")


def test_a_transfer_credited_to_another_wallet(books):
    transfer, carol, usd = books.transfer, books.carol.pk, books.usd.pk
    entries(f"transfer:{transfer.pk}", wallet="margin").update(wallet="earn")

    named(f"transfer {transfer.pk}: under transfer:{transfer.pk}, missing: +100 transfer of asset {usd} in "
          f"account {carol} margin available; unexpected: +100 transfer of asset {usd} in account {carol} earn "
          "available")


def test_a_transfer_record_altered(books):
    transfer, carol, usd = books.transfer, books.carol.pk, books.usd.pk
    Transfer.objects.filter(pk=transfer.pk).update(amount=D("90"))

    named(f"transfer {transfer.pk}: under transfer:{transfer.pk}, missing: -90 transfer of asset {usd} in "
          f"account {carol} spot available, +90 transfer of asset {usd} in account {carol} margin available; "
          f"unexpected: -100 transfer of asset {usd} in account {carol} spot available, +100 transfer of asset "
          f"{usd} in account {carol} margin available")


def test_a_journal_of_a_record_kind_under_no_record(books):
    carol, usd = books.carol.pk, books.usd.pk
    ledger.apply_journal(ledger.Journal(reason=ledger.Reason.TRANSFER, reference="transfer:999999", postings=[
        ledger.Posting(carol, usd, D("-1"), ledger.Bucket.AVAILABLE),
        ledger.Posting(carol, usd, D("1"), ledger.Bucket.AVAILABLE, "margin")]))

    named("transfer:999999: 2 ledger entries of kind transfer and no record of them")


@pytest.mark.parametrize("status", ["pending_review", "approved"])
def test_a_withdrawal_awaiting_payout_without_its_hold(books, status):
    withdrawal, carol, btc = books.withdrawals[status], books.carol.pk, books.btc.pk
    entries(f"withdrawal:{withdrawal.pk}", bucket="locked").delete()

    named(f"withdrawal {withdrawal.pk} ({status}): under withdrawal:{withdrawal.pk}, missing: +0.1005 withdrawal of "
          f"asset {btc} in account {carol} spot locked; unexpected: none")


def test_a_sent_withdrawal_whose_fee_never_reached_the_fee_account(books):
    withdrawal, btc = books.withdrawals["sent"], books.btc.pk
    entries(f"withdrawal:{withdrawal.pk}", account=books.fee_account).delete()

    named(f"withdrawal {withdrawal.pk} (sent): under withdrawal:{withdrawal.pk}, missing: +0.0005 withdrawal_fee of "
          f"asset {btc} in account {books.fee_account.pk} spot available; unexpected: none")


def test_a_sent_withdrawals_payout_of_the_wrong_kind(books):
    withdrawal, btc = books.withdrawals["sent"], books.btc.pk
    entries(f"withdrawal:{withdrawal.pk}", bucket="external").update(reason="withdrawal_fee")

    named(f"withdrawal {withdrawal.pk} (sent): under withdrawal:{withdrawal.pk}, missing: +0.1 withdrawal of "
          f"asset {btc} in the outside world; unexpected: +0.1 withdrawal_fee of asset {btc} in the outside world")


@pytest.mark.parametrize("status", ["rejected", "cancelled"])
def test_a_withdrawal_closed_without_releasing_its_hold(books, status):
    withdrawal, carol, btc = books.withdrawals[status], books.carol.pk, books.btc.pk
    release = entries(f"withdrawal:{withdrawal.pk}").order_by("-pk")[:2]
    LedgerEntry.objects.filter(pk__in=[entry.pk for entry in release]).delete()

    named(f"withdrawal {withdrawal.pk} ({status}): under withdrawal:{withdrawal.pk}, missing: -0.1005 withdrawal of "
          f"asset {btc} in account {carol} spot locked, +0.1005 withdrawal of asset {btc} in account {carol} spot "
          "available; unexpected: none")


def test_a_withdrawal_marked_pending_again_after_its_cancel(books):
    withdrawal, carol, btc = books.withdrawals["cancelled"], books.carol.pk, books.btc.pk
    Withdrawal.objects.filter(pk=withdrawal.pk).update(status="pending_review")

    named(f"withdrawal {withdrawal.pk} (pending_review): under withdrawal:{withdrawal.pk}, missing: none; "
          f"unexpected: -0.1005 withdrawal of asset {btc} in account {carol} spot locked, +0.1005 withdrawal of "
          f"asset {btc} in account {carol} spot available")


def test_an_active_subscription_whose_principal_never_moved(books):
    subscription, carol, usd = books.active, books.carol.pk, books.usd.pk
    entries(f"earn_subscription:{subscription.pk}").delete()

    named(f"earn subscription {subscription.pk} (active): under earn_subscription:{subscription.pk}, missing: "
          f"-300 transfer of asset {usd} in account {carol} spot available, +300 transfer of asset {usd} in account "
          f"{carol} earn locked; unexpected: none")


def test_a_redeemed_subscription_whose_principal_never_came_back(books):
    subscription, carol, usd = books.redeemed, books.carol.pk, books.usd.pk
    entries(f"earn_subscription:{subscription.pk}", wallet="spot", amount__gt=0).delete()

    named(f"earn subscription {subscription.pk} (redeemed): under earn_subscription:{subscription.pk}, missing: "
          f"+10 transfer of asset {usd} in account {carol} spot available; unexpected: none")


def test_an_interest_accrual_whose_holder_was_not_paid(books):
    accrual, carol, usd = books.paid, books.carol.pk, books.usd.pk
    reference = f"interest:{books.active.pk}:2026-03-02"
    entries(reference, account=books.carol).update(amount=D("0.31"))

    named(f"interest accrual {accrual.pk} (subscription {books.active.pk}, 2026-03-02): under {reference}, missing: "
          f"+0.3 interest of asset {usd} in account {carol} earn available; unexpected: +0.31 interest of asset "
          f"{usd} in account {carol} earn available")


def test_an_accrual_of_zero_with_a_journal_and_entries_without_an_accrual(books):
    zero, paid, usd, carol = books.zero, books.paid, books.usd.pk, books.carol.pk
    InterestAccrual.objects.filter(pk=paid.pk).delete()
    InterestAccrual.objects.filter(pk=zero.pk).update(amount=D("0.01"))

    named(f"interest accrual {zero.pk} (subscription {books.redeemed.pk}, 2026-03-02): under "
          f"interest:{books.redeemed.pk}:2026-03-02, missing: -0.01 interest of asset {usd} in account "
          f"{books.interest_account.pk} spot available, +0.01 interest of asset {usd} in account {carol} earn "
          "available; unexpected: none",
          f"interest:{books.active.pk}:2026-03-02: 2 ledger entries of kind interest and no record of them")


def sum_of_entries(balance: Balance, bucket: str) -> Decimal:
    amounts = LedgerEntry.objects.filter(account=balance.account, asset=balance.asset, wallet=balance.wallet,
                                         bucket=bucket).values_list("amount", flat=True)
    return sum(amounts, Decimal(0))


def test_a_bucket_that_is_not_the_sum_of_its_entries(books):
    margin = Balance.objects.get(account=books.carol, asset=books.usd, wallet="margin")
    Balance.objects.filter(pk=margin.pk).update(available=F("available") + 1)
    margin.refresh_from_db()

    problems = audit()

    assert f"{margin}: available {margin.available} but its entries add to {sum_of_entries(margin, 'available')}" \
        in problems
    assert journal_problems() == []


def test_entries_moved_between_two_buckets_keep_every_total_but_not_the_buckets(books):
    """Conservation and the journal sums hold; only the per-bucket sum sees it (and the record's check)."""
    carol, usd = books.carol, books.usd
    spot, margin = (Balance.objects.get(account=carol, asset=usd, wallet=wallet) for wallet in ("spot", "margin"))
    entries(f"transfer:{books.transfer.pk}").update(amount=-F("amount"))

    problems = audit()

    assert {problem for problem in problems if "entries add to" in problem} == {
        f"{balance}: available {balance.available} but its entries add to {sum_of_entries(balance, 'available')}"
        for balance in (spot, margin)}
    assert not [problem for problem in problems if "entered" in problem or "sum to zero" in problem]


def test_entries_of_a_balance_that_does_not_exist(books):
    margin = Balance.objects.get(account=books.carol, asset=books.usd, wallet="margin")
    margin.delete()

    assert (f"entries of account {books.carol.pk} asset {books.usd.pk} margin available add to "
            f"{sum_of_entries(margin, 'available')} but there is no balance") in audit()
