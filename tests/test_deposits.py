import json
import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from exchange.fields import EPOCH, to_milliseconds
from trading.audit import audit
from trading.models import Asset, LedgerEntry
from wallets.deposits import DepositAlreadyCredited, DepositRefused, credit_deposit
from wallets.models import Deposit

from .conftest import balance_of, ledger_snapshot
from .test_public_api import assert_error

ADD_URL = "/admin/wallets/deposit/add/"


def written() -> tuple:
    return ledger_snapshot(), Deposit.objects.count()


def deposit(account, symbol: str, amount: str, external_id: str) -> Deposit:
    return credit_deposit(account, Asset.objects.get(symbol=symbol), Decimal(amount), external_id, credited_by="test")


def test_a_deposit_credits_spot_available_against_the_outside_world(make_account, markets):
    account = make_account()

    made = deposit(account, "BTC", "0.12345678", "tx-1")

    assert balance_of(account, "BTC").available == Decimal("0.12345678")
    assert balance_of(account, "BTC").locked == 0
    entries = LedgerEntry.objects.filter(reference=f"deposit:{made.pk}")
    assert sorted((e.bucket, e.account_id, e.amount) for e in entries) == [
        ("available", account.pk, Decimal("0.12345678")), ("external", None, Decimal("-0.12345678"))]
    assert {e.reason for e in entries} == {"deposit"} and len({e.journal for e in entries}) == 1
    assert Deposit.objects.get().credited_by == "test"
    assert audit() == []


def test_a_repeated_external_id_is_refused_and_writes_nothing(make_account, markets):
    account = make_account()
    first = deposit(account, "BTC", "1", "tx-1")
    before = written()

    with pytest.raises(DepositAlreadyCredited) as refusal:
        deposit(make_account(), "BTC", "2", "tx-1")

    assert f"deposit {first.pk}" in str(refusal.value) and "tx-1" in str(refusal.value)
    assert written() == before
    assert balance_of(account, "BTC").available == 1


def test_the_same_external_id_on_another_asset_is_a_different_deposit(make_account, markets):
    account = make_account()

    deposit(account, "BTC", "1", "tx-1")
    deposit(account, "ETH", "3", "tx-1")

    assert balance_of(account, "BTC").available == 1 and balance_of(account, "ETH").available == 3
    assert audit() == []


@pytest.mark.parametrize("amount,external_id", [("0", "tx"), ("-1", "tx"), ("0.000000001", "tx"), ("1", ""),
                                                 ("1", " tx"), ("1", "x" * 129)])
def test_a_bad_amount_or_external_id_is_refused_and_writes_nothing(make_account, markets, amount, external_id):
    account = make_account()
    before = written()

    with pytest.raises(DepositRefused):
        deposit(account, "BTC", amount, external_id)

    assert written() == before


def test_a_deposit_that_would_take_a_balance_past_what_the_ledger_holds_is_refused(make_account, markets):
    account = make_account()
    deposit(account, "BTC", "999999999999999999", "tx-1")
    before = written()

    with pytest.raises(DepositRefused, match="more than the ledger holds"):
        deposit(account, "BTC", "1", "tx-2")

    assert written() == before and balance_of(account, "BTC").available == Decimal("999999999999999999")


def operator(permissions=("view_deposit",)):
    user = get_user_model().objects.create_user("operator-1", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="wallets", codename__in=permissions))
    return user


