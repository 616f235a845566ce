import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.management import call_command

from accounts import key_cache
from accounts import secrets as key_secrets
from accounts.keys import create_api_key
from accounts.models import ApiKey
from exchange.errors import ExchangeError
from exchange.net import trusted_proxies
from exchange.redis import get_redis
from trading.models import MatcherCommand, Order

from .conftest import ledger_snapshot
from .signing import now_ms
from .test_public_api import assert_error

ORDER = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01"}


@pytest.fixture
def trader(make_account, fund):
    account = make_account()
    fund(account, "USD", "100000")
    return account


def nothing_written():
    return (ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count(),
            sorted(ApiKey.objects.values_list("id", "last_used_at")))


def test_signed_request_places_an_order(trader, make_key):
    bot = make_key(trader)

    response = bot.post("/v1/orders", ORDER)

    assert response.status_code == 201, response.content
    assert response.json()["pair"] == "BTC-USD"
    assert ApiKey.objects.get().last_used_at is not None


def test_signed_get_with_a_query_string(trader, make_key):
    bot = make_key(trader, scope="read_only")

    response = bot.get("/v1/orders?status=open&pair=BTC-USD")

    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


@pytest.mark.parametrize("missing", ["X-Api-Key", "X-Api-Timestamp", "X-Api-Nonce", "X-Api-Signature"])
def test_each_missing_header_is_missing_auth_headers(trader, make_key, missing):
    bot = make_key(trader)
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER, headers={missing: None})

    assert_error(response, 401, "MISSING_AUTH_HEADERS")
    assert response.json()["error"]["details"]["missing"] == [missing]
    assert nothing_written() == before


def test_unknown_key(trader, make_key):
    bot = make_key(trader)
    bot.key_id = "hkt_live_000000000000000000000000"
    before = nothing_written()

    assert_error(bot.post("/v1/orders", ORDER), 401, "INVALID_API_KEY")
    assert nothing_written() == before


def test_revoked_key(trader, make_key):
    bot = make_key(trader)
    ApiKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    before = nothing_written()

    assert_error(bot.post("/v1/orders", ORDER), 401, "API_KEY_REVOKED")
    assert nothing_written() == before


@pytest.mark.parametrize("tamper", ["secret", "body", "query", "method"])
def test_bad_signature(trader, make_key, tamper):
    bot = make_key(trader)
    before = nothing_written()
    timestamp, nonce = now_ms(), "nonce-1234"
    method, path, body = {
        "secret": ("POST", "/v1/orders", ORDER),
        "body": ("POST", "/v1/orders", {**ORDER, "size": "0.02"}),
        "query": ("POST", "/v1/orders?x=1", ORDER),
        "method": ("PUT", "/v1/orders", ORDER),
    }[tamper]
    headers = bot.headers(method, path, json.dumps(body).encode(), timestamp=timestamp, nonce=nonce,
                          secret="0" * 64 if tamper == "secret" else None)

    response = bot.post("/v1/orders", ORDER, headers=headers)

    assert_error(response, 401, "INVALID_SIGNATURE")
    assert nothing_written() == before


@pytest.mark.parametrize("standing,code,status", [
    ("unknown", "INVALID_API_KEY", 401), ("revoked", "API_KEY_REVOKED", 401), ("off the allowlist", "IP_NOT_ALLOWED", 403),
    ("late", "TIMESTAMP_OUT_OF_WINDOW", 401), ("good", "INVALID_SIGNATURE", 401),
])
@pytest.mark.parametrize("signature", ["ab", "é" * 64, "g" * 64])
def test_a_malformed_signature_is_checked_in_the_signatures_place(trader, make_key, standing, code, status,
                                                                  signature):
    """docs/api.md's order: key, revocation, allowlist and timestamp before the signature, whatever its shape."""
    bot = make_key(trader, ip_allowlist=["10.0.0.0/8"] if standing == "off the allowlist" else (),
                   remote_addr="203.0.113.9")
    if standing == "unknown":
        bot.key_id = "hkt_live_000000000000000000000000"
    if standing == "revoked":
        ApiKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER, headers={"X-Api-Signature": signature},
                        timestamp=now_ms() - 60_000 if standing == "late" else None)

    assert_error(response, status, code)
    assert nothing_written() == before


