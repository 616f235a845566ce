"""Transfers between an account's own wallets: POST and GET /v1/account/transfers."""

from decimal import Decimal

import pytest

from trading.audit import audit
from trading.models import LedgerEntry
from wallets.models import Transfer
from wallets.transfers import TransferRequest, make_transfer

from .conftest import balance_of, ledger_snapshot
from .racing import race

pytestmark = pytest.mark.django_db
TRANSFERS = "/v1/account/transfers"


@pytest.fixture
def trader(funded):
    return funded("carol", USD="1000", BTC="2")


def body(**fields):
    return {"asset": "USD", "amount": "250.50", "from": "spot", "to": "margin", **fields}


def test_transfer_moves_available_funds_through_two_ledger_entries(trader, make_key):
    bot = make_key(trader)

    response = bot.post(TRANSFERS, body(client_transfer_id="t-1"))

    assert response.status_code == 201, response.json()
    transfer = Transfer.objects.get()
    assert response.json() == {"transfer_id": transfer.pk, "client_transfer_id": "t-1", "asset": "USD",
                               "amount": "250.50", "from": "spot", "to": "margin",
                               "time": response.json()["time"]}
    spot, margin = balance_of(trader, "USD"), balance_of(trader, "USD", "margin")
    assert (spot.available, spot.locked) == (Decimal("749.5"), 0)
    assert (margin.available, margin.locked) == (Decimal("250.5"), 0)
    entries = LedgerEntry.objects.filter(reference=f"transfer:{transfer.pk}")
    assert sorted((e.wallet, e.bucket, e.amount, e.reason) for e in entries) == [
        ("margin", "available", Decimal("250.5"), "transfer"), ("spot", "available", Decimal("-250.5"), "transfer")]
    assert audit() == []


def test_transfer_back_and_to_earn_keeps_every_unit(trader, make_key):
    bot = make_key(trader)

    assert bot.post(TRANSFERS, body(amount="1.000000000000000001", asset="BTC", to="earn")).status_code == 201
    assert bot.post(TRANSFERS, body(amount="0.000000000000000001", asset="BTC", **{"from": "earn"},
                                    to="margin")).status_code == 201

    assert balance_of(trader, "BTC").available == Decimal("0.999999999999999999")
    assert balance_of(trader, "BTC", "earn").available == Decimal(1)
    assert balance_of(trader, "BTC", "margin").available == Decimal("0.000000000000000001")
    assert audit() == []


def test_short_of_funds_is_refused_and_writes_nothing(trader, make_key, trade):
    bot = make_key(trader)
    trade(trader, side="buy", type="limit", price=Decimal("10000"), size=Decimal("0.09"))  # 900 USD of 1000 held: not available
    before = ledger_snapshot()

    response = bot.post(TRANSFERS, body(amount="100.01", client_transfer_id="short"))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_FUNDS"
    assert error["details"]["shortfalls"] == [{"asset": "USD", "wallet": "spot", "bucket": "available",
                                               "missing": "0.01"}]
    assert ledger_snapshot() == before and not Transfer.objects.exists()


@pytest.mark.parametrize("fields, field", [
    ({"to": "spot"}, "to"),
    ({"from": "futures"}, "from"),
    ({"to": "savings"}, "to"),
    ({"amount": "0"}, "amount"),
    ({"amount": "-1"}, "amount"),
    ({"amount": 1.5}, "amount"),
    ({"amount": "1e3"}, "amount"),
    ({"asset": "DOGE"}, "asset"),
    ({"client_transfer_id": "not ok"}, "client_transfer_id"),
])
def test_bad_request_names_its_field_and_writes_nothing(trader, make_key, fields, field):
    bot = make_key(trader)
    before = ledger_snapshot()

    response = bot.post(TRANSFERS, body(**fields))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and field in error["details"]["fields"], error
    assert ledger_snapshot() == before and not Transfer.objects.exists()


def test_missing_from_is_named(trader, make_key):
    fields = body()
    del fields["from"]

    response = make_key(trader).post(TRANSFERS, fields)

    assert response.status_code == 400 and "from" in response.json()["error"]["details"]["fields"]


def test_read_only_key_cannot_transfer_but_can_list(trader, make_key):
    bot = make_key(trader, scope="read_only")
    before = ledger_snapshot()

    response = bot.post(TRANSFERS, body())

    assert response.status_code == 403 and response.json()["error"]["code"] == "INSUFFICIENT_SCOPE"
    assert ledger_snapshot() == before and not Transfer.objects.exists()
    assert bot.get(TRANSFERS).status_code == 200


