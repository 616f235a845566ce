"""Withdrawals: POST/GET /v1/withdrawals, GET /v1/withdrawals/{id}, POST /v1/withdrawals/{id}/cancel,
the operators' transitions and what each writes to the ledger."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from accounts.models import RateTier
from accounts.services import fee_account
from exchange.errors import WithdrawalAddressNotAllowed
from exchange.fields import to_milliseconds
from trading.audit import audit
from trading.models import Asset, LedgerEntry
from wallets import deposits, withdrawals
from wallets.models import AssetWalletSettings, TierWithdrawalLimit, Withdrawal, WithdrawalAddress
from wallets.withdrawals import (
    OperatorRefusal, TransitionRefused, WithdrawalRequest, add_address, approve_withdrawal, cancel_withdrawal,
    mark_sent, reject_withdrawal, remove_address, request_withdrawal,
)

from .conftest import balance_of, ledger_snapshot
from .racing import race

pytestmark = pytest.mark.django_db
WITHDRAWALS = "/v1/withdrawals"
ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
TX_ID = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16"


@pytest.fixture
def no_waiting(settings):
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(0)


@pytest.fixture
def btc(markets) -> Asset:
    """BTC with a minimum of 0.001 and a fee of 0.0005."""
    asset = Asset.objects.get(symbol="BTC")
    AssetWalletSettings.objects.create(asset=asset, withdraw_minimum=Decimal("0.001"), withdraw_fee=Decimal("0.0005"))
    return asset


@pytest.fixture
def trader(funded, btc, no_waiting):
    """Carol, with 2 BTC and 1,000 USD, and a usable BTC address in her book."""
    account = funded("carol", USD="1000", BTC="2")
    add_address(account, btc, ADDRESS, "cold wallet")
    return account


@pytest.fixture
def bot(trader, make_key):
    return make_key(trader, scope="trade_withdraw", ip_allowlist=["127.0.0.1"])


def body(**fields):
    return {"asset": "BTC", "amount": "0.5", "address": ADDRESS, **fields}


def ask(account, amount="0.5", client_withdrawal_id=None, asset="BTC", address=ADDRESS) -> Withdrawal:
    withdrawal, _ = request_withdrawal(account, WithdrawalRequest(asset, Decimal(amount), address,
                                                                  client_withdrawal_id))
    return withdrawal


def written() -> tuple:
    """Everything a withdrawal request or transition writes: balances, ledger entries, withdrawals."""
    return ledger_snapshot(), sorted(Withdrawal.objects.values_list("id", "status", "tx_id", "updated_at"))


def spot(account, symbol="BTC") -> tuple[Decimal, Decimal]:
    balance = balance_of(account, symbol)
    return balance.available, balance.locked


def in_order(entries) -> list[tuple]:
    return sorted(entries, key=repr)  # the outside world's entries have no account id to order by


def entries_of(withdrawal) -> list[tuple]:
    return in_order((e.account_id, e.bucket, e.amount, e.reason)
                    for e in LedgerEntry.objects.filter(reference=f"withdrawal:{withdrawal.pk}"))


def assert_refused(response, status: int, code: str, before: tuple) -> dict:
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == code, error
    assert written() == before
    return error


# Requests.

def test_a_request_holds_amount_plus_fee_pending_review(trader, bot):
    response = bot.post(WITHDRAWALS, body(client_withdrawal_id="w-1"))

    assert response.status_code == 201, response.json()
    withdrawal = Withdrawal.objects.get()
    assert response.json() == {
        "id": withdrawal.pk, "client_withdrawal_id": "w-1", "asset": "BTC", "amount": "0.50000000",
        "fee": "0.00050000", "address": ADDRESS, "status": "pending_review", "tx_id": None,
        "created_at": to_milliseconds(withdrawal.created_at), "updated_at": to_milliseconds(withdrawal.updated_at),
    }
    assert spot(trader) == (Decimal("1.4995"), Decimal("0.5005"))
    assert entries_of(withdrawal) == [(trader.pk, "available", Decimal("-0.5005"), "withdrawal"),
                                      (trader.pk, "locked", Decimal("0.5005"), "withdrawal")]
    assert audit() == []


def test_an_asset_without_settings_has_no_fee_minimum_or_limit(funded, markets, no_waiting, make_key):
    account = funded("dan", USD="10")
    add_address(account, Asset.objects.get(symbol="USD"), "DE89370400440532013000")

    response = make_key(account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"]).post(
        WITHDRAWALS, body(asset="USD", amount="10", address="DE89370400440532013000"))

    assert response.status_code == 201, response.json()
    assert response.json()["fee"] == "0.00" and spot(account, "USD") == (0, Decimal(10))
    assert audit() == []


def test_the_balance_change_is_announced_after_commit(trader, announced, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        withdrawal = ask(trader)
    with django_capture_on_commit_callbacks(execute=True):
        approve_withdrawal(withdrawal.pk, "op")  # no balance changes: nothing announced
    with django_capture_on_commit_callbacks(execute=True):
        mark_sent(withdrawal.pk, "tx-1", "op")
    with django_capture_on_commit_callbacks(execute=True):
        cancel_withdrawal(trader, ask(trader).pk)

    assert announced == [trader.pk] * 4  # the request, the payout, then a request and its cancel


@pytest.mark.parametrize("scope", ["read_only", "trade"])
def test_a_key_without_the_withdraw_scope_is_refused(trader, make_key, scope):
    before = written()

    response = make_key(trader, scope=scope).post(WITHDRAWALS, body())

    error = assert_refused(response, 403, "INSUFFICIENT_SCOPE", before)
    assert error["details"] == {"scope": scope, "required": "trade_withdraw"}


@pytest.mark.parametrize("address, asset", [
    ("bc1qsomeoneelse", "BTC"),  # not in the book
    (ADDRESS.upper(), "BTC"),  # matched exactly
    (ADDRESS, "ETH"),  # in the book, for another asset
])
def test_an_address_not_in_the_book_for_the_asset_is_refused(trader, bot, address, asset):
    before = written()

    response = bot.post(WITHDRAWALS, body(address=address, asset=asset))

    error = assert_refused(response, 403, "WITHDRAWAL_ADDRESS_NOT_ALLOWED", before)
    assert error["details"] == {"asset": asset, "address": address}


def test_another_accounts_address_is_not_in_the_book(trader, bot, funded, btc):
    add_address(funded("mallory"), btc, "bc1qmallory")
    before = written()

    assert_refused(bot.post(WITHDRAWALS, body(address="bc1qmallory")), 403, "WITHDRAWAL_ADDRESS_NOT_ALLOWED", before)


def test_an_address_in_its_waiting_period_is_refused_until_it_passes(trader, bot, btc, settings):
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(hours=24)
    entry = add_address(trader, btc, "bc1qnew")
    before = written()

    response = bot.post(WITHDRAWALS, body(address="bc1qnew"))

    error = assert_refused(response, 403, "WITHDRAWAL_ADDRESS_NOT_YET_USABLE", before)
    assert entry.usable_from - entry.created_at == timedelta(hours=24)
    assert error["details"]["usable_from"] == to_milliseconds(entry.usable_from)
    WithdrawalAddress.objects.filter(pk=entry.pk).update(usable_from=timezone.now())  # the period has passed
    assert bot.post(WITHDRAWALS, body(address="bc1qnew")).status_code == 201


@pytest.mark.parametrize("amount, message", [
    ("0.0009", "minimum"),  # below 0.001
    ("0.000000001", "8 decimal places"),  # finer than BTC's precision
    ("0", "greater than zero"),
])
def test_an_amount_below_the_minimum_or_too_fine_is_refused(trader, bot, amount, message):
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body(amount=amount)), 400, "INVALID_REQUEST", before)

    assert message in error["details"]["fields"]["amount"][0]


def test_the_minimum_itself_is_accepted(trader, bot):
    assert bot.post(WITHDRAWALS, body(amount="0.001")).status_code == 201


@pytest.mark.parametrize("fields, field", [
    ({"amount": "-1"}, "amount"), ({"amount": 0.5}, "amount"), ({"asset": "DOGE"}, "asset"),
    ({"address": " " + ADDRESS}, "address"), ({"address": ""}, "address"),
    ({"client_withdrawal_id": "not ok"}, "client_withdrawal_id"),
    ({"client_withdrawl_id": "typo"}, "client_withdrawl_id"),  # a misspelt field is not ignored
])
def test_a_bad_request_names_its_field_and_writes_nothing(trader, bot, fields, field):
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body(**fields)), 400, "INVALID_REQUEST", before)

    assert field in error["details"]["fields"], error


def test_short_of_amount_plus_fee_is_refused(trader, bot):
    before = written()

    # 2 BTC is all Carol has: with the 0.0005 fee it is 0.0005 too much.
    error = assert_refused(bot.post(WITHDRAWALS, body(amount="2")), 400, "INSUFFICIENT_FUNDS", before)

    assert error["details"]["shortfalls"] == [{"asset": "BTC", "wallet": "spot", "bucket": "available",
                                               "missing": "0.0005"}]
    assert bot.post(WITHDRAWALS, body(amount="1.9995")).status_code == 201
    assert spot(trader) == (0, Decimal(2))


def test_disabled_withdrawals_are_refused(trader, bot, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(withdraw_enabled=False)
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body()), 409, "WITHDRAWALS_DISABLED", before)

    assert error["details"] == {"asset": "BTC"}


def test_disabled_deposits_are_refused(trader, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(deposit_enabled=False)
    before = written()

    with pytest.raises(deposits.DepositRefused, match="disabled"):
        deposits.credit_deposit(trader, btc, Decimal(1), "tx-in", "op")
    assert written() == before


# The daily limit.

def test_the_asset_default_daily_limit_counts_the_last_24_hours(trader, bot, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(daily_withdrawal_limit=Decimal("1"))
    first, second = ask(trader, "0.4"), ask(trader, "0.3")
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body(amount="0.30000001")), 400, "WITHDRAWAL_LIMIT_EXCEEDED", before)

    assert error["details"] == {"asset": "BTC", "limit": "1.00000000", "used": "0.70000000", "remaining": "0.30000000"}
    assert bot.post(WITHDRAWALS, body(amount="0.3")).status_code == 201  # the fee does not count
    # A day later the first no longer counts: the window rolls.
    Withdrawal.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    assert bot.post(WITHDRAWALS, body(amount="0.4")).status_code == 201
    assert second.status == "pending_review"


def test_rejected_and_cancelled_withdrawals_do_not_count(trader, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(daily_withdrawal_limit=Decimal("0.5"))
    cancel_withdrawal(trader, ask(trader, "0.5").pk)
    reject_withdrawal(ask(trader, "0.5").pk, "op")
    sent = ask(trader, "0.5")
    approve_withdrawal(sent.pk, "op")
    mark_sent(sent.pk, "tx-1", "op")
    before = written()

    with pytest.raises(withdrawals.WithdrawalLimitExceeded):
        ask(trader, "0.001")  # sent ones count
    assert written() == before


def test_a_tier_limit_replaces_the_asset_default(trader, bot, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(daily_withdrawal_limit=Decimal("10"))
    TierWithdrawalLimit.objects.create(rate_tier=trader.rate_tier, asset=btc, daily_limit=Decimal("0.1"))
    whale = RateTier.objects.create(name="whale")
    TierWithdrawalLimit.objects.create(rate_tier=whale, asset=btc, daily_limit=Decimal("5"))
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body(amount="0.2")), 400, "WITHDRAWAL_LIMIT_EXCEEDED", before)

    assert error["details"]["limit"] == "0.10000000"
    trader.rate_tier = whale
    trader.save()  # through the ORM, so that the signed-request cache reloads the account (accounts/key_cache.py)
    assert bot.post(WITHDRAWALS, body(amount="1.5")).status_code == 201


# Idempotency.

def test_a_retry_returns_the_same_withdrawal_and_holds_nothing_more(trader, bot):
    first = bot.post(WITHDRAWALS, body(client_withdrawal_id="retry-me"))
    retry = bot.post(WITHDRAWALS, body(amount="0.50", client_withdrawal_id="retry-me"))
    ask(trader, "1.4990")  # what is left, so that the retry would now be short of funds
    late_retry = bot.post(WITHDRAWALS, body(client_withdrawal_id="retry-me"))

    assert first.status_code == 201
    assert retry.status_code == late_retry.status_code == 200
    assert retry.json() == late_retry.json() == first.json()
    assert Withdrawal.objects.count() == 2 and spot(trader) == (0, Decimal(2))
    assert audit() == []


def test_reusing_a_client_withdrawal_id_for_another_withdrawal_is_refused(trader, bot):
    first = bot.post(WITHDRAWALS, body(client_withdrawal_id="once"))
    before = written()

    error = assert_refused(bot.post(WITHDRAWALS, body(amount="0.6", client_withdrawal_id="once")), 409,
                           "DUPLICATE_CLIENT_WITHDRAWAL_ID", before)

    assert error["details"] == {"withdrawal_id": first.json()["id"]}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_address_removed_while_a_request_to_it_is_checked_waits_for_that_request(trader, monkeypatch):
    """The request holds its address book entry from the check to its commit: a removal in flight waits
    for it (the withdrawal was asked before the address was removed), never lets it through afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip("a row lock another connection waits on: PostgreSQL's (SQLite's writers queue whole)")
    checked, release = threading.Event(), threading.Event()
    check_address = withdrawals.check_address

    def check_then_wait(*args):
        check_address(*args)
        checked.set()
        release.wait(30)

    def remove():
        try:
            return remove_address(trader, WithdrawalAddress.objects.get().pk)
        finally:
            connection.close()

    def ask():
        try:
            return request_withdrawal(trader, WithdrawalRequest("BTC", Decimal("0.5"), ADDRESS))
        finally:
            connection.close()

    monkeypatch.setattr(withdrawals, "check_address", check_then_wait)
    with ThreadPoolExecutor(2) as pool:
        asked = pool.submit(ask)
        assert checked.wait(30)
        removal = pool.submit(remove)
        with connections["default"].cursor() as cursor:  # the removal's DELETE waits on the entry's lock
            for _ in range(300):
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                               "AND query LIKE 'DELETE%%'")
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the removal never waited for the request's lock")
        release.set()
        (withdrawal, created), removed = asked.result(30), removal.result(30)

    assert created and removed is not None and not WithdrawalAddress.objects.exists()
    assert Withdrawal.objects.get() == withdrawal and withdrawal.address == ADDRESS
    monkeypatch.undo()
    with pytest.raises(WithdrawalAddressNotAllowed):  # after the removal, none to it
        request_withdrawal(trader, WithdrawalRequest("BTC", Decimal("0.5"), ADDRESS))
    assert audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_identical_withdrawals_racing_each_other_make_one(trader):
    rounds = 5

    for n in range(rounds):
        results = race(lambda client_id: request_withdrawal(
            trader, WithdrawalRequest("BTC", Decimal("0.1"), ADDRESS, client_id)), [f"race-{n}"] * 2)
        assert len({withdrawal.pk for withdrawal, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, True]

    assert Withdrawal.objects.count() == rounds
    assert spot(trader) == (Decimal("1.4975"), Decimal("0.5025"))
    assert LedgerEntry.objects.filter(reason="withdrawal").count() == 2 * rounds
    assert audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_identical_http_withdrawals_racing_each_other_make_one(trader, as_trader):
    responses = race(lambda client: client.post(WITHDRAWALS, body(client_withdrawal_id="http-race"), format="json"),
                     [as_trader(trader), as_trader(trader)])

    assert sorted(response.status_code for response in responses) == [200, 201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert Withdrawal.objects.count() == 1 and spot(trader) == (Decimal("1.4995"), Decimal("0.5005"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_requests_racing_for_the_last_of_the_daily_limit_get_one(trader, btc):
    AssetWalletSettings.objects.filter(asset=btc).update(daily_withdrawal_limit=Decimal("1"))

    def attempt(client_id):
        try:
            return ask(trader, "0.6", client_id).status
        except withdrawals.WithdrawalLimitExceeded as refusal:
            return refusal.code

    assert sorted(race(attempt, ["a", "b"])) == ["WITHDRAWAL_LIMIT_EXCEEDED", "pending_review"]
    assert Withdrawal.objects.count() == 1 and spot(trader) == (Decimal("1.3995"), Decimal("0.6005"))


# The state machine, and the ledger at each step.

def test_approve_then_sent_settles_the_hold_to_the_outside_world_and_the_fee_account(trader, bot):
    fees = fee_account()
    withdrawal = Withdrawal.objects.get(pk=bot.post(WITHDRAWALS, body()).json()["id"])
    assert spot(trader) == (Decimal("1.4995"), Decimal("0.5005"))

    approved = approve_withdrawal(withdrawal.pk, "olga")

    assert (approved.status, approved.reviewed_by) == ("approved", "olga")
    assert spot(trader) == (Decimal("1.4995"), Decimal("0.5005")) and audit() == []

    sent = mark_sent(withdrawal.pk, TX_ID, "sam")

    assert (sent.status, sent.tx_id, sent.sent_by) == ("sent", TX_ID, "sam")
    assert spot(trader) == (Decimal("1.4995"), 0)
    assert balance_of(fees, "BTC").available == Decimal("0.0005")
    assert entries_of(withdrawal) == in_order([
        (trader.pk, "available", Decimal("-0.5005"), "withdrawal"),
        (trader.pk, "locked", Decimal("0.5005"), "withdrawal"),
        (trader.pk, "locked", Decimal("-0.5"), "withdrawal"), (None, "external", Decimal("0.5"), "withdrawal"),
        (trader.pk, "locked", Decimal("-0.0005"), "withdrawal_fee"),
        (fees.pk, "available", Decimal("0.0005"), "withdrawal_fee"),
    ])
    shown = bot.get(f"{WITHDRAWALS}/{withdrawal.pk}").json()
    assert (shown["status"], shown["tx_id"]) == ("sent", sent.tx_id)
    assert audit() == []


def test_a_withdrawal_without_a_fee_settles_in_two_entries(funded, markets, no_waiting):
    account = funded("fee-free", ETH="1")
    add_address(account, Asset.objects.get(symbol="ETH"), "0xabc")
    withdrawal = ask(account, "1", asset="ETH", address="0xabc")

    approve_withdrawal(withdrawal.pk, "op")
    mark_sent(withdrawal.pk, "0xtx", "op")

    assert spot(account, "ETH") == (0, 0)
    assert LedgerEntry.objects.filter(reference=f"withdrawal:{withdrawal.pk}").count() == 4
    assert audit() == []


@pytest.mark.parametrize("approve_first", [False, True])
def test_a_rejection_releases_the_hold(trader, approve_first):
    withdrawal = ask(trader)
    if approve_first:
        approve_withdrawal(withdrawal.pk, "op")

    rejected = reject_withdrawal(withdrawal.pk, "rita")

    assert (rejected.status, rejected.reviewed_by, rejected.tx_id) == ("rejected", "rita", None)
    assert spot(trader) == (Decimal(2), 0)
    assert sum(amount for _, bucket, amount, _ in entries_of(withdrawal) if bucket == "available") == 0
    assert audit() == []


@pytest.mark.parametrize("transition, sources", [
    (lambda pk: approve_withdrawal(pk, "op"), {"pending_review"}),
    (lambda pk: reject_withdrawal(pk, "op"), {"pending_review", "approved"}),
    (lambda pk: mark_sent(pk, "tx-9", "op"), {"approved"}),
])
def test_an_operator_transition_from_any_other_state_is_refused_and_writes_nothing(trader, transition, sources):
    made = {"pending_review": ask(trader, "0.1"), "cancelled": ask(trader, "0.1"), "approved": ask(trader, "0.1"),
            "rejected": ask(trader, "0.1"), "sent": ask(trader, "0.1")}
    cancel_withdrawal(trader, made["cancelled"].pk)
    for status in ("approved", "sent"):
        approve_withdrawal(made[status].pk, "op")
    reject_withdrawal(made["rejected"].pk, "op")
    mark_sent(made["sent"].pk, "tx-1", "op")

    for status, withdrawal in made.items():
        if status in sources:
            continue
        before = written()
        with pytest.raises(TransitionRefused, match=f"is {status}"):
            transition(withdrawal.pk)
        assert written() == before
    assert audit() == []


@pytest.mark.parametrize("tx_id", ["", " tx", "tx\n", "x" * 129])
def test_a_bad_transaction_id_is_refused(trader, tx_id):
    withdrawal = ask(trader)
    approve_withdrawal(withdrawal.pk, "op")
    before = written()

    with pytest.raises(OperatorRefusal, match="transaction id"):
        mark_sent(withdrawal.pk, tx_id, "op")
    assert written() == before


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("name", ["approve", "reject", "mark_sent"])
def test_two_operators_racing_apply_a_transition_once(trader, name):
    transitions = {"approve": lambda pk: approve_withdrawal(pk, "op"), "reject": lambda pk: reject_withdrawal(pk, "op"),
                   "mark_sent": lambda pk: mark_sent(pk, "tx-race", "op")}
    withdrawal = ask(trader)
    if name == "mark_sent":
        approve_withdrawal(withdrawal.pk, "op")

    def attempt(pk):
        try:
            return transitions[name](pk).status
        except TransitionRefused:
            return "refused"

    outcomes = race(attempt, [withdrawal.pk] * 2)

    assert sorted(outcomes) == sorted(["refused", {"approve": "approved", "reject": "rejected",
                                                   "mark_sent": "sent"}[name]])
    assert spot(trader) == {"approve": (Decimal("1.4995"), Decimal("0.5005")), "reject": (Decimal(2), 0),
                            "mark_sent": (Decimal("1.4995"), 0)}[name]
    assert audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_holder_cancelling_while_an_operator_approves_leaves_one_of_the_two(trader):
    withdrawal = ask(trader)

    def act(who):
        try:
            return (cancel_withdrawal(trader, withdrawal.pk) if who == "holder"
                    else approve_withdrawal(withdrawal.pk, "op")).status
        except (TransitionRefused, withdrawals.WithdrawalNotCancellable):
            return "refused"

    outcomes = sorted(race(act, ["holder", "operator"]))

    assert outcomes in (["cancelled", "refused"], ["approved", "refused"])
    withdrawal.refresh_from_db()
    assert spot(trader) == ((Decimal(2), 0) if withdrawal.status == "cancelled"
                            else (Decimal("1.4995"), Decimal("0.5005")))
    assert audit() == []


# Cancel, fetch and list over the API.

def test_cancel_releases_the_hold_and_is_idempotent(trader, bot):
    created = bot.post(WITHDRAWALS, body()).json()

    first = bot.post(f"{WITHDRAWALS}/{created['id']}/cancel")
    again = bot.post(f"{WITHDRAWALS}/{created['id']}/cancel")

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "cancelled" and again.json() == first.json()
    assert spot(trader) == (Decimal(2), 0)
    assert LedgerEntry.objects.filter(reference=f"withdrawal:{created['id']}").count() == 4
    assert audit() == []


@pytest.mark.parametrize("status", ["approved", "sent", "rejected"])
def test_cancel_of_a_withdrawal_no_longer_pending_review_is_refused(trader, bot, status):
    withdrawal = ask(trader)
    approve_withdrawal(withdrawal.pk, "op") if status != "rejected" else reject_withdrawal(withdrawal.pk, "op")
    if status == "sent":
        mark_sent(withdrawal.pk, "tx-1", "op")
    before = written()

    error = assert_refused(bot.post(f"{WITHDRAWALS}/{withdrawal.pk}/cancel"), 409, "WITHDRAWAL_NOT_CANCELLABLE",
                           before)

    assert error["details"] == {"withdrawal_id": withdrawal.pk, "status": status}


def test_cancel_needs_the_withdraw_scope(trader, make_key):
    withdrawal = ask(trader)
    before = written()

    response = make_key(trader, scope="trade").post(f"{WITHDRAWALS}/{withdrawal.pk}/cancel")

    assert_refused(response, 403, "INSUFFICIENT_SCOPE", before)


def test_another_accounts_withdrawal_is_not_found(trader, funded, make_key):
    withdrawal = ask(trader)
    other = make_key(funded("eve"), scope="trade_withdraw", ip_allowlist=["127.0.0.1"])
    before = written()

    fetched = other.get(f"{WITHDRAWALS}/{withdrawal.pk}")
    cancelled = other.post(f"{WITHDRAWALS}/{withdrawal.pk}/cancel")

    for response in (fetched, cancelled):
        assert_refused(response, 404, "WITHDRAWAL_NOT_FOUND", before)
    assert other.get(f"{WITHDRAWALS}/99999999999999999999").status_code == 404


def test_every_scope_reads_withdrawals(trader, make_key):
    withdrawal = ask(trader)

    for scope in ("read_only", "trade"):
        reader = make_key(trader, scope=scope)
        assert reader.get(f"{WITHDRAWALS}/{withdrawal.pk}").json()["id"] == withdrawal.pk
        assert [w["id"] for w in reader.get(WITHDRAWALS).json()["results"]] == [withdrawal.pk]


def test_the_list_is_newest_first_paginated_and_filtered(trader, funded, markets, make_key):
    other = funded("frank", BTC="1")
    add_address(other, Asset.objects.get(symbol="BTC"), ADDRESS)
    ask(other, "0.1")
    made = [ask(trader, amount) for amount in ("0.1", "0.2", "0.3")]
    approve_withdrawal(made[1].pk, "op")
    add_address(trader, Asset.objects.get(symbol="ETH"), "0xabc")
    Withdrawal.objects.filter(pk=made[0].pk).update(created_at=timezone.now() - timedelta(hours=1))
    bot = make_key(trader, scope="read_only")

    first = bot.get(f"{WITHDRAWALS}?limit=2").json()
    second = bot.get(first["next"].removeprefix("http://testserver")).json()
    approved = bot.get(f"{WITHDRAWALS}?status=approved").json()
    open_ones = bot.get(f"{WITHDRAWALS}?status=pending_review,approved&asset=BTC").json()
    recent = bot.get(f"{WITHDRAWALS}?start_time={to_milliseconds(timezone.now() - timedelta(minutes=30))}").json()

    assert [w["amount"] for w in first["results"]] == ["0.30000000", "0.20000000"]
    assert [w["amount"] for w in second["results"]] == ["0.10000000"] and second["next"] is None
    assert [w["id"] for w in approved["results"]] == [made[1].pk]
    assert [w["id"] for w in open_ones["results"]] == [made[2].pk, made[1].pk, made[0].pk]
    assert [w["id"] for w in recent["results"]] == [made[2].pk, made[1].pk]
    assert bot.get(f"{WITHDRAWALS}?asset=ETH").json()["results"] == []


@pytest.mark.parametrize("query, field", [("status=done", "status"), ("asset=DOGE", "asset"), ("colour=red", "colour")])
def test_a_bad_list_parameter_is_refused(trader, bot, query, field):
    response = bot.get(f"{WITHDRAWALS}?{query}")

    assert response.status_code == 400 and response.json()["error"] | {"message": ""} == {
        "code": "INVALID_PARAMETER", "message": "", "details": {"parameter": field},
        "request_id": response["X-Request-Id"]}


def test_withdrawals_need_authentication(api, markets):
    assert api.get(WITHDRAWALS).json()["error"]["code"] == "MISSING_AUTH_HEADERS"


# The database refuses bad rows whatever the code does.

@pytest.mark.parametrize("change", [
    {"tx_id": "tx-early"},  # a transaction id before it is sent
    {"status": "sent", "sent_by": "op", "reviewed_by": "op"},  # sent without a transaction id
    {"status": "approved"},  # approved by nobody
    {"status": "paid"},
    {"amount": Decimal(0)},
    {"fee": Decimal("-0.1")},
])
def test_the_database_refuses_an_inconsistent_withdrawal(trader, change):
    withdrawal = ask(trader)

    with pytest.raises(IntegrityError), transaction.atomic():
        Withdrawal.objects.filter(pk=withdrawal.pk).update(**change)


@pytest.mark.parametrize("fields", [{"withdraw_fee": Decimal("-1")}, {"withdraw_minimum": Decimal("-1")},
                                    {"daily_withdrawal_limit": Decimal("-1")}])
def test_the_database_refuses_negative_wallet_settings(btc, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        AssetWalletSettings.objects.filter(asset=btc).update(**fields)