@pytest.mark.parametrize("offset", [-4500, 4500])
def test_clock_skew_just_inside_the_tolerance_is_accepted(trader, make_key, offset):
    response = make_key(trader).post("/v1/orders", ORDER, timestamp=now_ms() + offset)

    assert response.status_code == 201, response.content


@pytest.mark.parametrize("offset", [-5600, 5600])
def test_clock_skew_just_outside_the_tolerance_is_refused_with_server_time(trader, make_key, offset):
    bot = make_key(trader)
    before = nothing_written()
    sent = now_ms() + offset

    response = bot.post("/v1/orders", ORDER, timestamp=sent)

    assert_error(response, 401, "TIMESTAMP_OUT_OF_WINDOW")
    details = response.json()["error"]["details"]
    assert abs(details["server_time"] - (sent - offset)) < 1000 and details["tolerance_ms"] == 5000
    assert nothing_written() == before


def test_a_nonce_is_remembered_past_hundreds_of_others(trader, make_key):
    """The embedded default keeps nonces in Django's local-memory cache, which by default holds 300
    entries and then forgets the oldest: a replay would then pass."""
    bot = make_key(trader)
    assert bot.get("/v1/account/balances", nonce="first-nonce").status_code == 200
    for _ in range(400):
        assert bot.get("/v1/account/balances").status_code == 200

    assert_error(bot.get("/v1/account/balances", nonce="first-nonce"), 401, "NONCE_REUSED")


def test_per_key_tolerance_widens_the_window(trader, make_key):
    response = make_key(trader, drift_tolerance_ms=30_000).post("/v1/orders", ORDER, timestamp=now_ms() - 25_000)

    assert response.status_code == 201


def test_replayed_nonce_is_refused(trader, make_key):
    bot = make_key(trader)
    bot.post("/v1/orders", ORDER, nonce="same-nonce-1")
    before = nothing_written()

    response = bot.post("/v1/orders", {**ORDER, "price": "62000"}, nonce="same-nonce-1")

    assert_error(response, 401, "NONCE_REUSED")
    assert nothing_written() == before


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "has space!"])
def test_malformed_nonce_is_refused(trader, make_key, nonce):
    assert_error(make_key(trader).post("/v1/orders", ORDER, nonce=nonce), 401, "MISSING_AUTH_HEADERS")


def test_address_outside_the_allowlist_is_named(trader, make_key):
    bot = make_key(trader, ip_allowlist=["10.0.0.0/8"], remote_addr="203.0.113.9")
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER)

    assert_error(response, 403, "IP_NOT_ALLOWED")
    assert response.json()["error"]["message"] == "203.0.113.9 is not on this key's IP allowlist"
    assert nothing_written() == before


@pytest.mark.parametrize("allowlist,address", [
    (["10.0.0.0/8"], "10.20.30.40"),
    (["198.51.100.7"], "198.51.100.7"),
    (["2001:db8::/32"], "2001:db8:1::5"),
    (["2001:db8::1", "10.0.0.0/8"], "2001:db8::1"),
    (["203.0.113.9"], "::ffff:203.0.113.9"),  # an IPv4 peer as a dual-stack socket reports it
    (["::ffff:203.0.113.9"], "::ffff:203.0.113.9"),  # ... and an entry written that way
    (["::ffff:203.0.113.0/120"], "203.0.113.9"),
])
def test_ipv4_ipv6_and_cidr_allowlists(trader, make_key, allowlist, address):
    assert make_key(trader, ip_allowlist=allowlist, remote_addr=address).post("/v1/orders", ORDER).status_code == 201


