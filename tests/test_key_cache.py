"""Signed requests read their key from the process's cache (accounts/key_cache.py), and every change to
a key, its account or its tier takes effect on the very next request.

A change made here deletes the shared tokens only (Redis in CI); the rows this process cached stay as
they were, exactly what another server process holding the key would see.
"""

from django.utils import timezone

from accounts import key_cache
from accounts.keys import revoke_api_keys, update_api_key
from accounts.models import ApiKey, RateTier

from .test_admin import run_action
from .test_auth import ORDER, trader  # noqa: F401  the fixture
from .test_public_api import assert_error


def only_key() -> ApiKey:
    return ApiKey.objects.get()


def test_a_cached_key_costs_no_query_and_last_used_is_written_once_a_minute(trader, make_key,
                                                                              django_assert_num_queries):
    bot = make_key(trader, scope="read_only")
    with django_assert_num_queries(2):  # the key with its account and tier; last_used_at
        assert bot.get("/v1/time").status_code == 200

    with django_assert_num_queries(0):
        responses = [bot.get("/v1/time") for _ in range(3)]

    assert [response.status_code for response in responses] == [200] * 3
    assert only_key().last_used_at is not None


def test_revocation_by_the_service_refuses_the_next_request(trader, make_key):
    bot = make_key(trader)
    assert bot.get("/v1/time").status_code == 200

    revoke_api_keys(ApiKey.objects.all())

    assert_error(bot.get("/v1/time"), 401, "API_KEY_REVOKED")


def test_bulk_revocation_in_the_admin_refuses_the_next_request(trader, make_key, admin_client):
    first, second = make_key(trader), make_key(trader, scope="read_only")
    assert first.get("/v1/time").status_code == 200 and second.get("/v1/time").status_code == 200

    run_action(admin_client, "accounts/apikey", "revoke_keys", ApiKey.objects.values_list("pk", flat=True))

    assert_error(first.get("/v1/time"), 401, "API_KEY_REVOKED")
    assert_error(second.get("/v1/time"), 401, "API_KEY_REVOKED")


def test_a_scope_change_takes_effect_at_once_both_ways(trader, make_key):
    bot = make_key(trader, scope="read_only")
    assert_error(bot.post("/v1/orders", ORDER), 403, "INSUFFICIENT_SCOPE")

    update_api_key(only_key(), label="bot", scope="trade", ip_allowlist=[], drift_tolerance_ms=5000)
    assert bot.post("/v1/orders", ORDER).status_code == 201

    update_api_key(only_key(), label="bot", scope="read_only", ip_allowlist=[], drift_tolerance_ms=5000)
    assert_error(bot.post("/v1/orders", ORDER), 403, "INSUFFICIENT_SCOPE")


def test_a_refusal_on_cached_rows_is_checked_against_fresh_ones(trader, make_key, admin_client):
    bot = make_key(trader, scope="read_only", ip_allowlist=["10.0.0.0/8"], remote_addr="203.0.113.9")
    assert_error(bot.get("/v1/time"), 403, "IP_NOT_ALLOWED")

    admin_client.post(f"/admin/accounts/apikey/{only_key().pk}/change/", {
        "label": "bot", "scope": "read_only", "ip_allowlist": "10.0.0.0/8\n203.0.113.9", "drift_tolerance_ms": 5000,
    })

    assert bot.get("/v1/time").status_code == 200


def test_a_tier_budget_change_takes_effect_at_once(trader, make_key):
    bot = make_key(trader, scope="read_only")
    assert bot.get("/v1/time")["X-RateLimit-Limit"] == "1200"

    tier = RateTier.objects.get(pk=trader.rate_tier_id)
    tier.weight_per_minute = 2
    tier.save()

    assert bot.get("/v1/time")["X-RateLimit-Limit"] == "2"
    assert_error(bot.get("/v1/time"), 429, "RATE_LIMITED")


def test_moving_the_account_to_another_tier_takes_effect_at_once(trader, make_key, admin_client):
    bot = make_key(trader, scope="read_only")
    assert bot.get("/v1/time")["X-RateLimit-Limit"] == "1200"
    maker_tier = RateTier.objects.get(name="market_maker")

    admin_client.post(f"/admin/accounts/account/{trader.pk}/change/", {
        "user": trader.user_id, "verified": "on", "rate_tier": maker_tier.pk,
    })

    assert bot.get("/v1/time")["X-RateLimit-Limit"] == str(maker_tier.weight_per_minute)
    assert bot.get("/v1/orderbook/BTC-USD?depth=1000").status_code == 200


def test_lost_tokens_make_every_process_reload(trader, make_key, django_assert_num_queries):
    bot = make_key(trader, scope="read_only")
    assert bot.get("/v1/time").status_code == 200

    key_cache.token_store().delete([key_cache.ALL_KEYS_TOKEN])  # evicted, or Redis flushed
    with django_assert_num_queries(1):
        assert bot.get("/v1/time").status_code == 200


def test_a_replayed_nonce_is_refused_from_the_cache(trader, make_key):
    bot = make_key(trader, scope="read_only")
    assert bot.get("/v1/time", nonce="cached-nonce-1").status_code == 200

    assert_error(bot.get("/v1/time", nonce="cached-nonce-1"), 401, "NONCE_REUSED")


def test_a_write_around_the_orm_is_seen_once_the_cached_rows_are_old(trader, make_key, monkeypatch):
    bot = make_key(trader)
    assert bot.get("/v1/time").status_code == 200

    ApiKey.objects.update(revoked_at=timezone.now())  # no save(), so no token is deleted
    assert bot.get("/v1/time").status_code == 200  # the documented limit: until the rows are MAX_AGE old
    monkeypatch.setattr(key_cache, "MAX_AGE_SECONDS", 0)

    assert_error(bot.get("/v1/time"), 401, "API_KEY_REVOKED")
