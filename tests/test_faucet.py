"""The sandbox's testnet money: the faucet (POST /v1/sandbox/faucet), the starting balance of an
account opened in the sandbox, and the SANDBOX banner; none of it outside the sandbox."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from exchange.errors import ErrorCode
from exchange.settings import env_amounts
from trading.audit import audit
from trading.models import Asset, LedgerEntry

from .conftest import balance_of, ledger_snapshot

FAUCET = "/v1/sandbox/faucet"
PASSWORD = "a-long-passw0rd!"


@pytest.fixture
def sandbox(settings):
    settings.EXCHANGE_ENVIRONMENT = "sandbox"


@pytest.fixture
def faucet_only(sandbox, settings):
    """The sandbox with no starting balance: what an account holds is what the faucet gave."""
    settings.SANDBOX_STARTING_BALANCES = {}


@pytest.fixture
def production(settings):
    settings.EXCHANGE_ENVIRONMENT = "production"


@pytest.fixture
def bot(markets, make_account, make_key):
    """An account opened outside the sandbox (no starting balance) and a signed client of its trade key."""
    account = make_account("faucet-bot")
    return account, make_key(account)


def error_of(response) -> dict:
    return response.json()["error"]


def test_the_faucet_credits_through_the_ledger_as_a_deposit(faucet_only, bot, announced,
                                                           django_capture_on_commit_callbacks):
    account, client = bot

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(FAUCET, {"asset": "USD", "amount": "10000"})

    assert response.status_code == 200, response.content
    assert response.json() == {"asset": "USD", "amount": "10000.00", "available": "10000.00",
                               "remaining_today": "90000.00"}
    assert balance_of(account, "USD").available == Decimal("10000")
    entries = list(LedgerEntry.objects.filter(reason="faucet").order_by("id"))
    assert [(e.account_id, e.bucket, e.amount, e.reference) for e in entries] == [
        (account.pk, "available", Decimal("10000"), "sandbox:faucet"),
        (None, "external", Decimal("-10000"), "sandbox:faucet"),
    ]
    assert len({e.journal for e in entries}) == 1
    assert audit() == []
    assert announced == [account.pk]  # its balances channel is told, as of a deposit
    assert response["X-RateLimit-Remaining"] == "1199"  # weight 1 of the retail 1,200, like any write


def test_the_daily_limit_is_per_account_and_asset_and_a_refusal_writes_nothing(faucet_only, bot, make_account,
                                                                               make_key):
    account, client = bot
    assert client.post(FAUCET, {"asset": "USD", "amount": "60000"}).status_code == 200
    before = ledger_snapshot()

    refused = client.post(FAUCET, {"asset": "USD", "amount": "50000"})

    assert refused.status_code == 429
    assert error_of(refused)["code"] == ErrorCode.FAUCET_LIMIT_REACHED
    details = error_of(refused)["details"]
    assert {k: details[k] for k in ("asset", "limit", "remaining")} == {"asset": "USD", "limit": "100000.00",
                                                                         "remaining": "40000.00"}
    assert 0 < int(refused["Retry-After"]) == details["retry_after"] <= 86_400
    assert ledger_snapshot() == before
    # What is left today is still given; the other assets and other accounts have their own limits.
    assert client.post(FAUCET, {"asset": "USD", "amount": "40000"}).json()["remaining_today"] == "0.00"
    assert client.post(FAUCET, {"asset": "USD", "amount": "0.01"}).status_code == 429
    assert client.post(FAUCET, {"asset": "BTC", "amount": "10"}).status_code == 200
    assert client.post(FAUCET, {"asset": "BTC", "amount": "0.00000001"}).status_code == 429
    assert make_key(make_account("other")).post(FAUCET, {"asset": "USD", "amount": "100000"}).status_code == 200
    assert balance_of(account, "USD").available == Decimal("100000")
    assert balance_of(account, "BTC").available == Decimal("10")


def test_the_limit_is_whole_again_the_next_utc_day(faucet_only, bot):
    account, client = bot
    assert client.post(FAUCET, {"asset": "ETH", "amount": "100"}).status_code == 200
    assert client.post(FAUCET, {"asset": "ETH", "amount": "1"}).status_code == 429
    # Yesterday's credit: the day's sum counts from the last UTC midnight.
    moved = LedgerEntry.objects.filter(reason="faucet").first().created_at - timedelta(days=1)
    LedgerEntry.objects.filter(reason="faucet").update(created_at=moved)

    assert client.post(FAUCET, {"asset": "ETH", "amount": "100"}).status_code == 200
    assert balance_of(account, "ETH").available == Decimal("200")


@pytest.mark.parametrize("body, field", [
    ({"asset": "DOGE", "amount": "1"}, "asset"),
    ({"asset": "usd", "amount": "1"}, "asset"),
    ({"asset": "SOL", "amount": "1"}, "asset"),  # an asset the faucet does not give
    ({"asset": "USD", "amount": "0"}, "amount"),
    ({"asset": "USD", "amount": "0.001"}, "amount"),  # finer than USD's two places
    ({"asset": "BTC", "amount": "0.000000001"}, "amount"),
    ({"asset": "USD", "amount": "-5"}, "amount"),
    ({"asset": "USD", "amount": "100000.01"}, "amount"),  # more than a whole day's limit: never given
    ({"asset": "USD", "amount": 100}, "amount"),  # a JSON number
    ({"asset": "USD", "amount": "1e3"}, "amount"),
    ({"asset": "USD"}, "amount"),
    ({"amount": "1"}, "asset"),
])
def test_bad_requests_are_field_errors_and_write_nothing(faucet_only, bot, body, field):
    Asset.objects.create(symbol="SOL", name="Solana", precision=8)
    _, client = bot
    before = ledger_snapshot()

    response = client.post(FAUCET, body)

    assert response.status_code == 400
    assert error_of(response)["code"] == ErrorCode.INVALID_REQUEST
    assert list(error_of(response)["details"]["fields"]) == [field]
    assert ledger_snapshot() == before


def test_an_asset_set_to_0_is_one_the_faucet_does_not_give(faucet_only, bot, settings):
    """0 is none (README's settings): a field error, not a limit reached that would send a bot back daily."""
    settings.SANDBOX_FAUCET_DAILY_LIMITS = {**settings.SANDBOX_FAUCET_DAILY_LIMITS, "BTC": "0"}
    _, client = bot
    before = ledger_snapshot()

    response = client.post(FAUCET, {"asset": "BTC", "amount": "1"})

    assert response.status_code == 400 and list(error_of(response)["details"]["fields"]) == ["asset"]
    assert "BTC" not in error_of(response)["details"]["fields"]["asset"][0]
    assert ledger_snapshot() == before


def test_an_amount_with_trailing_zeros_on_the_grid_is_taken(faucet_only, bot):
    _, client = bot

    assert client.post(FAUCET, {"asset": "BTC", "amount": "0.5000000000"}).json()["amount"] == "0.50000000"


def test_the_faucet_needs_a_trade_key(faucet_only, bot, make_key):
    account, _ = bot
    before = ledger_snapshot()

    read_only = make_key(account, scope="read_only").post(FAUCET, {"asset": "USD", "amount": "1"})
    unsigned = Client().post(FAUCET, {"asset": "USD", "amount": "1"}, content_type="application/json")

    assert error_of(read_only)["code"] == ErrorCode.INSUFFICIENT_SCOPE
    assert unsigned.status_code == 401
    assert ledger_snapshot() == before


def test_outside_the_sandbox_the_faucet_is_not_found_as_a_missing_path_is(production, bot):
    _, client = bot
    before = ledger_snapshot()

    signed = client.post(FAUCET, {"asset": "USD", "amount": "10000"})
    unsigned = Client().post(FAUCET, {"asset": "USD", "amount": "10000"}, content_type="application/json")
    missing = Client().post("/v1/sandbox/tap", {}, content_type="application/json")

    for response, path in [(signed, FAUCET), (unsigned, FAUCET), (missing, "/v1/sandbox/tap")]:
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "NOT_FOUND", "message": f"No endpoint at {path}.",
                                             "details": {}, "request_id": response["X-Request-Id"]}}
    # To the byte: the same headers, the same body but for the path and the request's id.
    assert sorted(unsigned.headers) == sorted(missing.headers)
    assert unsigned.content.replace(FAUCET.encode(), b"PATH").replace(unsigned["X-Request-Id"].encode(), b"ID") == (
        missing.content.replace(b"/v1/sandbox/tap", b"PATH").replace(missing["X-Request-Id"].encode(), b"ID"))
    assert ledger_snapshot() == before