def test_an_ipv4_mapped_entry_is_kept_as_the_ipv4_range_it_is(trader, make_key):
    key, _ = create_api_key(trader, label="bot", scope="trade", ip_allowlist=["::ffff:203.0.113.9", "::ffff:10.0.0.0/104"])
    assert key.ip_allowlist == ["203.0.113.9/32", "10.0.0.0/8"]

    bot = make_key(trader, remote_addr="203.0.113.9")
    stored = ApiKey.objects.get(public_id=bot.key_id)
    stored.ip_allowlist = ["::ffff:203.0.113.0/120"]  # a row stored before entries were kept so
    stored.save()
    assert bot.post("/v1/orders", ORDER).status_code == 201


def test_the_address_an_allowlist_refusal_names_is_the_one_to_allowlist(trader, make_key):
    bot = make_key(trader, ip_allowlist=["10.0.0.0/8"], remote_addr="::ffff:203.0.113.9")
    refused = bot.post("/v1/orders", ORDER)
    assert_error(refused, 403, "IP_NOT_ALLOWED")
    named = refused.json()["error"]["details"]["address"]
    assert named == "203.0.113.9" and refused.json()["error"]["message"].startswith("203.0.113.9 ")

    key = ApiKey.objects.get()
    key.ip_allowlist = [named]
    key.save()

    assert bot.post("/v1/orders", ORDER).status_code == 201


def test_ipv6_outside_its_range_is_refused(trader, make_key):
    bot = make_key(trader, ip_allowlist=["2001:db8::/32"], remote_addr="2001:db9::1")

    assert_error(bot.post("/v1/orders", ORDER), 403, "IP_NOT_ALLOWED")


def test_forwarded_for_is_ignored_from_an_untrusted_peer(trader, make_key):
    bot = make_key(trader, ip_allowlist=["203.0.113.9"], remote_addr="198.51.100.1")

    response = bot.post("/v1/orders", ORDER, headers={"X-Forwarded-For": "203.0.113.9"})

    assert_error(response, 403, "IP_NOT_ALLOWED")
    assert "198.51.100.1" in response.json()["error"]["message"]


