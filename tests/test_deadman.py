"""The dead-man's switch, POST /v1/orders/cancel-all-after: armed, refreshed, disarmed, fired through the
matchers (orders cancelled, holds released), once, and by a watcher that was restarted meanwhile."""

import os
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from exchange.fields import EPOCH, to_milliseconds
from trading import deadman
from trading.models import DeadManSwitch, MatcherCommand, Order

from .conftest import balance_of, ledger_snapshot
from .processes import ROOT, process_env, running, stop, wait_until
from .test_public_api import assert_error

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

D = Decimal
AFTER = "/v1/orders/cancel-all-after"


def written():
    switches = sorted(DeadManSwitch.objects.values_list("account_id", "market_id", "timeout_ms", "trigger_at"))
    return ledger_snapshot(), switches, MatcherCommand.objects.count()


@pytest.fixture
def bids(alice, trade):
    """Alice's live orders: two BTC-USD bids and an ETH-USD bid."""
    return [trade(alice, side="buy", type="limit", price=Decimal(price), size=Decimal("0.01"))
            for price in ("60000", "60001")] + [
        trade(alice, pair="ETH-USD", side="buy", type="limit", price=Decimal("3000"), size=Decimal("0.1"))]


def at(ms: int):
    return EPOCH + timedelta(milliseconds=ms)


def due(body: dict):
    """The first whole millisecond at which the switch an answer describes is due (its time is exact to the
    microsecond; the answer's, to the millisecond below)."""
    return at(body["trigger_time"] + 1)


def statuses(orders) -> list[str]:
    return [Order.objects.get(pk=order.pk).status for order in orders]