def test_the_openapi_document_lists_the_faucet_and_its_limit_error(api, db):
    document = api.get("/v1/openapi.json").json()

    faucet = document["paths"][FAUCET]["post"]
    assert "FAUCET_LIMIT_REACHED" in faucet["responses"]["429"]["description"]
    assert faucet["x-rate-limit-weight"] == 1
    assert "`FAUCET_LIMIT_REACHED` - 429" in document["components"]["schemas"]["ErrorCode"]["description"]


def sign_up(username: str) -> Client:
    client = Client()
    response = client.post("/account/signup/", {"username": username, "email": "n@example.com", "password1": PASSWORD,
                                                 "password2": PASSWORD})
    assert response.status_code == 302
    return client


def test_signing_up_in_the_sandbox_starts_with_money_through_the_ledger(sandbox, markets, django_user_model):
    sign_up("newcomer")

    account = django_user_model.objects.get(username="newcomer").account
    assert {s: balance_of(account, s).available for s in ("USD", "BTC", "ETH")} == {
        "USD": Decimal("10000"), "BTC": Decimal("0.5"), "ETH": Decimal("5")}
    entries = LedgerEntry.objects.filter(account=account)
    assert {(e.reason, e.reference) for e in entries} == {("faucet", "sandbox:starting-balance")}
    assert audit() == []


