"""Fee rates: the default tier's on every market, each account's own, and tiers assigned by 30-day volume."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account, RateTier
from accounts.services import fee_account
from trading import fees
from trading.models import Fill, Order
from trading.sql import first_id_stamped_since
from trading.tasks import assign_fee_tiers_task

from .test_public_api import assert_error
from .test_python_client import Client, in_process_http  # noqa: F401  the fixture

D = Decimal


@pytest.fixture
def vip(db):
    """A tier assigned from 1,000 USD of 30-day volume, with its own budget to tell it by."""
    return RateTier.objects.create(name="vip", weight_per_minute=3000, maker_fee_rate=D("0.0002"),
                                   taker_fee_rate=D("0.0007"), min_30d_volume=D("1000"))


@pytest.fixture
def traders(funded):
    return [funded(name, USD="100000", BTC="10", ETH="100") for name in ("alice", "bob")]


def cross(trade, maker, taker, size="0.01", price="63000", pair="BTC-USD"):
    """``maker`` rests a sell, ``taker`` buys it: both trade ``size`` at ``price``."""
    trade(maker, pair=pair, side="sell", type="limit", price=D(price), size=D(size))
    taker_order = trade(taker, pair=pair, side="buy", type="limit", price=D(price), size=D(size))
    assert taker_order.status == Order.Status.FILLED


def tier_of(account) -> str:
    return Account.objects.select_related("rate_tier").get(pk=account.pk).rate_tier.name


# -- what clients read


def test_markets_carry_the_default_tiers_rates_as_decimal_strings(api, markets):
    RateTier.objects.filter(name="retail").update(maker_fee_rate=D("0.00075"), taker_fee_rate=D("0"))

    rows = api.get("/v1/markets").json()

    assert {(row["pair"], row["maker_fee"], row["taker_fee"]) for row in rows} == {
        (pair, "0.00075", "0") for pair in ("BTC-USD", "ETH-USD", "ETH-BTC")}


def test_account_fees_are_the_accounts_tier_on_every_pair(make_account, make_key, markets):
    account = make_account()
    bot = make_key(account, scope="read_only")

    response = bot.get("/v1/account/fees")

    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "1199"  # weight 1
    assert response.json() == {"tier": "retail", "fees": [
        {"pair": pair, "maker_fee": "0.001", "taker_fee": "0.002"} for pair in ("BTC-USD", "ETH-BTC", "ETH-USD")]}


def test_account_fees_need_a_signed_request(api, markets):
    assert_error(api.get("/v1/account/fees"), 401, "MISSING_AUTH_HEADERS")


def test_a_tier_set_in_the_admin_is_what_the_next_request_and_the_next_trade_see(make_key, traders, trade,
                                                                                admin_client):
    alice, bob = traders
    bot = make_key(alice, scope="read_only")
    assert bot.get("/v1/account/fees").json()["tier"] == "retail"  # cached in this process from here
    maker_tier = RateTier.objects.get(name="market_maker")

    admin_client.post(f"/admin/accounts/account/{alice.pk}/change/", {"user": alice.user_id,
                                                                      "rate_tier": maker_tier.pk})

    assert bot.get("/v1/account/fees").json()["fees"][0] == {"pair": "BTC-USD", "maker_fee": "0", "taker_fee": "0.001"}
    cross(trade, maker=alice, taker=bob)
    assert Fill.objects.get(account=alice).fee == 0  # market maker: 0 maker fee


# -- tiers by volume


def test_accounts_move_to_the_highest_tier_their_30_day_usd_volume_reaches(traders, make_account, trade, vip):
    alice, bob = traders
    carol = make_account("carol")
    cross(trade, maker=alice, taker=bob, size="0.02")  # 1,260 USD each, maker or taker

    run = fees.assign_fee_tiers()

    assert sorted((move.account_id, move.from_tier, move.to_tier, move.volume) for move in run.moves) == [
        (alice.pk, "retail", "vip", D("1260")), (bob.pk, "retail", "vip", D("1260"))]
    assert (tier_of(alice), tier_of(bob), tier_of(carol)) == ("vip", "vip", "retail")
    assert tier_of(fee_account()) == "retail"  # the exchange's own accounts are not ranked
    assert fees.assign_fee_tiers().moves == []  # a repeat moves nothing more


def test_only_the_last_30_days_and_markets_quoted_in_the_reference_asset_count(traders, trade, vip):
    alice, bob = traders
    cross(trade, maker=alice, taker=bob, size="0.01")  # 630 USD, to be aged past the window
    Fill.objects.update(executed_at=timezone.now() - timedelta(days=31))
    cross(trade, maker=alice, taker=bob, size="0.01")  # 630 USD in the window
    cross(trade, maker=alice, taker=bob, size="1", price="0.05", pair="ETH-BTC")  # BTC-quoted: not counted

    assert fees.volumes_since(timezone.now() - timedelta(days=30), "USD") == {alice.pk: D("630"), bob.pk: D("630")}
    assert fees.assign_fee_tiers().moves == []
    # a window reaching back 32 days counts the aged trade too
    assert fees.volumes_since(timezone.now() - timedelta(days=32), "USD") == {alice.pk: D("1260"),
                                                                              bob.pk: D("1260")}


def test_volume_falling_moves_an_account_back_down_and_manual_tiers_stay(traders, funded, trade, vip):
    alice, bob = traders
    maker_tier = RateTier.objects.get(name="market_maker")  # manual: no threshold
    Account.objects.filter(pk=bob.pk).update(rate_tier=vip)
    carol = funded("carol", USD="100000")
    Account.objects.filter(pk=carol.pk).update(rate_tier=maker_tier)
    cross(trade, maker=alice, taker=carol, size="0.05")  # carol trades 3,150 USD, alice too

    moves = {move.account_id: (move.from_tier, move.to_tier) for move in fees.assign_fee_tiers().moves}

    assert moves == {alice.pk: ("retail", "vip"), bob.pk: ("vip", "retail")}
    assert tier_of(carol) == "market_maker"


def test_an_account_below_every_threshold_stays_where_it_is(traders, vip):
    alice, _ = traders
    RateTier.objects.filter(name="retail").update(min_30d_volume=None)  # only vip is assigned by volume
    Account.objects.filter(pk=alice.pk).update(rate_tier=vip)

    assert fees.assign_fee_tiers().moves == []
    assert tier_of(alice) == "vip"


def test_the_command_moves_accounts_and_signed_requests_see_it_at_once(traders, trade, vip, make_key):
    alice, bob = traders
    bot = make_key(alice, scope="read_only")
    before = bot.get("/v1/account/fees")  # alice's key, account and tier are cached in this process now
    cross(trade, maker=alice, taker=bob, size="0.02")
    out = StringIO()

    call_command("assign_fee_tiers", stdout=out)

    assert before.json()["tier"] == "retail" and before["X-RateLimit-Limit"] == "1200"
    summary = json.loads(out.getvalue())
    assert summary["volume_asset"] == "USD" and summary["accounts"] == 2
    assert sorted(move["account_id"] for move in summary["moved"]) == [alice.pk, bob.pk]
    assert summary["moved"][0]["to"] == "vip" and summary["moved"][0]["volume_30d"] == "1260"
    after = bot.get("/v1/account/fees")  # not 60 s later: at once, although the move was a QuerySet.update
    assert after.json()["tier"] == "vip" and after["X-RateLimit-Limit"] == "3000"
    assert after.json()["fees"][0] == {"pair": "BTC-USD", "maker_fee": "0.0002", "taker_fee": "0.0007"}


def test_the_next_trade_after_a_move_pays_the_new_tiers_rates(traders, trade, vip):
    alice, bob = traders
    cross(trade, maker=alice, taker=bob, size="0.02")
    fees.assign_fee_tiers()

    cross(trade, maker=alice, taker=bob, size="0.01")

    last = {fill.account_id: fill.fee for fill in Fill.objects.order_by("-id")[:2]}
    assert last == {alice.pk: D("630") * D("0.0002"), bob.pk: D("0.01") * D("0.0007")}


def test_the_periodic_task_runs_the_assignment(traders, trade, vip):
    alice, bob = traders
    cross(trade, maker=alice, taker=bob, size="0.02")

    summary = assign_fee_tiers_task.apply().get()

    assert {move["account_id"] for move in summary["moved"]} == {alice.pk, bob.pk}


def test_without_tiers_by_volume_nothing_is_read_or_moved(traders, django_assert_num_queries):
    RateTier.objects.update(min_30d_volume=None)

    with django_assert_num_queries(1):
        run = fees.assign_fee_tiers()

    assert run.moves == [] and run.accounts == 0


def test_the_windows_first_fill_is_found_by_a_binary_search_over_ids(traders, trade, django_assert_max_num_queries):
    alice, bob = traders
    for _ in range(5):
        cross(trade, maker=alice, taker=bob)
    ids = list(Fill.objects.order_by("pk").values_list("pk", flat=True))
    now = timezone.now()
    for age, fill_id in zip(range(len(ids), 0, -1), ids):  # oldest first, one day apart
        Fill.objects.filter(pk=fill_id).update(executed_at=now - timedelta(days=age))

    for age in range(len(ids) + 2):
        expected = next((fill_id for fill_id, fill_age in zip(ids, range(len(ids), 0, -1)) if fill_age <= age), None)
        with django_assert_max_num_queries(8):
            assert first_id_stamped_since(Fill.objects.all(), "executed_at",
                                          now - timedelta(days=age, minutes=1)) == expected, age


@pytest.mark.parametrize("threshold", [D("-1")])
def test_a_negative_threshold_is_refused_by_the_database(db, threshold):
    with pytest.raises(IntegrityError), transaction.atomic():
        RateTier.objects.create(name="broken", min_30d_volume=threshold)


def test_two_tiers_with_one_threshold_are_refused(vip):
    with pytest.raises(IntegrityError), transaction.atomic():
        RateTier.objects.create(name="vip-copy", min_30d_volume=vip.min_30d_volume)


def test_the_admin_lists_tiers_with_their_threshold(admin_client, vip):
    page = admin_client.get("/admin/accounts/ratetier/")

    assert page.status_code == 200
    assert b"vip" in page.content and b"1000.00" in page.content


def test_the_python_client_reads_this_accounts_fees(make_account, make_key,
                                                    in_process_http, markets):  # noqa: F811  the imported fixture
    bot = make_key(make_account(), scope="read_only")

    with Client("http://testserver", bot.key_id, bot.secret, http=in_process_http) as client:
        fees_read = client.fees()

    assert fees_read["tier"] == "retail"
    assert fees_read["fees"][0] == {"pair": "BTC-USD", "maker_fee": "0.001", "taker_fee": "0.002"}


def test_operators_add_manual_and_volume_tiers_in_the_admin_and_a_negative_threshold_is_refused(admin_client, db):
    fields = {"weight_per_minute": "2400", "maker_fee_rate": "0.0005", "taker_fee_rate": "0.001"}

    manual = admin_client.post("/admin/accounts/ratetier/add/", {"name": "partner", **fields, "min_30d_volume": ""})
    by_volume = admin_client.post("/admin/accounts/ratetier/add/", {"name": "pro", **fields,
                                                                    "min_30d_volume": "50000"})
    negative = admin_client.post("/admin/accounts/ratetier/add/", {"name": "odd", **fields, "min_30d_volume": "-5"})

    assert manual.status_code == by_volume.status_code == 302
    assert dict(RateTier.objects.filter(name__in=["partner", "pro"]).values_list("name", "min_30d_volume")) == {
        "partner": None, "pro": D("50000")}
    assert negative.status_code == 200 and not RateTier.objects.filter(name="odd").exists()
