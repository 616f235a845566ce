from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import IntegrityError, transaction

from accounts.keys import create_api_key
from accounts.models import Account, ApiKey, RateTier
from accounts.services import open_account
from exchange.ratelimit import MAX_REQUEST_WEIGHT
from trading import dispatch, services
from trading.models import Asset, Balance, LedgerEntry, Market, Order
from wallets.models import AssetWalletSettings

from .conftest import balance_of, ledger_snapshot

ADJUST_URL = "/admin/trading/balance/adjust/"


def run_action(admin_client, model_path: str, action: str, ids):
    return admin_client.post(f"/admin/{model_path}/", {"action": action, "_selected_action": [str(i) for i in ids]})


@pytest.mark.parametrize("action,status", [("halt", "halted"), ("set_cancel_only", "cancel_only"), ("resume", "online")])
def test_market_status_actions_change_status_and_are_logged(admin_client, markets, action, status):
    market = markets["ETH-USD"]
    if status == "online":
        Market.objects.filter(pk=market.pk).update(status=Market.Status.HALTED)

    response = run_action(admin_client, "trading/market", action, [market.pk])

    assert response.status_code == 302
    market.refresh_from_db()
    assert market.status == status
    assert markets["BTC-USD"].status == "online"
    log = LogEntry.objects.get(object_id=str(market.pk), content_type__model="market")
    assert status in log.get_change_message()


def test_status_is_shown_on_the_public_markets_endpoint_after_halt(admin_client, api, markets):
    run_action(admin_client, "trading/market", "halt", [markets["BTC-USD"].pk])

    statuses = {m["pair"]: m["status"] for m in api.get("/v1/markets").json()}

    assert statuses == {"BTC-USD": "halted", "ETH-USD": "online", "ETH-BTC": "online"}


def test_verify_accounts_action(admin_client, make_account):
    account = make_account()

    run_action(admin_client, "accounts/account", "verify_accounts", [account.pk])

    account.refresh_from_db()
    assert account.verified is True
    assert LogEntry.objects.filter(object_id=str(account.pk), content_type__model="account").exists()


def test_the_verify_action_changes_every_selected_account_or_none(admin_client, make_account, monkeypatch):
    """Redis down as the second account's cached keys are forgotten: a 503, and the first is not verified
    either (an outage answers 503 having changed nothing)."""
    import redis

    from accounts import key_cache

    first, second = make_account(), make_account()
    forget = key_cache.forget_accounts
    forgotten = []

    def down_at_the_second(account_ids):
        forgotten.extend(account_ids)
        if len(forgotten) == 2:
            raise redis.exceptions.ConnectionError("Redis is down")
        forget(account_ids)

    monkeypatch.setattr(key_cache, "forget_accounts", down_at_the_second)
    admin_client.raise_request_exception = False

    response = run_action(admin_client, "accounts/account", "verify_accounts", [first.pk, second.pk])

    assert response.status_code == 503 and len(forgotten) == 2
    assert not Account.objects.filter(pk__in=[first.pk, second.pk], verified=True).exists()
    assert not LogEntry.objects.filter(content_type__model="account").exists()


def test_the_verify_action_works_on_a_searched_list(admin_client, make_account):
    """A search joins the users (an outer join, which PostgreSQL locks no row of FOR UPDATE)."""
    account = make_account("searched")

    response = admin_client.post("/admin/accounts/account/?q=searched",
                                 {"action": "verify_accounts", "_selected_action": [str(account.pk)]})

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.verified


@pytest.mark.parametrize("kind", ["user", "fee"])
def test_an_accounts_user_is_never_changed_in_the_admin(admin_client, make_account, fund, markets, kind):
    """Its balances, orders and keys would go with it, to someone else, with no ledger entry."""
    account = make_account() if kind == "user" else Account.objects.get(kind=kind)
    fund(account, "BTC", "10")
    before, entries = account.user_id, ledger_snapshot()

    page = admin_client.get(f"/admin/accounts/account/{account.pk}/change/")
    response = admin_client.post(f"/admin/accounts/account/{account.pk}/change/", {
        "user": get_user_model().objects.create_user("mallory").pk, "verified": "", "rate_tier": account.rate_tier_id})

    assert page.status_code == 200 and b'name="user"' not in page.content
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.user_id == before and ledger_snapshot() == entries