def test_an_asset_given_0_in_the_starting_balances_is_not_credited(sandbox, settings, markets, django_user_model):
    settings.SANDBOX_STARTING_BALANCES = {"USD": "10000", "BTC": "0", "ETH": "0.000"}

    sign_up("newcomer")

    account = django_user_model.objects.get(username="newcomer").account
    assert balance_of(account, "USD").available == Decimal("10000")
    assert balance_of(account, "BTC") is None and balance_of(account, "ETH") is None
    assert audit() == []


@pytest.mark.parametrize("value", ["USD=-1", "USD=abc", "USD=NaN", "USD=Infinity", "USD", "=5", "USD=1,BTC=", "U SD=1"])
def test_a_malformed_amounts_setting_stops_the_process_at_start(monkeypatch, value):
    monkeypatch.setenv("SANDBOX_STARTING_BALANCES", value)

    with pytest.raises(ImproperlyConfigured, match="SANDBOX_STARTING_BALANCES"):
        env_amounts("SANDBOX_STARTING_BALANCES", "USD=1")
    monkeypatch.setenv("SANDBOX_STARTING_BALANCES", "USD=10000,BTC=0")
    assert env_amounts("SANDBOX_STARTING_BALANCES", "USD=1") == {"USD": "10000", "BTC": "0"}


def test_the_starting_balance_does_not_count_against_the_faucet(sandbox, markets, make_account, make_key):
    client = make_key(make_account("started"))

    assert client.post(FAUCET, {"asset": "USD", "amount": "100000"}).json()["available"] == "110000.00"


def test_signing_up_in_production_starts_with_nothing(production, markets, django_user_model):
    sign_up("newcomer")

    account = django_user_model.objects.get(username="newcomer").account
    assert not LedgerEntry.objects.filter(account=account).exists()


def test_every_page_shows_the_sandbox_banner_in_the_sandbox_only(settings, markets):
    pages = ["/", "/markets/ETH-USD", "/account/login/", "/account/signup/", "/admin/login/", "/v1/docs"]
    settings.EXCHANGE_ENVIRONMENT = "sandbox"
    assert all(b'id="sandbox-banner"' in Client().get(page).content for page in pages)
    settings.EXCHANGE_ENVIRONMENT = "production"
    assert not any(b'id="sandbox-banner"' in Client().get(page).content for page in pages)