def test_retry_returns_the_same_transfer_and_moves_nothing_more(trader, make_key):
    bot = make_key(trader)
    first = bot.post(TRANSFERS, body(client_transfer_id="retry-me"))

    # The same transfer spelt differently, sent after the funds it would need have gone.
    retry = bot.post(TRANSFERS, body(amount="250.500", client_transfer_id="retry-me"))
    make_transfer(trader, TransferRequest("USD", Decimal("749.5"), "spot", "earn"))
    late_retry = bot.post(TRANSFERS, body(client_transfer_id="retry-me"))

    assert first.status_code == 201
    assert retry.status_code == late_retry.status_code == 200
    assert retry.json() == late_retry.json() == first.json()
    assert Transfer.objects.count() == 2
    assert balance_of(trader, "USD", "margin").available == Decimal("250.5")
    assert balance_of(trader, "USD").available == 0
    assert audit() == []


def test_reusing_a_client_transfer_id_for_another_transfer_is_refused(trader, make_key):
    bot = make_key(trader)
    first = bot.post(TRANSFERS, body(client_transfer_id="once"))
    before = ledger_snapshot()

    response = bot.post(TRANSFERS, body(client_transfer_id="once", to="earn"))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "DUPLICATE_CLIENT_TRANSFER_ID"
    assert error["details"]["transfer_id"] == first.json()["transfer_id"]
    assert ledger_snapshot() == before and Transfer.objects.count() == 1


def test_client_transfer_ids_are_per_account(trader, funded, make_key):
    other = funded("dave", USD="10")

    assert make_key(trader).post(TRANSFERS, body(client_transfer_id="same")).status_code == 201
    assert make_key(other).post(TRANSFERS, body(amount="10", client_transfer_id="same")).status_code == 201


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_identical_transfers_racing_each_other_make_one_transfer(trader):
    rounds = 6

    def send(client_transfer_id):
        return make_transfer(trader, TransferRequest("USD", Decimal("10"), "spot", "margin", client_transfer_id))

    for n in range(rounds):
        results = race(send, [f"race-{n}"] * 2)
        assert len({transfer.pk for transfer, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, True]

    assert Transfer.objects.count() == rounds
    assert balance_of(trader, "USD", "margin").available == Decimal(10 * rounds)
    assert LedgerEntry.objects.filter(reason="transfer").count() == 2 * rounds
    assert audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_identical_http_transfers_racing_each_other_make_one_transfer(trader, as_trader):
    responses = race(lambda client: client.post(TRANSFERS, body(client_transfer_id="http-race"), format="json"),
                     [as_trader(trader), as_trader(trader)])

    assert sorted(response.status_code for response in responses) == [200, 201]
    assert len({response.json()["transfer_id"] for response in responses}) == 1
    assert Transfer.objects.count() == 1 and balance_of(trader, "USD").available == Decimal("749.5")


def test_list_is_newest_first_paginated_and_filtered_by_asset(trader, funded, make_key):
    other = funded("erin", USD="10")
    make_transfer(other, TransferRequest("USD", Decimal("1"), "spot", "earn"))
    for n in range(1, 4):
        make_transfer(trader, TransferRequest("USD", Decimal(n), "spot", "margin"))
    make_transfer(trader, TransferRequest("BTC", Decimal("0.5"), "spot", "earn"))
    bot = make_key(trader, scope="read_only")

    first = bot.get(f"{TRANSFERS}?limit=2").json()
    second = bot.get(first["next"].removeprefix("http://testserver")).json()
    usd = bot.get(f"{TRANSFERS}?asset=USD").json()

    assert [t["amount"] for t in first["results"]] == ["0.50000000", "3.00"]
    assert [t["amount"] for t in second["results"]] == ["2.00", "1.00"] and second["next"] is None
    assert [(t["asset"], t["amount"], t["from"], t["to"]) for t in usd["results"]] == [
        ("USD", "3.00", "spot", "margin"), ("USD", "2.00", "spot", "margin"), ("USD", "1.00", "spot", "margin")]


def test_list_filters_by_time_and_refuses_unknown_assets(trader, make_key):
    transfer, _ = make_transfer(trader, TransferRequest("USD", Decimal("1"), "spot", "margin"))
    at = int(transfer.created_at.timestamp() * 1000)
    bot = make_key(trader)

    assert len(bot.get(f"{TRANSFERS}?start_time={at}").json()["results"]) == 1
    assert bot.get(f"{TRANSFERS}?end_time={at}").json()["results"] == []
    assert bot.get(f"{TRANSFERS}?start_time={at + 1}").json()["results"] == []
    response = bot.get(f"{TRANSFERS}?asset=DOGE")
    assert response.status_code == 400 and response.json()["error"]["details"] == {"parameter": "asset"}