def test_an_account_added_without_a_user_is_a_form_error(admin_client, markets):
    count = Account.objects.count()

    response = admin_client.post("/admin/accounts/account/add/", {
        "user": "", "verified": "", "rate_tier": RateTier.objects.get(name="retail").pk})

    assert response.status_code == 200
    assert "A user account has a user; the fee and interest accounts have none." in response.content.decode()
    assert Account.objects.count() == count


@pytest.mark.parametrize("kind", ["fee", "interest"])
def test_the_exchanges_own_accounts_cannot_be_deleted_in_the_admin(admin_client, markets, kind):
    """Every matcher settles fees to the fee account; the interest account pays earn's interest."""
    account = Account.objects.get(kind=kind)

    one = admin_client.post(f"/admin/accounts/account/{account.pk}/delete/", {"post": "yes"})
    selected = admin_client.post("/admin/accounts/account/", {"action": "delete_selected", "post": "yes",
                                                              "_selected_action": [str(account.pk)]})

    assert one.status_code == selected.status_code == 403
    assert Account.objects.filter(kind=kind).exists()


def test_an_operator_with_a_username_of_150_characters_adjusts_a_balance(client, make_account, markets):
    operator = get_user_model().objects.create_superuser("o" * 150, password="a-long-passw0rd!")
    client.force_login(operator)
    account = make_account()

    response = client.post(ADJUST_URL, {"account": account.pk, "asset": "USD", "wallet": "spot", "amount": "10",
                                        "memo": "wire"})

    assert response.status_code == 302 and balance_of(account, "USD").available == 10
    assert LedgerEntry.objects.get(account=account).reference == ("admin:" + "o" * 150)[:120]


def test_the_credit_action_opens_the_form_for_one_selected_balance_only(admin_client, make_account, fund, markets):
    account = make_account()
    fund(account, "USD", "10")
    fund(account, "BTC", "1")
    usd, btc = (Balance.objects.get(account=account, asset__symbol=symbol) for symbol in ("USD", "BTC"))

    def select(*balances):
        return admin_client.post("/admin/trading/balance/", {"action": "adjust_selected",
                                                             "_selected_action": [str(row.pk) for row in balances]})

    one, two = select(usd), select(usd, btc)

    assert one.status_code == 302 and one["Location"] == f"{ADJUST_URL}?account={account.pk}&asset=USD&wallet=spot"
    assert two.status_code == 302 and two["Location"] == "/admin/trading/balance/"
    assert [str(message) for message in get_messages(two.wsgi_request)] == ["Select one balance to credit or debit."]


def test_operator_credits_then_debits_through_the_ledger(admin_client, make_account, markets, announced,
                                                        django_capture_on_commit_callbacks):
    account = make_account()

    with django_capture_on_commit_callbacks(execute=True):
        credit = admin_client.post(ADJUST_URL, {"account": account.pk, "asset": "USD", "wallet": "spot",
                                                "amount": "250.50", "memo": "wire 123"})
        debit = admin_client.post(ADJUST_URL, {"account": account.pk, "asset": "USD", "wallet": "spot",
                                               "amount": "-50.25", "memo": "refund"})

    assert credit.status_code == 302 and debit.status_code == 302
    assert balance_of(account, "USD").available == Decimal("200.25")
    entries = LedgerEntry.objects.filter(reference="admin:admin")
    assert sum(e.amount for e in entries) == 0
    assert {e.memo for e in entries} == {"wire 123", "refund"}
    assert LogEntry.objects.filter(content_type__model="balance", change_message__contains="wire 123").exists()
    assert announced == [account.pk, account.pk]  # the holder's balances channel is told of each


@pytest.mark.parametrize("form", [
    {"amount": "-0.01", "memo": "more than held"},
    {"amount": "10", "memo": ""},
    {"amount": "1e3", "memo": "exponent"},
    {"amount": "1_000", "memo": "an underscore Decimal() takes"},
    {"amount": "\u0663", "memo": "an Arabic-Indic three Decimal() takes"},
    {"amount": "+5", "memo": "a plus sign"},
    {"amount": "0", "memo": "zero"},
    {"amount": "0.0000000000000000001", "memo": "finer than an amount is kept"},
    {"amount": "1000000000000000000", "memo": "more than an amount holds"},
])
def test_refused_adjustments_write_nothing(admin_client, make_account, markets, form, announced,
                                          django_capture_on_commit_callbacks):
    account = make_account()
    before = ledger_snapshot()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(ADJUST_URL, {"account": account.pk, "asset": "USD", "wallet": "spot", **form})

    assert response.status_code == 200
    assert response.context["form"].errors
    assert ledger_snapshot() == before
    assert announced == []


