from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.errors import ErrorCode, ExchangeError
from trading import ledger
from trading.backends import store
from trading.ledger import Bucket, Journal, Posting, Reason
from trading.models import Asset, Balance, BookLevel, LedgerEntry

from .conftest import balance_of, ledger_snapshot


@pytest.fixture
def usd(markets) -> Asset:
    return Asset.objects.get(symbol="USD")


def transfer(source, target, asset, amount: Decimal) -> Journal:
    return Journal(
        reason=Reason.SETTLEMENT,
        reference="test:transfer",
        postings=[
            Posting(source.pk, asset.pk, -amount, Bucket.AVAILABLE),
            Posting(target.pk, asset.pk, amount, Bucket.AVAILABLE),
        ],
    )


def test_credit_writes_balanced_entries(make_account, usd):
    account = make_account()

    ledger.adjust_balance(account_id=account.pk, asset_id=usd.pk, amount=Decimal("100.25"), reference="t", memo="m")

    assert balance_of(account, "USD").available == Decimal("100.25")
    entries = LedgerEntry.objects.filter(reference="t")
    assert sorted(e.amount for e in entries) == [Decimal("-100.25"), Decimal("100.25")]
    assert {e.bucket for e in entries} == {Bucket.AVAILABLE, Bucket.EXTERNAL}
    assert len({e.journal for e in entries}) == 1


def test_journal_that_does_not_sum_to_zero_is_refused_and_writes_nothing(make_account, fund, usd):
    account = make_account()
    fund(account, "USD", "10")
    before = ledger_snapshot()
    unbalanced = Journal(
        reason=Reason.SETTLEMENT,
        reference="bad",
        postings=[Posting(account.pk, usd.pk, Decimal("-1"), Bucket.AVAILABLE),
                  Posting(account.pk, usd.pk, Decimal("2"), Bucket.LOCKED)],
    )

    with pytest.raises(ledger.UnbalancedJournal):
        ledger.apply_journal(unbalanced)

    assert ledger_snapshot() == before


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("NaN"), 1.5])
def test_zero_nan_and_float_postings_are_refused(make_account, usd, amount):
    account = make_account()
    journal = Journal(reason=Reason.SETTLEMENT, reference="bad", postings=[Posting(account.pk, usd.pk, amount, Bucket.AVAILABLE)])

    with pytest.raises(ledger.UnbalancedJournal):
        ledger.apply_journal(journal)


def test_debit_below_zero_is_refused_and_writes_nothing(make_account, fund, usd):
    rich, poor = make_account(), make_account()
    fund(poor, "USD", "5")
    before = ledger_snapshot()

    with pytest.raises(ExchangeError) as refused:
        ledger.apply_journal(transfer(poor, rich, usd, Decimal("5.01")))

    assert refused.value.code == ErrorCode.INSUFFICIENT_FUNDS
    assert refused.value.details["shortfalls"] == [
        {"asset": "USD", "wallet": "spot", "bucket": "available", "missing": "0.01"}
    ]
    assert ledger_snapshot() == before


def test_batch_is_all_or_nothing(make_account, fund, usd):
    a, b = make_account(), make_account()
    fund(a, "USD", "10")
    before = ledger_snapshot()

    with pytest.raises(ExchangeError):
        ledger.apply_journals([transfer(a, b, usd, Decimal("10")), transfer(a, b, usd, Decimal("0.01"))])

    assert ledger_snapshot() == before


def test_database_refuses_a_negative_balance_written_around_the_ledger(make_account, fund):
    account = make_account()
    fund(account, "USD", "1")

    with pytest.raises(IntegrityError), transaction.atomic():
        Balance.objects.filter(account=account).update(available=Decimal("-1"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    moves=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.decimals("0.01", "60", places=2)), min_size=1, max_size=25
    )
)
def test_random_transfers_conserve_money_and_never_go_negative(make_account, fund, usd, moves):
    accounts = [make_account() for _ in range(3)]
    for account in accounts:
        fund(account, "USD", "50")
    total_before = sum(balance_of(a, "USD").available for a in accounts)

    for source, target, amount in moves:
        try:
            ledger.apply_journal(transfer(accounts[source], accounts[target], usd, amount))
        except ExchangeError as error:
            assert error.code == ErrorCode.INSUFFICIENT_FUNDS
            assert balance_of(accounts[source], "USD").available < amount

    balances = [balance_of(a, "USD") for a in accounts]
    assert sum(b.available for b in balances) == total_before
    assert all(b.available >= 0 and b.locked >= 0 for b in balances)
    for balance in balances:
        entries = LedgerEntry.objects.filter(account_id=balance.account_id, asset=usd, bucket=Bucket.AVAILABLE)
        assert sum(e.amount for e in entries) == balance.available


