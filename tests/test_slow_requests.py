"""The slowest recent requests (exchange/slow_requests.py): timed by a middleware, kept by the store of the stack
(in memory, or in Redis shared by every process), listed slowest first on an admin page that needs a permission."""

import math
import os
import re
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from exchange import slow_requests
from exchange.redis import get_redis
from exchange.slow_request_backends import ADD_SCRIPT, SLICES, RedisSlowRequests, slice_of, slice_seconds
from exchange.slow_requests import TimedRequest

from .processes import ROOT, free_port, process_env

pytestmark = pytest.mark.django_db
PAGE = "/admin/trading/slowrequest/"
COLUMNS = ["milliseconds", "method", "route", "status", "error_code", "request_id", "account_id"]


@pytest.fixture(autouse=True)
def fresh_store(settings):
    """Each test starts with an empty list (Redis keeps it between tests), at the default size unless it says."""
    settings.SLOW_REQUESTS_KEEP = 50
    slow_requests.store().reset()
    yield
    slow_requests.store().reset()


def listed(client) -> list[dict[str, str]]:
    """The page's rows, slowest first, as rendered."""
    response = client.get(PAGE)
    assert response.status_code == 200
    return [{name: re.search(rf'<td class="field-{name}">(?:<code>)?(.*?)(?:</code>)?</td>', row, re.DOTALL).group(1)
             for name in COLUMNS}
            for row in re.findall(r"<tr>\s*<td class=\"field-.*?</tr>", response.content.decode(), re.DOTALL)]


def timed(milliseconds: float, at: float | None = None, request_id: str = "r") -> TimedRequest:
    return TimedRequest(milliseconds=milliseconds, method="GET", route="v1/time", status=200, error_code=None,
                        request_id=request_id, at=time.time() if at is None else at, account_id=None)


@pytest.mark.urls("tests.slow_urls")
def test_a_slow_request_is_listed_first_with_its_request_id_route_and_account(settings, admin_client, alice, make_key):
    settings.SLOW_REQUESTS_KEEP = 3
    slow_requests.store().reset()
    bot = make_key(alice)
    client = Client()
    fast = [client.get("/v1/time") for _ in range(4)]
    slow = bot.get("/v1/slow/400")
    fast += [client.get("/v1/time") for _ in range(4)]
    assert slow.status_code == 200 and all(response.status_code == 200 for response in fast)

    rows = listed(admin_client)

    assert len(rows) == 3  # the slowest three of the window, not every request
    first = rows[0]
    assert first["request_id"] == slow["X-Request-Id"]
    assert (first["method"], first["route"], first["status"], first["error_code"]) == (
        "GET", "v1/slow/&lt;int:milliseconds&gt;", "200", "-")
    assert first["account_id"] == str(alice.pk)
    assert float(first["milliseconds"]) >= 400  # it slept that long; every row is slower than the fast ones left out
    page = admin_client.get(PAGE).content.decode()
    assert bot.key_id not in page and bot.key_id[:16] not in page and bot.secret not in page


def test_a_refusal_is_kept_with_its_code_and_route_pattern_never_the_path_or_query(admin_client, alice, make_key):
    bot = make_key(alice)
    refused = Client().get("/v1/orders")  # unsigned
    missing = bot.get("/v1/orders/987654321")
    assert (refused.status_code, missing.status_code) == (401, 404)

    rows = {row["request_id"]: row for row in listed(admin_client)}

    assert rows[refused["X-Request-Id"]]["error_code"] == refused.json()["error"]["code"]
    assert rows[refused["X-Request-Id"]]["account_id"] == "-"
    entry = rows[missing["X-Request-Id"]]
    assert entry["error_code"] == missing.json()["error"]["code"] and entry["status"] == "404"
    assert (rows[refused["X-Request-Id"]]["route"], entry["route"]) == ("v1/orders", "v1/orders/&lt;pk&gt;")
    assert entry["account_id"] == str(alice.pk)