def test_forwarded_for_is_believed_from_a_trusted_proxy(trader, make_key, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    trusted_proxies.cache_clear()
    try:
        bot = make_key(trader, ip_allowlist=["203.0.113.9"])
        response = bot.post("/v1/orders", ORDER, headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.9, 127.0.0.2"})
    finally:
        trusted_proxies.cache_clear()

    assert response.status_code == 201


@pytest.mark.parametrize("proxy,peer", [
    ("127.0.0.1", "::ffff:127.0.0.1"), ("::ffff:127.0.0.1", "::ffff:127.0.0.1"), ("::ffff:127.0.0.0/104", "127.0.0.1"),
])
def test_a_trusted_proxy_is_recognised_behind_a_dual_stack_socket(trader, make_key, settings, proxy, peer):
    settings.TRUSTED_PROXIES = [proxy]
    trusted_proxies.cache_clear()
    try:
        bot = make_key(trader, ip_allowlist=["203.0.113.9"], remote_addr=peer)
        response = bot.post("/v1/orders", ORDER, headers={"X-Forwarded-For": "203.0.113.9"})
    finally:
        trusted_proxies.cache_clear()

    assert response.status_code == 201


def test_read_only_key_cannot_trade(trader, make_key):
    bot = make_key(trader, scope="read_only")
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER)

    assert_error(response, 403, "INSUFFICIENT_SCOPE")
    assert response.json()["error"]["details"] == {"scope": "read_only", "required": "trade or trade_withdraw"}
    assert nothing_written() == before
    assert bot.get("/v1/account/balances").status_code == 200
    assert_error(bot.post("/v1/orders/cancel-all", {}), 403, "INSUFFICIENT_SCOPE")


def test_withdraw_keys_need_an_allowlist(trader):
    with pytest.raises(ExchangeError) as refused:
        create_api_key(trader, label="w", scope="trade_withdraw", ip_allowlist=[])

    assert refused.value.details["fields"]["ip_allowlist"]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("allowlist,refused", [
    (["0.0.0.0/0"], "0.0.0.0/0"), (["::/0"], "::/0"), (["203.0.113.9", "128.0.0.0/1"], "128.0.0.0/1"),
    (["2001:db8::/31"], "2001:db8::/31"), (["::ffff:0.0.0.0/96"], "0.0.0.0/0"), (["10.0.0.0/8", "2001:db8::/32"], None),
])
def test_a_withdraw_keys_allowlist_must_name_addresses_not_the_internet(trader, allowlist, refused):
    if refused is None:
        assert create_api_key(trader, label="w", scope="trade_withdraw", ip_allowlist=allowlist)[0].pk
        return
    with pytest.raises(ExchangeError) as error:
        create_api_key(trader, label="w", scope="trade_withdraw", ip_allowlist=allowlist)

    [message] = error.value.details["fields"]["ip_allowlist"]
    assert message.endswith(f"not {refused}.")
    assert not ApiKey.objects.exists()
    assert create_api_key(trader, label="t", scope="trade", ip_allowlist=allowlist)[0].pk  # a trade key may


def test_bad_allowlist_entries_and_drift_are_refused(trader):
    with pytest.raises(ExchangeError) as refused:
        create_api_key(trader, label="x", scope="trade", ip_allowlist=["10.0.0.0/33", "example.com"],
                       drift_tolerance_ms=999)

    assert set(refused.value.details["fields"]) == {"ip_allowlist"}
    with pytest.raises(ExchangeError) as refused:
        create_api_key(trader, label="x", scope="trade", ip_allowlist=[], drift_tolerance_ms=60_001)
    assert set(refused.value.details["fields"]) == {"drift_tolerance_ms"}


def test_secret_is_stored_encrypted_and_survives_rotation(trader, settings):
    key, secret = create_api_key(trader, label="x", scope="trade", ip_allowlist=[])
    row = ApiKey.objects.values().get(pk=key.pk)
    assert secret not in str(row)
    assert len(secret) == 64 and int(secret, 16) >= 0  # 256 bits, hex

    old_ciphertext = row["secret_ciphertext"]
    from cryptography.fernet import Fernet

    # From the default (a key derived from SECRET_KEY), as the README says: set the new key alone.
    new_key = Fernet.generate_key()
    settings.API_KEY_ENCRYPTION_KEYS = [new_key.decode()]
    key_secrets.cipher.cache_clear()
    try:
        assert key_secrets.decrypt_secret(old_ciphertext) == secret  # still readable before the rotation
        call_command("rotate_api_key_secrets")
        rotated = ApiKey.objects.get(pk=key.pk).secret_ciphertext
        assert rotated != old_ciphertext
        assert Fernet(new_key).decrypt(rotated.encode()).decode() == secret  # the new key alone reads it
    finally:
        key_secrets.cipher.cache_clear()


def test_deep_book_needs_a_signed_verified_account(trader, make_key):
    bot = make_key(trader, scope="read_only")
    assert_error(bot.get("/v1/orderbook/BTC-USD?depth=1000"), 403, "DEPTH_REQUIRES_VERIFICATION")

    trader.verified = True
    trader.save()

    response = bot.get("/v1/orderbook/BTC-USD?depth=1000")
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == str(1200 - 2 * 10)  # a deep book weighs 10, refused or not


def test_fee_rates_and_budget_come_from_the_tier(trader, make_key):
    assert Decimal(trader.rate_tier.taker_fee_rate) == Decimal("0.002")
    response = make_key(trader).get("/v1/account/balances")
    assert response["X-RateLimit-Limit"] == "1200"


def test_withdraw_scope_is_only_for_trade_withdraw_keys(trader):
    from types import SimpleNamespace

    from accounts.permissions import CanWithdraw

    trading_key, _ = create_api_key(trader, label="t", scope="trade", ip_allowlist=[])
    withdrawing_key, _ = create_api_key(trader, label="w", scope="trade_withdraw", ip_allowlist=["10.0.0.0/8"])

    with pytest.raises(ExchangeError) as refused:
        CanWithdraw().has_permission(SimpleNamespace(auth=trading_key), view=None)

    assert refused.value.code == "INSUFFICIENT_SCOPE" and refused.value.details["required"] == "trade_withdraw"
    assert CanWithdraw().has_permission(SimpleNamespace(auth=withdrawing_key), view=None)


@pytest.mark.parametrize("offset", [-5000, 5000, -5001, 5001])
def test_the_tolerance_is_exact_to_the_millisecond(trader, make_key, monkeypatch, offset):
    server_time = now_ms()
    monkeypatch.setattr("accounts.authentication.timezone.now",
                        lambda: datetime.fromtimestamp(server_time / 1000, tz=UTC))
    bot = make_key(trader)
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER, timestamp=server_time + offset)

    if abs(offset) <= 5000:
        assert response.status_code == 201, response.content
    else:
        assert_error(response, 401, "TIMESTAMP_OUT_OF_WINDOW")
        assert nothing_written() == before


