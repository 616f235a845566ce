import time
from types import SimpleNamespace

import pytest

from exchange import ratelimit

from .test_public_api import assert_error


@pytest.fixture
def short_window(settings):
    settings.RATE_LIMIT_WINDOW_SECONDS = 2
    return 2


def test_exactly_the_budget_passes_then_429_until_the_window_frees_it(make_account, make_key, short_window):
    account = make_account()
    account.rate_tier.weight_per_minute = 5
    account.rate_tier.save()
    bot = make_key(account, scope="read_only")

    passed = [bot.get("/v1/time") for _ in range(5)]
    refused = bot.get("/v1/time")

    assert [r.status_code for r in passed] == [200] * 5
    assert [r["X-RateLimit-Remaining"] for r in passed] == ["4", "3", "2", "1", "0"]
    assert all(r["X-RateLimit-Limit"] == "5" for r in passed)
    assert_error(refused, 429, "RATE_LIMITED")
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= short_window
    assert refused.json()["error"]["details"]["retry_after"] == retry_after
    assert 1 <= int(refused["X-RateLimit-Reset"]) <= short_window

    time.sleep(retry_after)
    assert bot.get("/v1/time").status_code == 200


def test_heavier_calls_spend_more_of_the_budget(make_account, make_key, markets):
    bot = make_key(make_account(), scope="read_only")

    orders = bot.get("/v1/orders")
    book = bot.get("/v1/orderbook/BTC-USD?depth=50")

    assert orders["X-RateLimit-Remaining"] == str(1200 - 5)
    assert book["X-RateLimit-Remaining"] == str(1200 - 5 - 1)


def test_signed_refusals_before_the_limiter_spend_nothing_of_the_key_budget(make_account, make_key, markets,
                                                                           settings):
    settings.PUBLIC_WEIGHT_PER_MINUTE = 7
    bot = make_key(make_account(), scope="read_only")
    assert bot.get("/v1/time", nonce="first-nonce")["X-RateLimit-Remaining"] == "1199"

    wrong_scope = bot.post("/v1/orders/cancel-all", {})  # weighs 10, charged with the nonce, then refunded
    replayed = bot.get("/v1/time", nonce="first-nonce")

    for refused, code in [(wrong_scope, "INSUFFICIENT_SCOPE"), (replayed, "NONCE_REUSED")]:
        assert_error(refused, 403 if code == "INSUFFICIENT_SCOPE" else 401, code)
        assert refused["X-RateLimit-Limit"] == "7"  # charged to the address, as every early refusal is
    assert bot.get("/v1/time")["X-RateLimit-Remaining"] == "1198"


def test_a_wrong_scope_is_refused_before_an_empty_budget(make_account, make_key, markets):
    account = make_account()
    account.rate_tier.weight_per_minute = 1
    account.rate_tier.save()
    bot = make_key(account, scope="read_only")
    assert bot.get("/v1/time").status_code == 200

    assert_error(bot.post("/v1/orders/cancel-all", {}), 403, "INSUFFICIENT_SCOPE")
    limited = bot.get("/v1/time", nonce="limited-nonce")
    assert_error(limited, 429, "RATE_LIMITED")
    assert_error(bot.get("/v1/time", nonce="limited-nonce"), 401, "NONCE_REUSED")  # a 429 still uses the nonce


def test_unsigned_requests_share_their_address_budget(api, markets, settings, short_window):
    settings.PUBLIC_WEIGHT_PER_MINUTE = 3

    codes = [api.get("/v1/markets", REMOTE_ADDR="198.51.100.4").status_code for _ in range(4)]
    other_address = api.get("/v1/markets", REMOTE_ADDR="198.51.100.5")

    assert codes == [200, 200, 200, 429]
    assert other_address.status_code == 200


def test_refusals_before_the_limiter_still_carry_headers(api, db):
    response = api.get("/v1/account/balances")

    assert_error(response, 401, "MISSING_AUTH_HEADERS")
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(response.headers)
    assert api.get("/v1/nowhere")["X-RateLimit-Limit"] == "1200"


def test_an_address_over_its_budget_gets_429_also_for_requests_refused_before_the_limiter(
        make_account, make_key, settings):
    """A client retrying bad signatures must be told to back off, not get 401 forever."""
    settings.PUBLIC_WEIGHT_PER_MINUTE = 3
    bot = make_key(make_account(), scope="read_only")
    bot.secret = "0" * 64  # every signature is wrong

    responses = [bot.get("/v1/account/balances") for _ in range(5)]

    assert [r.status_code for r in responses] == [401, 401, 401, 429, 429]
    assert_error(responses[3], 429, "RATE_LIMITED")
    assert 1 <= int(responses[3]["Retry-After"]) <= 60


def test_ipv6_addresses_share_their_64s_budget(api, markets, settings):
    settings.PUBLIC_WEIGHT_PER_MINUTE = 2

    codes = [api.get("/v1/markets", REMOTE_ADDR=f"2001:db8:0:7::{n}").status_code for n in range(1, 4)]
    other_network = api.get("/v1/markets", REMOTE_ADDR="2001:db8:0:8::1")

    assert codes == [200, 200, 429]
    assert other_network.status_code == 200


@pytest.mark.parametrize("short_by_ns", [1, 100_000, 400_000, 30_000_000, 99_600_000])
def test_a_websocket_connections_refusal_says_how_long_to_wait_and_waiting_that_long_is_enough(monkeypatch,
                                                                                               short_by_ns):
    """Rounded up to the millisecond: never 0, never a wait after which the next message is refused again."""
    clock = [10**12]
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic_ns=lambda: clock[0]))
    allowance = ratelimit.MessageAllowance(per_second=10, burst=2)
    assert allowance.take() == allowance.take() == 0  # the burst

    clock[0] += 100_000_000 - short_by_ns  # a tenth of a second, but for short_by_ns
    wait = allowance.take()
    clock[0] += round(wait * 1e9)

    assert 0 < wait <= short_by_ns / 1e9 + 0.001
    assert allowance.take() == 0
    assert allowance.take() > 0  # that one was counted