def test_only_staff_with_the_permission_see_the_page(admin_client, alice):
    users = get_user_model().objects
    trader = Client()
    trader.force_login(alice.user)
    staff = users.create_user("support", is_staff=True)
    operator = users.create_user("operator-2", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_slowrequest"))
    staff_client, operator_client = Client(), Client()
    staff_client.force_login(staff)
    operator_client.force_login(operator)
    served = Client().get("/v1/time")

    assert Client().get(PAGE).status_code == 302  # to the admin's login
    assert trader.get(PAGE).status_code == 302  # not staff: to the admin's login too
    assert staff_client.get(PAGE).status_code == 403
    assert served["X-Request-Id"] not in staff_client.get("/admin/").content.decode()
    assert PAGE not in staff_client.get("/admin/").content.decode()
    assert PAGE in operator_client.get("/admin/").content.decode()  # linked from the admin's index
    assert served["X-Request-Id"] in [row["request_id"] for row in listed(operator_client)]
    assert served["X-Request-Id"] in [row["request_id"] for row in listed(admin_client)]


def test_the_store_keeps_the_slowest_of_each_slice_for_the_window():
    store = slow_requests.store()
    keep = django_settings.SLOW_REQUESTS_KEEP
    now = time.time()
    store.record(timed(10_000, now - django_settings.SLOW_REQUESTS_WINDOW_SECONDS - slice_seconds(), "expired"))
    store.record(timed(5_000, now - (SLICES - 2) * slice_seconds(), "older-slice"))
    for index in range(keep + 5):
        store.record(timed(100 + index, now, request_id=f"now-{index}"))

    kept = store.slowest()

    assert [entry.request_id for entry in kept[:2]] == ["older-slice", f"now-{keep + 4}"]
    assert "expired" not in {entry.request_id for entry in kept}
    assert len(kept) == keep and min(entry.milliseconds for entry in kept) == 100 + 5 + 1  # the rest merged away
    assert not store.is_slower(105, now) and store.is_slower(106.5, now)  # the floor of the current slice


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the shared store is the production stack's (REDIS_URL)")
def test_the_redis_store_is_shared_by_every_process(settings):
    settings.SLOW_REQUESTS_KEEP = 2
    here, there = slow_requests.store(), RedisSlowRequests()
    assert isinstance(here, RedisSlowRequests)
    now = time.time()
    here.record(timed(50, now, "from-here"))
    there.record(timed(70, now, "from-there"))
    there.record(timed(60, now, "again-there"))
    # Another process, as a second gunicorn worker, records through its own client; at the same instant, as
    # its start can take seconds on a busy machine, past the end of the five-minute slice of the others.
    script = ("import django; django.setup(); from exchange import slow_requests; "
              "from exchange.slow_requests import TimedRequest; slow_requests.store().record(TimedRequest("
              f"900, 'POST', 'v1/orders', 201, None, 'other-process', {now!r}, 7))")
    env = process_env(DJANGO_SETTINGS_MODULE="exchange.settings", SLOW_REQUESTS_KEEP="2")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)

    assert [entry.request_id for entry in here.slowest()] == ["other-process", "from-there"]
    assert here.floor == 0 and here.is_slower(65, now)  # a process learns the shared floor from its own writes
    here.record(timed(65, now, "late"))  # dropped by the shared list, which answers its floor
    assert here.floor == 70 and not here.is_slower(65, now)
    assert [entry.request_id for entry in there.slowest()] == ["other-process", "from-there"]


def test_a_browser_request_is_kept_with_the_signed_in_users_account(admin_client, alice):
    trader = Client()
    trader.force_login(alice.user)
    page = trader.get("/v1/orders")  # the market page's own calls: signed in, not signed
    anonymous = Client().get("/")
    assert (page.status_code, anonymous.status_code) == (200, 200)

    rows = {row["request_id"]: row for row in listed(admin_client)}

    assert rows[page["X-Request-Id"]]["account_id"] == str(alice.pk)
    assert rows[anonymous["X-Request-Id"]]["account_id"] == "-"


def test_recording_a_request_costs_no_query(admin_client, alice):
    """Not even the operator's account (they have none) is looked up to record the admin's own pages."""
    store = slow_requests.store()
    admin_client.get("/admin/")  # the session and user, cached as on any later page

    def queries_of_one_page(recorded: bool) -> int:
        store.reset()
        if not recorded:
            store.floor_slice, store.floor = slice_of(time.time()), math.inf
        with CaptureQueriesContext(connection) as queries:
            admin_client.get("/admin/")
        assert (len(store.slowest()) == 1) == recorded
        return len(queries)

    assert queries_of_one_page(recorded=True) == queries_of_one_page(recorded=False)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the shared store is the production stack's (REDIS_URL)")
def test_with_its_redis_away_the_store_costs_requests_one_try_a_slice(caplog):
    store = slow_requests.store()
    away = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    store.add_script = away.register_script(ADD_SCRIPT)
    try:
        answered = [Client().get("/v1/time") for _ in range(3)]
    finally:
        store.add_script = get_redis().register_script(ADD_SCRIPT)

    assert [response.status_code for response in answered] == [200, 200, 200]
    warned = [r.getMessage() for r in caplog.records if r.name == "exchange.slow_request_backends"]
    assert len(warned) == 1 and warned[0].startswith("slowest requests not recorded until the next slice: Error")
    assert store.floor == math.inf and not store.is_slower(10 ** 9, time.time())