@pytest.mark.parametrize("timestamp", ["9" * 5000, "²³", "1714521600000\n"])
def test_a_malformed_timestamp_is_refused_not_an_error(trader, make_key, timestamp):
    bot = make_key(trader)
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER, headers={"X-Api-Timestamp": timestamp})

    assert_error(response, 401, "MISSING_AUTH_HEADERS")
    assert nothing_written() == before


def test_a_body_over_the_upload_limit_is_413(trader, make_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    bot = make_key(trader)
    before = nothing_written()

    response = bot.post("/v1/orders", {**ORDER, "client_order_id": "x" * 2000})

    assert_error(response, 413, "MESSAGE_TOO_LARGE")
    assert nothing_written() == before


def test_refusals_after_the_signature_write_nothing_not_even_the_last_use(make_account, make_key):
    account = make_account()
    account.rate_tier.weight_per_minute = 1
    account.rate_tier.save()
    reader = make_key(account, scope="read_only")
    before = nothing_written()

    assert_error(reader.post("/v1/orders", ORDER), 403, "INSUFFICIENT_SCOPE")
    assert nothing_written() == before
    assert_error(reader.post("/v1/orders/cancel-all", {}), 403, "INSUFFICIENT_SCOPE")
    assert reader.get("/v1/time").status_code == 200  # the one unit of budget: admitted, so its use is recorded
    used = ApiKey.objects.get().last_used_at
    assert used is not None

    ApiKey.objects.update(last_used_at=None)
    key_cache.reset()
    before = nothing_written()
    assert_error(reader.get("/v1/time"), 429, "RATE_LIMITED")
    assert nothing_written() == before


def test_a_nonce_is_remembered_for_the_widest_tolerance_a_key_can_be_given(trader, make_key, settings):
    """Raising a key's tolerance later (to 60 s) must not let a request captured under 5 s be replayed
    once a 5 s memory of its nonce has expired."""
    bot = make_key(trader)
    assert bot.get("/v1/account/balances", nonce="remembered-nonce").status_code == 200
    name = f"nonce:{ApiKey.objects.get().pk}:remembered-nonce"

    if settings.REDIS_URL:
        seconds_left = get_redis().ttl(cache.make_key(name))
    else:
        seconds_left = cache._expire_info[cache.make_and_validate_key(name)] - time.time()

    assert 2 * ApiKey.MAX_DRIFT_MS / 1000 - 5 < seconds_left <= 2 * ApiKey.MAX_DRIFT_MS / 1000 + 1


def test_a_deactivated_users_keys_stop_at_once(trader, make_key):
    bot = make_key(trader)
    assert bot.get("/v1/account/balances").status_code == 200  # cached in this process now
    before = nothing_written()

    trader.user.is_active = False
    trader.user.save()

    assert_error(bot.post("/v1/orders", ORDER), 401, "API_KEY_REVOKED")
    assert nothing_written() == before
    trader.user.is_active = True
    trader.user.save()
    assert bot.get("/v1/account/balances").status_code == 200


def test_a_secret_no_configured_key_opens_is_a_server_problem_not_the_callers(trader, make_key, settings):
    bot = make_key(trader)
    settings.SECRET_KEY = "another-" + "k" * 60  # the key its secret was encrypted with is gone
    key_secrets.cipher.cache_clear()
    before = nothing_written()
    try:
        response = bot.post("/v1/orders", ORDER)
    finally:
        key_secrets.cipher.cache_clear()

    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert nothing_written() == before


def test_under_an_asgi_server_the_signed_path_is_the_raw_one_sent():
    """Under Daphne (the embedded default) the path and query must be the bytes the client signed,
    not a re-encoding of the decoded path."""
    from io import BytesIO

    from django.core.handlers.asgi import ASGIRequest

    from accounts.authentication import request_path

    scope = {"type": "http", "method": "GET", "path": "/v1/orders", "raw_path": b"/v1/orders",
             "query_string": b"pair=BTC-USD&tag=a|b%7Cc{x}", "headers": []}

    assert request_path(ASGIRequest(scope, BytesIO(b""))) == "/v1/orders?pair=BTC-USD&tag=a|b%7Cc{x}"
    assert request_path(ASGIRequest({**scope, "query_string": b""}, BytesIO(b""))) == "/v1/orders"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the handler's thread: a connection of its own
def test_under_an_asgi_server_a_path_signed_with_a_bare_question_mark_is_accepted(trader, make_key):
    """Daphne's scope has no query string for "/v1/orders?" as for "/v1/orders": the client may have
    signed either, and nothing else."""
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator
    from django.core.handlers.asgi import ASGIHandler

    bot = make_key(trader, scope="read_only")

    async def answer(signed_path: str) -> int:
        headers = [(name.lower().encode(), value.encode()) for name, value in bot.headers("GET", signed_path, b"").items()]
        scope = {"type": "http", "method": "GET", "path": "/v1/orders", "raw_path": b"/v1/orders", "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
        communicator = ApplicationCommunicator(ASGIHandler(), scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(10)
        await communicator.receive_output(10)
        return start["status"]

    assert [async_to_sync(answer)(path) for path in ("/v1/orders", "/v1/orders?", "/v1/orders?x", "/v1/orders??")] == [
        200, 200, 401, 401]


def test_a_key_works_only_in_the_environment_that_made_it(trader, make_key, settings):
    """The sandbox and production never share a database by default; where one was shared all the same, the
    other environment's keys are refused before any look-up."""
    live = make_key(trader, scope="read_only")
    settings.EXCHANGE_ENVIRONMENT = "sandbox"
    test = make_key(trader, scope="read_only")

    in_sandbox = test.get("/v1/orders"), live.get("/v1/orders")
    settings.EXCHANGE_ENVIRONMENT = "production"
    in_production = live.get("/v1/orders"), test.get("/v1/orders")

    assert (live.key_id[:9], test.key_id[:9]) == ("hkt_live_", "hkt_test_")
    assert [response.status_code for response in (in_sandbox[0], in_production[0])] == [200, 200]
    assert_error(in_sandbox[1], 401, "INVALID_API_KEY")
    assert in_sandbox[1].json()["error"]["message"] == "A production key (hkt_live_) does not work in the sandbox."
    assert_error(in_production[1], 401, "INVALID_API_KEY")
    assert in_production[1].json()["error"]["message"] == "A sandbox key (hkt_test_) works only in the sandbox."