def test_an_operator_with_the_permission_credits_in_the_admin(client, make_account, markets):
    client.force_login(operator(("add_deposit", "view_deposit")))
    account = make_account()
    usd = Asset.objects.get(symbol="USD")

    assert client.get(ADD_URL).status_code == 200
    response = client.post(ADD_URL, {"account": account.pk, "asset": usd.pk, "amount": "250.50", "external_id": "wire-9"})

    assert response.status_code == 302
    made = Deposit.objects.get()
    assert (made.account, made.amount, made.external_id, made.credited_by) == (account, Decimal("250.5"), "wire-9",
                                                                                "operator-1")
    assert balance_of(account, "USD").available == Decimal("250.50")
    assert LedgerEntry.objects.filter(reference=f"deposit:{made.pk}", reason="deposit").count() == 2
    assert LogEntry.objects.filter(content_type__model="deposit", object_id=str(made.pk)).exists()
    assert audit() == []
    # Read-only afterwards: shown, never changed or deleted.
    page = client.get(f"/admin/wallets/deposit/{made.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.post(f"/admin/wallets/deposit/{made.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/wallets/deposit/").status_code == 200


def test_the_admin_refuses_a_repeated_credit_with_a_clear_message(client, make_account, markets):
    client.force_login(operator(("add_deposit", "view_deposit")))
    account = make_account()
    usd = Asset.objects.get(symbol="USD")
    form = {"account": account.pk, "asset": usd.pk, "amount": "10", "external_id": "wire-9"}
    client.post(ADD_URL, form)
    before = written()

    response = client.post(ADD_URL, form)

    assert response.status_code == 200
    assert "already credited" in str(response.context["adminform"].form.errors)
    assert written() == before


@pytest.mark.parametrize("amount, external_id, field", [
    ("0", "wire-1", "amount"), ("-5", "wire-1", "amount"), ("0.001", "wire-1", "amount"),
    # What manage.py credit_deposit refuses too: another spelling of an amount, an id with spaces around it.
    ("1e2", "wire-1", "amount"), (" 10 ", "wire-1", "amount"), ("\u0661\u0660", "wire-1", "amount"),
    (".5", "wire-1", "amount"), ("10", " wire-1 ", "external_id"),
])
def test_the_admin_refuses_a_bad_amount(client, make_account, markets, amount, external_id, field):
    client.force_login(operator(("add_deposit", "view_deposit")))
    account = make_account()
    before = written()

    response = client.post(ADD_URL, {"account": account.pk, "asset": Asset.objects.get(symbol="USD").pk,
                                     "amount": amount, "external_id": external_id})

    assert response.status_code == 200 and response.context["adminform"].form.errors[field]
    assert written() == before


def test_staff_without_the_permission_cannot_credit(client, make_account, markets):
    client.force_login(operator())
    account = make_account()
    before = written()

    response = client.post(ADD_URL, {"account": account.pk, "asset": Asset.objects.get(symbol="USD").pk,
                                     "amount": "10", "external_id": "wire-1"})

    assert response.status_code == 403
    assert written() == before


def run_command(*args) -> dict:
    out = StringIO()
    call_command("credit_deposit", *args, stdout=out)
    return json.loads(out.getvalue())


def test_the_command_credits_by_username_or_id_and_prints_the_deposit(make_account, markets):
    account = make_account("custody-client")

    by_name = run_command("custody-client", "BTC", "0.5", "0xabc", "--credited-by", "custody")
    by_id = run_command(str(account.pk), "BTC", "0.25", "0xdef")

    made = Deposit.objects.get(external_id="0xabc")
    assert by_name == {"id": made.pk, "account": account.pk, "asset": "BTC", "amount": "0.50000000",
                       "external_id": "0xabc", "credited_by": "custody", "time": to_milliseconds(made.created_at)}
    assert by_id["credited_by"] == "credit_deposit" and by_id["amount"] == "0.25000000"
    assert balance_of(account, "BTC").available == Decimal("0.75")
    assert audit() == []


@pytest.mark.parametrize("args,message", [
    (("custody-client", "BTC", "2", "0xabc"), "already credited"),
    (("nobody", "BTC", "2", "0x1"), "No account"),
    (("{first}", "BTC", "2", "0x1"), "is account {first}'s id and account {digits}'s username"),
    (("custody-client", "XYZ", "2", "0x1"), "Unknown asset"),
    (("custody-client", "BTC", "1e3", "0x1"), "plain decimal"),
    (("custody-client", "BTC", "0", "0x1"), "greater than zero"),
    (("custody-client", "BTC", "1000000000000000000", "0x1"), "a balance holds no more"),
    (("custody-client", "BTC", "2", "0x1", "--credited-by", "c" * 151), "1 to 150 characters"),
])
def test_the_command_refuses_with_a_clear_message_and_writes_nothing(make_account, markets, args, message):
    first = make_account("custody-client").pk
    digits = make_account(str(first)).pk  # a holder whose username is the other account's id
    run_command("custody-client", "BTC", "1", "0xabc")
    before = written()

    with pytest.raises(CommandError, match=re.escape(message.format(first=first, digits=digits))):
        run_command(*(arg.format(first=first) for arg in args))

    assert written() == before


def at(made: Deposit, milliseconds: int) -> None:
    Deposit.objects.filter(pk=made.pk).update(created_at=EPOCH + timedelta(milliseconds=milliseconds))


@pytest.fixture
def history(make_account, markets):
    """alice's deposits at 1,000, 2,000 ... ms (BTC, ETH alternating) and one of bob's."""
    alice, bob = make_account("alice"), make_account("bob")
    for n in range(1, 6):
        at(deposit(alice, "BTC" if n % 2 else "ETH", str(n), f"tx-{n}"), n * 1000)
    at(deposit(bob, "BTC", "9", "tx-bob"), 3000)
    return alice, bob


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["external_id"] for row in response.json()["results"]]


def test_the_list_is_newest_first_paginated_and_only_the_accounts_own(history, as_trader):
    alice, bob = history
    client = as_trader(alice)

    first = client.get("/v1/account/deposits?limit=2").json()
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()

    assert [row["external_id"] for page in (first, second, third) for row in page["results"]] == [
        "tx-5", "tx-4", "tx-3", "tx-2", "tx-1"]
    assert third["next"] is None
    assert first["results"][0] == {"id": Deposit.objects.get(external_id="tx-5").pk, "asset": "BTC",
                                   "amount": "5.00000000", "external_id": "tx-5", "time": 5000}
    assert ids(as_trader(bob).get("/v1/account/deposits")) == ["tx-bob"]


def test_the_list_filters_by_asset_and_time(history, as_trader):
    client = as_trader(history[0])

    assert ids(client.get("/v1/account/deposits?asset=ETH")) == ["tx-4", "tx-2"]
    assert ids(client.get("/v1/account/deposits?start_time=2000&end_time=4000")) == ["tx-3", "tx-2"]
    assert ids(client.get("/v1/account/deposits?asset=BTC&start_time=2000")) == ["tx-5", "tx-3"]
    assert ids(client.get("/v1/account/deposits?end_time=1000")) == []


@pytest.mark.parametrize("query,parameter", [
    ("asset=XYZ", "asset"), ("start_time=-1", "start_time"), ("start_time=1.5", "start_time"),
    ("end_time=abc", "end_time"), ("limit=0", "limit"), ("start_time=3000&end_time=2000", "end_time"),
    ("pair=BTC-USD", "pair"), ("asset=", "asset"), ("asset=BTC&asset=ETH", "asset"),
])
def test_a_bad_or_unknown_parameter_is_refused(history, as_trader, query, parameter):
    response = as_trader(history[0]).get(f"/v1/account/deposits?{query}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": parameter}


@pytest.mark.parametrize("scope", ["read_only", "trade", "trade_withdraw"])
def test_every_scope_reads_deposits(history, make_key, scope):
    client = make_key(history[0], scope=scope, ip_allowlist=["127.0.0.1"])  # a withdrawing key needs an allowlist
    assert ids(client.get("/v1/account/deposits?asset=BTC")) == ["tx-5", "tx-3", "tx-1"]


def test_deposits_need_authentication(api, markets):
    assert_error(api.get("/v1/account/deposits"), 401, "MISSING_AUTH_HEADERS")