def test_amounts_are_stored_exactly_and_sorted_numerically(make_account, fund, btc_usd):
    account = make_account()
    huge_and_fine = "123456789012345678.123456789012345678"  # 36 significant digits

    fund(account, "USD", huge_and_fine)
    fund(account, "USD", "0.000000000000000001")

    assert balance_of(account, "USD").available == Decimal("123456789012345678.123456789012345679")
    BookLevel.objects.bulk_create(
        BookLevel(market=btc_usd, side="ask", price=Decimal(p), size=Decimal("1")) for p in ["10", "9.5", "100", "9.05"]
    )
    prices = list(BookLevel.objects.filter(market=btc_usd, price__gte=Decimal("9.5")).order_by("price")
                  .values_list("price", flat=True))
    assert prices == [Decimal("9.5"), Decimal("10"), Decimal("100")]


def test_hold_funds_moves_available_to_locked_with_one_journal(make_account, fund, usd):
    account = make_account()
    fund(account, "USD", "100")

    ledger.hold_funds(account.pk, usd.pk, Decimal("30.25"), reference="order:7")

    balance = balance_of(account, "USD")
    assert (balance.available, balance.locked) == (Decimal("69.75"), Decimal("30.25"))
    entries = list(LedgerEntry.objects.filter(reference="order:7").order_by("pk"))
    assert [(e.bucket, e.amount, e.reason) for e in entries] == [
        (Bucket.AVAILABLE, Decimal("-30.25"), Reason.ORDER_HOLD),
        (Bucket.LOCKED, Decimal("30.25"), Reason.ORDER_HOLD),
    ]
    assert len({e.journal for e in entries}) == 1 and {e.account_id for e in entries} == {account.pk}


@pytest.mark.parametrize("deposit", ["100", None])
def test_hold_funds_refuses_a_shortfall_like_the_general_path_and_writes_nothing(make_account, fund, usd, deposit):
    account = make_account()
    if deposit:
        fund(account, "USD", deposit)
    before = ledger_snapshot()
    general = ledger.bucket_transfer(account.pk, usd.pk, Decimal("100.01"), source=Bucket.AVAILABLE,
                                     target=Bucket.LOCKED, reason=Reason.ORDER_HOLD, reference="order:8")
    with pytest.raises(ExchangeError) as expected:
        ledger.apply_journal(general)

    with pytest.raises(ExchangeError) as refused:
        ledger.hold_funds(account.pk, usd.pk, Decimal("100.01"), reference="order:8")

    assert refused.value.code == ErrorCode.INSUFFICIENT_FUNDS
    assert (refused.value.message, refused.value.details) == (expected.value.message, expected.value.details)
    assert refused.value.details["shortfalls"][0]["missing"] == ("0.01" if deposit else "100.01")
    assert ledger_snapshot() == before


def test_journal_statements_apply_a_settlement_as_apply_journals_does(make_account, fund, usd):
    """The matcher's settlement as statements: same balances and entries as apply_journals, a balance
    row made where none was, and a shortfall refused by the database."""
    execute = store().execute

    buyer, seller, newcomer = make_account(), make_account(), make_account()
    fund(buyer, "USD", "100")
    ledger.hold_funds(buyer.pk, usd.pk, Decimal("60"), reference="test:hold")
    settlement = Journal(reason=Reason.SETTLEMENT, reference="settlement:test:1", postings=[
        Posting(buyer.pk, usd.pk, Decimal("-60"), Bucket.LOCKED),
        Posting(buyer.pk, usd.pk, Decimal("0.000000000000000001"), Bucket.AVAILABLE),
        Posting(seller.pk, usd.pk, Decimal("40"), Bucket.AVAILABLE),
        Posting(newcomer.pk, usd.pk, Decimal("19.999999999999999999"), Bucket.AVAILABLE),
    ])
    with transaction.atomic():
        execute(ledger.journal_statements(settlement))

    assert (balance_of(buyer, "USD").available, balance_of(buyer, "USD").locked) == (
        Decimal("40.000000000000000001"), 0)
    assert balance_of(seller, "USD").available == Decimal("40")
    assert balance_of(newcomer, "USD").available == Decimal("19.999999999999999999")
    assert sorted(LedgerEntry.objects.filter(reference="settlement:test:1").values_list("account_id", "bucket", "amount")) \
        == sorted((p.account_id, p.bucket, p.amount) for p in settlement.postings)

    before = ledger_snapshot()
    overdraft = Journal(reason=Reason.SETTLEMENT, reference="settlement:test:2", postings=[
        Posting(seller.pk, usd.pk, Decimal("-40.01"), Bucket.AVAILABLE),
        Posting(newcomer.pk, usd.pk, Decimal("40.01"), Bucket.AVAILABLE),
    ])
    with pytest.raises(IntegrityError), transaction.atomic():
        execute(ledger.journal_statements(overdraft))
    assert ledger_snapshot() == before