def arm(client, timeout_ms: int, **more):
    response = client.post(AFTER, {"timeout_ms": timeout_ms, **more}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_once_fires_every_switch_due_past_one_looks_worth(make_account, markets):
    past = timezone.now() - timedelta(seconds=5)
    DeadManSwitch.objects.bulk_create([DeadManSwitch(account=make_account(), timeout_ms=1000, trigger_at=past)
                                       for _ in range(deadman.FIRED_PER_LOOK + 1)])
    out = StringIO()

    call_command("watch_dead_man_switches", "--once", stdout=out)

    assert out.getvalue() == f"fired {deadman.FIRED_PER_LOOK + 1} switch(es)\n"
    assert not DeadManSwitch.objects.filter(trigger_at__isnull=False).exists()


def test_arming_answers_the_current_and_trigger_times(as_trader, alice):
    body = arm(as_trader(alice), 60000)

    switch = DeadManSwitch.objects.get(account=alice)
    assert body == {"pair": None, "timeout_ms": 60000, "current_time": body["current_time"],
                    "trigger_time": body["current_time"] + 60000}
    assert to_milliseconds(switch.trigger_at) == body["trigger_time"] and switch.market is None


def test_it_fires_through_the_matcher_cancelling_every_order_and_releasing_the_holds(as_trader, alice, bids):
    body = arm(as_trader(alice), 1000)

    fired = deadman.fire_due(due(body))

    assert fired == 1
    assert statuses(bids) == ["cancelled"] * 3
    assert balance_of(alice, "USD").locked == 0 and balance_of(alice, "USD").available == D("100000")
    switch = DeadManSwitch.objects.get(account=alice)
    assert switch.trigger_at is None and switch.fired_at == due(body)


def test_it_does_not_fire_before_its_time(as_trader, alice, bids):
    body = arm(as_trader(alice), 1000)

    assert deadman.fire_due(at(body["trigger_time"] - 1)) == 0
    assert statuses(bids) == ["open"] * 3


def test_a_refresh_moves_the_trigger_and_it_does_not_fire_at_the_old_one(as_trader, alice, bids):
    first = arm(as_trader(alice), 1000)

    second = arm(as_trader(alice), 1000)

    assert second["trigger_time"] > first["trigger_time"]
    assert deadman.fire_due(due(first)) == 0
    assert statuses(bids) == ["open"] * 3
    assert DeadManSwitch.objects.count() == 1


def test_a_refresh_that_commits_before_a_firing_that_read_it_due_wins(as_trader, alice, bids):
    first = arm(as_trader(alice), 1000)
    switch_id = DeadManSwitch.objects.get().pk  # what the watcher read as due ...

    arm(as_trader(alice), 1000)  # ... refreshed before it locked the row

    assert deadman.fire(switch_id, due(first)) is None
    assert statuses(bids) == ["open"] * 3


def test_a_firing_that_meets_a_refresh_in_progress_waits_for_it_and_finds_nothing_due(as_trader, alice, bids):
    first = arm(as_trader(alice), 1000)
    switch_id = DeadManSwitch.objects.get().pk
    locked, done = threading.Event(), threading.Event()

    def refresh():  # set_switch's transaction, held open until the firing has had time to queue behind it
        try:
            with transaction.atomic():
                DeadManSwitch.objects.select_for_update().get(pk=switch_id)  # on SQLite the write lock
                locked.set()
                done.wait(0.5)
                DeadManSwitch.objects.filter(pk=switch_id).update(trigger_at=due(first) + timedelta(hours=1))
        finally:
            connection.close()

    thread = threading.Thread(target=refresh)
    thread.start()
    locked.wait(30)
    fired = deadman.fire(switch_id, due(first))
    done.set()
    thread.join()

    assert fired is None
    assert statuses(bids) == ["open"] * 3


@pytest.mark.parametrize("timeout_ms", [1000, 0])
def test_a_refresh_or_disarm_after_the_trigger_time_the_watcher_missed_fires_the_switch_first(
        as_trader, alice, bids, timeout_ms):
    """The watcher was down (or behind) when the switch fell due: the bot's late refresh saves no order."""
    from django.utils import timezone

    arm(as_trader(alice), 1000)
    DeadManSwitch.objects.update(trigger_at=timezone.now() - timedelta(seconds=30))  # due, not fired

    body = arm(as_trader(alice), timeout_ms)

    assert statuses(bids) == ["cancelled"] * 3
    switch = DeadManSwitch.objects.get()
    assert switch.fired_at is not None
    assert (body["trigger_time"] is not None) == bool(timeout_ms)  # then armed afresh, or disarmed
    assert deadman.fire_due() == 0


def test_zero_disarms_it(as_trader, alice, bids):
    arm(as_trader(alice), 1000)

    body = arm(as_trader(alice), 0)

    assert body["trigger_time"] is None and body["timeout_ms"] == 0
    assert deadman.fire_due(at(body["current_time"] + 10**9)) == 0
    assert statuses(bids) == ["open"] * 3


def test_disarming_a_switch_never_armed_writes_nothing(as_trader, alice):
    before = written()

    assert arm(as_trader(alice), 0)["trigger_time"] is None
    assert written() == before


def test_firing_is_done_once(as_trader, alice, bids):
    body = arm(as_trader(alice), 1000)
    switch_id = DeadManSwitch.objects.get().pk
    when = due(body)
    assert deadman.fire(switch_id, when) is not None
    after_first = written()

    assert deadman.fire(switch_id, when) is None
    assert deadman.fire_due(when + timedelta(hours=1)) == 0
    assert written() == after_first


def test_a_switch_per_pair_cancels_that_pair_only_and_beside_the_account_one(as_trader, alice, bids):
    btc = arm(as_trader(alice), 1000, pair="BTC-USD")
    every = arm(as_trader(alice), 600000)

    assert deadman.fire_due(due(btc)) == 1

    assert btc["pair"] == "BTC-USD" and every["pair"] is None
    assert statuses(bids) == ["cancelled", "cancelled", "open"]
    assert DeadManSwitch.objects.get(market=None).trigger_at is not None


def test_a_halted_markets_orders_are_cancelled_when_it_resumes(as_trader, alice, bids, btc_usd):
    from trading.services import set_market_status

    body = arm(as_trader(alice), 1000)
    set_market_status(btc_usd.pk, "halted")

    deadman.fire_due(due(body))
    halted = statuses(bids)
    set_market_status(btc_usd.pk, "online")

    assert halted == ["open", "open", "cancelled"]
    assert statuses(bids) == ["cancelled"] * 3


@pytest.mark.parametrize("body, field", [
    ({"timeout_ms": 999}, "timeout_ms"), ({"timeout_ms": 600001}, "timeout_ms"), ({"timeout_ms": -1}, "timeout_ms"),
    ({"timeout_ms": 1.5}, "timeout_ms"), ({"timeout_ms": "soon"}, "timeout_ms"), ({}, "timeout_ms"),
    ({"timeout_ms": 60000, "pair": " BTC-USD"}, "pair"), ({"timeout_ms": 60000, "every": True}, "every"),
])
def test_a_bad_timeout_or_field_is_refused_and_writes_nothing(as_trader, alice, bids, body, field):
    before = written()

    response = as_trader(alice).post(AFTER, body, format="json")

    assert_error(response, 400, "INVALID_REQUEST")
    assert field in response.json()["error"]["details"]["fields"]
    assert written() == before


def test_an_unknown_pair_or_a_read_only_key_is_refused_and_writes_nothing(as_trader, alice, make_key, markets):
    before = written()

    assert_error(as_trader(alice).post(AFTER, {"timeout_ms": 60000, "pair": "DOGE-USD"}, format="json"), 404,
                 "UNKNOWN_PAIR")
    assert_error(make_key(alice, scope="read_only").post(AFTER, {"timeout_ms": 60000}), 403, "INSUFFICIENT_SCOPE")
    assert written() == before


def test_a_signed_bot_arms_it_at_weight_one(alice, make_key, markets):
    response = make_key(alice).post(AFTER, {"timeout_ms": 60000})

    assert response.status_code == 200, response.content
    assert response["X-RateLimit-Remaining"] == str(1200 - 1)


def database_url() -> str:
    """The test database, for a process of its own."""
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def watcher(tmp_path, name: str):
    env = process_env(DATABASE_URL=database_url(), MATCHER_MODE="inprocess", LOG_LEVEL="INFO",
                      EXCHANGE_VAR_DIR=os.environ.get("EXCHANGE_VAR_DIR") or str(settings.BASE_DIR / "var"))
    return running([sys.executable, "manage.py", "watch_dead_man_switches"], env, tmp_path / f"{name}.log",
                   ready_text="watching the dead-man's switches")


def test_a_switch_armed_before_its_watcher_is_killed_fires_once_the_watcher_is_back(as_trader, alice, bids,
                                                                                     tmp_path):
    with watcher(tmp_path, "first") as first:
        arm(as_trader(alice), 2000)
        os.killpg(first.pid, 9)  # before the switch is due: nothing in any process remembers it now
        stop(first)
    assert statuses(bids) == ["open"] * 3 and DeadManSwitch.objects.get().trigger_at is not None

    with watcher(tmp_path, "second"):
        wait_until(lambda: statuses(bids) == ["cancelled"] * 3, timeout=60, what="the switch fired")

    assert balance_of(alice, "USD").locked == 0
    assert DeadManSwitch.objects.get().trigger_at is None


def test_the_watcher_fires_what_is_due_once_a_run(as_trader, alice, bids):
    body = arm(as_trader(alice), 1000)
    DeadManSwitch.objects.update(trigger_at=at(body["current_time"]))  # due now
    env = process_env(DATABASE_URL=database_url(), MATCHER_MODE="inprocess")

    runs = [subprocess.run([sys.executable, "manage.py", "watch_dead_man_switches", "--once"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120) for _ in range(2)]

    assert [run.stdout.strip() for run in runs] == ["fired 1 switch(es)", "fired 0 switch(es)"], runs
    assert statuses(bids) == ["cancelled"] * 3


@pytest.mark.slow
def test_in_production_the_periodic_watcher_fires_it_through_a_celery_matcher_once_restarted(stack):
    from hkt_client import Client

    from .signing import now_ms

    production = stack.start_production(workers=1, ws_processes=1)
    keys = stack.create_trader("dead-man", "USD=100000")
    bot = Client(production.rest, keys["key"], keys["secret"])
    order = bot.place_order("BTC-USD", "buy", "limit", price="60000", size="0.01")
    production.supervise("ctl", "stop", "periodic:deadman")

    armed = bot.cancel_all_after(1000)
    wait_until(lambda: now_ms() > armed["trigger_time"] + 2000, what="the switch's time to pass")
    unwatched = bot.get_order(order["order_id"])["status"]  # nothing fires it while its watcher is down
    production.supervise("ctl", "start", "periodic:deadman")
    wait_until(lambda: bot.get_order(order["order_id"])["status"] == "cancelled", timeout=60, what="the firing")

    assert unwatched == "open"
    usd = next(row for row in bot.balances()["balances"] if row["asset"] == "USD")
    assert usd["spot"] == {"available": "100000.00", "locked": "0.00", "total": "100000.00"}