def test_staff_without_the_adjust_permission_cannot_adjust(client, make_account, markets):
    staff = get_user_model().objects.create_user("viewer", password="pw-123456!", is_staff=True)
    client.force_login(staff)
    account = make_account()

    response = client.post(ADJUST_URL, {"account": account.pk, "asset": "USD", "amount": "5", "memo": "x"})

    assert response.status_code == 403
    assert balance_of(account, "USD") is None


@pytest.mark.parametrize("model_path,action", [
    ("trading/market", "halt"), ("trading/market", "set_cancel_only"), ("trading/market", "resume"),
    ("accounts/account", "verify_accounts"), ("accounts/account", "unverify_accounts"),
    ("accounts/apikey", "revoke_keys"),
])
def test_staff_who_may_only_view_cannot_run_an_action_that_changes(client, markets, make_account, model_path, action):
    staff = get_user_model().objects.create_user("viewer", password="pw-123456!", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_market", "view_account", "view_apikey"]))
    client.force_login(staff)
    account = make_account()
    Account.objects.filter(pk=account.pk).update(verified=action == "unverify_accounts")
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=[])
    market = markets["ETH-USD"]
    Market.objects.filter(pk=market.pk).update(status="halted" if action == "resume" else "online")
    before = (Market.objects.values().get(pk=market.pk), Account.objects.values().get(pk=account.pk),
              ApiKey.objects.values().get(pk=key.pk))
    target = {"trading/market": market, "accounts/account": account, "accounts/apikey": key}[model_path]

    page = client.get(f"/admin/{model_path}/")
    response = run_action(client, model_path, action, [target.pk])

    assert page.status_code == 200 and f'value="{action}"'.encode() not in page.content
    assert response.status_code == 200  # the list again, "No action selected", nothing done
    assert (Market.objects.values().get(pk=market.pk), Account.objects.values().get(pk=account.pk),
            ApiKey.objects.values().get(pk=key.pk)) == before


def test_the_default_tier_keeps_its_name_as_new_accounts_are_opened_on_it(admin_client, markets, django_user_model):
    retail = RateTier.objects.get(name="retail")
    fields = {"name": "Retail (default)", "weight_per_minute": 600, "maker_fee_rate": retail.maker_fee_rate,
              "taker_fee_rate": retail.taker_fee_rate, "min_30d_volume": retail.min_30d_volume}

    response = admin_client.post(f"/admin/accounts/ratetier/{retail.pk}/change/", fields)

    assert response.status_code == 302
    retail.refresh_from_db()
    assert (retail.name, retail.weight_per_minute) == ("retail", 600)  # the rest of the row is the operator's
    assert open_account(django_user_model.objects.create_user("newcomer")).rate_tier == retail
    other = RateTier.objects.exclude(pk=retail.pk).values().first()
    renamed = admin_client.post(f"/admin/accounts/ratetier/{other['id']}/change/", {
        **{name: "" if other[name] is None else other[name] for name in fields}, "name": "renamed"})
    assert renamed.status_code == 302 and RateTier.objects.get(pk=other["id"]).name == "renamed"


def test_a_tier_whose_budget_cannot_fit_the_heaviest_request_is_refused(admin_client, markets):
    retail = RateTier.objects.get(name="retail")
    fields = {"name": retail.name, "maker_fee_rate": retail.maker_fee_rate, "taker_fee_rate": retail.taker_fee_rate,
              "min_30d_volume": retail.min_30d_volume}
    before = list(RateTier.objects.values())

    refused = admin_client.post(f"/admin/accounts/ratetier/{retail.pk}/change/",
                                {**fields, "weight_per_minute": MAX_REQUEST_WEIGHT - 1})
    added = admin_client.post("/admin/accounts/ratetier/add/", {**fields, "name": "tiny", "min_30d_volume": "",
                                                                 "weight_per_minute": 5})

    assert refused.status_code == added.status_code == 200  # the form again, with the error
    assert f"greater than or equal to {MAX_REQUEST_WEIGHT}".encode() in refused.content
    assert list(RateTier.objects.values()) == before
    accepted = admin_client.post(f"/admin/accounts/ratetier/{retail.pk}/change/",
                                 {**fields, "weight_per_minute": MAX_REQUEST_WEIGHT})
    assert accepted.status_code == 302 and RateTier.objects.get(pk=retail.pk).weight_per_minute == MAX_REQUEST_WEIGHT


def asset_form(asset: Asset, **fields) -> dict:
    return {"symbol": asset.symbol, "name": asset.name, "precision": asset.precision,
            "circulating_supply": asset.circulating_supply or "", **fields}


def test_an_asset_keeps_its_symbol_and_its_places_fit_what_amounts_store(admin_client, api, markets, make_account,
                                                                          fund, make_key):
    account = make_account()
    fund(account, "BTC", "1.5")
    btc = Asset.objects.get(symbol="BTC")
    pairs = sorted(Market.objects.values_list("pair", "base__symbol", "quote__symbol"))

    too_fine = admin_client.post(f"/admin/trading/asset/{btc.pk}/change/", asset_form(btc, precision=19))
    renamed = admin_client.post(f"/admin/trading/asset/{btc.pk}/change/", asset_form(btc, symbol="XBT", name="Bitcoin"))

    assert too_fine.status_code == 200 and b"less than or equal to 18" in too_fine.content
    assert renamed.status_code == 302  # the name changed; the symbol is read-only
    assert Asset.objects.values_list("symbol", "name", "precision").get(pk=btc.pk) == ("BTC", "Bitcoin", btc.precision)
    assert sorted(Market.objects.values_list("pair", "base__symbol", "quote__symbol")) == pairs
    assert make_key(account, scope="read_only").get("/v1/account/balances").status_code == 200
    with pytest.raises(IntegrityError), transaction.atomic():
        Asset.objects.filter(pk=btc.pk).update(precision=19)  # the database holds the rule too
    added = admin_client.post("/admin/trading/asset/add/", {"symbol": "SOL", "name": "Solana", "precision": 9,
                                                            "circulating_supply": ""})
    assert added.status_code == 302 and Asset.objects.filter(symbol="SOL", precision=9).exists()


def test_an_assets_wallet_settings_cannot_be_moved_onto_another_asset(admin_client, markets):
    usd, btc = Asset.objects.get(symbol="USD"), Asset.objects.get(symbol="BTC")
    AssetWalletSettings.objects.create(asset=btc, withdraw_fee=Decimal("0.0005"))
    AssetWalletSettings.objects.create(asset=usd, withdraw_fee=Decimal(5), withdraw_minimum=Decimal(10))

    response = admin_client.post(f"/admin/wallets/assetwalletsettings/{usd.pk}/change/", {
        "asset": btc.pk, "deposit_enabled": "on", "withdraw_enabled": "on", "withdraw_minimum": "10",
        "withdraw_fee": "6", "daily_withdrawal_limit": ""})

    assert response.status_code == 302
    assert AssetWalletSettings.objects.get(asset=btc).withdraw_fee == Decimal("0.0005")
    assert AssetWalletSettings.objects.get(asset=usd).withdraw_fee == 6  # the row it was opened on


def test_the_default_tier_cannot_be_deleted(admin_client, api, markets):
    retail = RateTier.objects.get(name="retail")
    other = RateTier.objects.exclude(pk=retail.pk).first()
    Account.objects.filter(rate_tier=retail).update(rate_tier=other)  # nothing on it to protect it

    one = admin_client.post(f"/admin/accounts/ratetier/{retail.pk}/delete/", {"post": "yes"})
    selected = admin_client.post("/admin/accounts/ratetier/", {"action": "delete_selected", "post": "yes",
                                                               "_selected_action": [str(retail.pk)]})

    assert one.status_code == selected.status_code == 403
    assert RateTier.objects.filter(name="retail").exists() and api.get("/v1/markets").status_code == 200


@pytest.mark.parametrize("path,parameter", [("accounts/account", "kind__exact"), ("trading/ledgerentry", "reason__exact"),
                                            ("wallets/withdrawal", "status__exact"), ("trading/market", "q")])
def test_a_nul_in_an_admin_address_is_a_bad_request_not_a_server_error(admin_client, markets, path, parameter):
    response = admin_client.get(f"/admin/{path}/", {parameter: "a\x00b"})

    assert response.status_code == 400 and response.content == b"A NUL character in the address."


def test_ledger_entries_and_balances_are_read_only_in_admin(admin_client, make_account, fund):
    account = make_account()
    fund(account, "USD", "10")
    entry = LedgerEntry.objects.first()

    assert admin_client.get("/admin/trading/ledgerentry/add/").status_code == 403
    assert admin_client.get("/admin/trading/balance/add/").status_code == 403
    assert admin_client.post(f"/admin/trading/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    page = admin_client.get(f"/admin/trading/ledgerentry/{entry.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_admin_pages_render(admin_client, markets, make_account, fund):
    fund(make_account(), "BTC", "1")
    for model in ["trading/asset", "trading/market", "trading/balance", "trading/ledgerentry",
                  "accounts/account", "accounts/ratetier"]:
        assert admin_client.get(f"/admin/{model}/").status_code == 200, model
    assert admin_client.get(ADJUST_URL).status_code == 200
    assert Account.objects.filter(kind="fee").count() == 1


def test_operator_rescopes_a_key_and_revokes_in_bulk(admin_client, make_account):
    from accounts.keys import create_api_key
    from accounts.models import ApiKey

    account = make_account()
    first, secret = create_api_key(account, label="a", scope="trade", ip_allowlist=[])
    second, _ = create_api_key(account, label="b", scope="read_only", ip_allowlist=[])

    page = admin_client.get(f"/admin/accounts/apikey/{first.pk}/change/")
    assert page.status_code == 200 and secret.encode() not in page.content
    assert b"secret_ciphertext" not in page.content
    changed = admin_client.post(f"/admin/accounts/apikey/{first.pk}/change/", {
        "label": "a", "scope": "trade_withdraw", "ip_allowlist": "10.0.0.0/8\n2001:db8::/32", "drift_tolerance_ms": 3000,
    })
    refused = admin_client.post(f"/admin/accounts/apikey/{second.pk}/change/", {
        "label": "b", "scope": "trade_withdraw", "ip_allowlist": "", "drift_tolerance_ms": 5000,
    })
    run_action(admin_client, "accounts/apikey", "revoke_keys", [first.pk, second.pk])

    assert changed.status_code == 302 and refused.status_code == 200
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.scope == "trade_withdraw" and first.ip_allowlist == ["10.0.0.0/8", "2001:db8::/32"]
    assert second.scope == "read_only"
    assert first.revoked_at is not None and second.revoked_at is not None
    assert LogEntry.objects.filter(content_type__model="apikey", object_id=str(second.pk),
                                   change_message__contains="Revoked").exists()
    assert admin_client.get("/admin/accounts/apikey/?q=" + first.public_id).status_code == 200
    deleted = admin_client.post(f"/admin/accounts/apikey/{second.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403  # keys are revoked, never deleted
    assert ApiKey.objects.count() == 2


def test_an_operators_save_racing_the_holders_revocation_leaves_the_key_revoked(admin_client, make_account,
                                                                               monkeypatch):
    from accounts.admin import ApiKeyAdmin
    from accounts.keys import revoke_api_keys

    key, _ = create_api_key(make_account(), label="x", scope="trade", ip_allowlist=[])
    read = ApiKeyAdmin.get_object

    def read_then_the_holder_revokes(self, request, object_id, from_field=None):
        found = read(self, request, object_id, from_field)
        if request.method == "POST":  # the holder revokes the key on the account page meanwhile
            revoke_api_keys(ApiKey.objects.filter(pk=found.pk))
        return found

    monkeypatch.setattr(ApiKeyAdmin, "get_object", read_then_the_holder_revokes)
    saved = admin_client.post(f"/admin/accounts/apikey/{key.pk}/change/", {
        "label": "renamed", "scope": "trade", "ip_allowlist": "", "drift_tolerance_ms": "5000"})
    monkeypatch.undo()

    assert saved.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None and key.label == "renamed"
    # Revoked, nothing of it can be changed any more.
    again = admin_client.post(f"/admin/accounts/apikey/{key.pk}/change/", {
        "label": "again", "scope": "read_only", "ip_allowlist": "", "drift_tolerance_ms": "5000"})
    key.refresh_from_db()
    assert again.status_code == 403 and (key.label, key.scope) == ("renamed", "trade")
    assert admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").status_code == 200  # shown, read only


def test_operator_sets_an_account_tier(admin_client, make_account):
    from accounts.models import RateTier

    account = make_account()
    maker_tier = RateTier.objects.get(name="market_maker")

    response = admin_client.post(f"/admin/accounts/account/{account.pk}/change/", {
        "user": account.user_id, "verified": "on", "rate_tier": maker_tier.pk,
    })

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.rate_tier == maker_tier and account.verified
    assert LogEntry.objects.filter(content_type__model="account", object_id=str(account.pk)).exists()


def market_form(market: Market, **grid) -> dict:
    return {"tick_size": str(grid.get("tick_size", market.tick_size)), "lot_size": str(market.lot_size),
            "min_size": str(market.min_size), "min_notional": str(market.min_notional)}


def test_a_grid_change_needs_a_market_closed_to_new_orders_and_every_live_order_on_the_new_grid(
        admin_client, markets, alice, bob, trade):
    btc_usd = markets["BTC-USD"]
    trade(bob, side="sell", type="limit", price=Decimal("63000.05"), size=Decimal("0.01"))
    trade(alice, side="buy", type="limit", price=Decimal("63000.05"), size=Decimal("0.005"))  # last trade: 63000.05
    resting = trade(alice, side="buy", type="limit", price=Decimal("62000.05"), size=Decimal("0.01"))
    change_url = f"/admin/trading/market/{btc_usd.pk}/change/"

    online = admin_client.post(change_url, market_form(btc_usd, tick_size="0.005"))
    assert online.status_code == 200 and "cancel only" in online.content.decode()

    services.set_market_status(btc_usd.pk, Market.Status.CANCEL_ONLY)
    btc_usd.refresh_from_db()
    coarser = admin_client.post(change_url, market_form(btc_usd, tick_size="0.1"))
    assert coarser.status_code == 200 and "off the new grid" in coarser.content.decode()
    assert str(resting.pk) in coarser.content.decode()
    btc_usd.refresh_from_db()
    assert btc_usd.tick_size == Decimal("0.01")

    trade_cancel(alice, resting)
    trade_cancel(bob, Order.objects.get(account=bob.pk, status=Order.Status.PARTIALLY_FILLED))
    assert admin_client.post(change_url, market_form(btc_usd, tick_size="0.1")).status_code == 302
    services.set_market_status(btc_usd.pk, Market.Status.ONLINE)

    # The matcher rebuilds its book on the coarser grid (the last trade, 63000.05, is off it) and matches.
    bid = trade(alice, side="buy", type="limit", price=Decimal("63000.1"), size=Decimal("0.01"))
    ask = trade(bob, side="sell", type="limit", price=Decimal("63000.1"), size=Decimal("0.01"))
    bid.refresh_from_db()
    assert (bid.status, ask.status) == (Order.Status.FILLED, Order.Status.FILLED)


def test_a_grid_whose_tick_times_lot_needs_more_than_18_places_is_refused(admin_client, markets):
    """Its holds and quote amounts could not be stored exactly: the pair's matcher would stall on them."""
    btc = Asset.objects.get(symbol="BTC")
    doge = Asset.objects.create(symbol="DOGE", name="Dogecoin", precision=8)
    fields = {"base": doge.pk, "quote": btc.pk, "status": "online", "tick_size": "0.0000000001",
              "lot_size": "0.000000001", "min_size": "0.000000001", "min_notional": "0"}

    refused = admin_client.post("/admin/trading/market/add/", fields)
    accepted = admin_client.post("/admin/trading/market/add/", {**fields, "lot_size": "0.00000001",
                                                                 "min_size": "0.00000001"})

    assert refused.status_code == 200
    assert "tick size x lot size is 0.0000000000000000001" in refused.content.decode()
    assert accepted.status_code == 302
    assert Market.objects.get(base=doge).tick_size * Market.objects.get(base=doge).lot_size == Decimal("1e-18")


def trade_cancel(account, order):
    from django.db import transaction

    with transaction.atomic():
        services.request_cancel(account, order.pk)
    dispatch.wake_matcher(order.market.pair)
