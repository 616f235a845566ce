"""The ledger proof an operator runs at any time: ``manage.py audit_ledger``, the beat job and the admin's button
each keep their result (``AuditRun``); a corrupted balance is named; the audit reads one snapshot, so it reports
clean while orders flow through the production topology."""

import io
import json
import threading
from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from hkt_client import Client as ApiClient

from exchange.celery import app
from trading import dispatch
from trading.audit import audit_snapshot
from trading.backends import store
from trading.models import AuditRun, Balance, LedgerEntry
from trading.tasks import audit_ledger_task

from .conftest import balance_of
from .processes import wait_until
from .stack import POSTGRES, OrderStream

D = Decimal
RUN_URL = "/admin/trading/auditrun/run/"


@pytest.fixture
def traded(alice, bob, trade):
    """Alice's resting ask partly filled by Bob's bid: orders, a trade, fees and holds on the books."""
    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    trade(bob, side="buy", type="limit", price=D("63100"), size=D("0.2"))
    return alice, bob


def audit_command() -> tuple[dict, str | None]:
    """``manage.py audit_ledger``'s report and its error (None when it exits 0)."""
    out = io.StringIO()
    try:
        call_command("audit_ledger", stdout=out)
    except CommandError as error:
        return json.loads(out.getvalue()), str(error)
    return json.loads(out.getvalue()), None


@pytest.mark.django_db
def test_the_command_keeps_a_clean_run_with_what_it_read(traded):
    report, error = audit_command()

    run = AuditRun.objects.get()
    assert error is None and report["problems"] == [] and report["audit_run"] == run.pk
    assert (run.trigger, run.clean, run.problem_count, run.problems) == ("command", True, 0, [])
    assert run.counts == {"ledger_entries": report["ledger_entries"], "balances": report["balances"], "orders": 2,
                          "trades": 1, "pending_commands": 0}
    assert run.counts["ledger_entries"] > 0 and run.duration.total_seconds() >= 0


@pytest.mark.django_db
def test_the_command_names_a_corrupted_balance_and_keeps_the_problem(traded):
    alice, _ = traded
    entries = balance_of(alice, "USD").available
    Balance.objects.filter(pk=balance_of(alice, "USD").pk).update(available=entries + D("0.01"))
    balance = balance_of(alice, "USD")

    report, error = audit_command()

    run = AuditRun.objects.get()
    named = f"{balance}: available {balance.available} but its entries add to {entries}"
    assert named in report["problems"] and named in run.problems
    assert error.startswith(f"{run.problem_count} invariant(s) violated; the first: ")
    assert not run.clean and run.problem_count == len(report["problems"]) >= 1


@pytest.mark.django_db
def test_the_beat_job_is_scheduled_and_keeps_its_run(traded):
    job = next(job for job in settings.CELERY_BEAT_SCHEDULE.values() if job["task"] == "trading.audit_ledger")

    run_id = app.tasks[job["task"]].apply().get()  # what beat queues, by name

    run = AuditRun.objects.get()
    assert (run.pk, run.trigger, run.clean) == (run_id, "beat", True)


@pytest.mark.django_db
def test_the_beat_job_keeps_a_broken_run_too(traded):
    alice, _ = traded
    entries = balance_of(alice, "BTC").locked
    Balance.objects.filter(pk=balance_of(alice, "BTC").pk).update(locked=entries - D("0.1"))
    balance = balance_of(alice, "BTC")

    audit_ledger_task.apply()

    run = AuditRun.objects.get()
    assert run.trigger == "beat" and not run.clean
    assert f"{balance}: locked {balance.locked} but its entries add to {entries}" in run.problems


@pytest.mark.django_db
def test_the_admin_button_runs_the_audit_and_shows_it_first(admin_client, admin_user, traded):
    response = admin_client.post(RUN_URL)

    run = AuditRun.objects.get()
    assert response.status_code == 302 and response["Location"] == "/admin/trading/auditrun/"
    assert (run.trigger, run.started_by, run.clean) == ("admin", admin_user.username, True)
    page = admin_client.get("/admin/trading/auditrun/").content.decode()
    assert "Latest audit: clean" in page and "Run the audit now" in page and f"{run.counts['orders']} orders" in page


@pytest.mark.django_db
def test_the_admin_button_shows_the_first_problem(admin_client, traded):
    alice, _ = traded
    Balance.objects.filter(pk=balance_of(alice, "USD").pk).update(available=D("1"))

    page = admin_client.post(RUN_URL, follow=True).content.decode()

    run = AuditRun.objects.get()
    assert f"Latest audit: {run.problem_count} problem(s)" in page
    assert f"{balance_of(alice, 'USD')}: available" in run.problems[0] and run.problems[0] in page


@pytest.mark.django_db
def test_the_admin_button_needs_a_post_with_csrf_and_the_permission(admin_user, make_account, traded):
    from django.contrib.auth.models import Permission

    operator = make_account("viewer").user
    operator.is_staff = True
    operator.save()
    operator.user_permissions.add(Permission.objects.get(codename="view_auditrun"))
    viewer, admin = Client(), Client(enforce_csrf_checks=True)
    viewer.force_login(operator)
    admin.force_login(admin_user)

    assert viewer.get("/admin/trading/auditrun/").status_code == 200
    assert "Run the audit now" not in viewer.get("/admin/trading/auditrun/").content.decode()
    assert viewer.post(RUN_URL).status_code == 403
    assert admin.post(RUN_URL).status_code == 403  # no CSRF token
    admin.get("/admin/trading/auditrun/")
    assert admin.get(RUN_URL).status_code == 405
    assert not AuditRun.objects.exists()

    assert admin.post(RUN_URL, {"csrfmiddlewaretoken": admin.cookies["csrftoken"].value}).status_code == 302
    assert AuditRun.objects.get().trigger == "admin"


@pytest.mark.django_db
def test_the_audit_does_not_count_queued_commands_as_broken(alice, bob):
    """Orders accepted but not yet matched (their commands queued) hold their funds: the books balance."""
    from trading import services
    from trading.orders import OrderRequest

    request = OrderRequest(pair="BTC-USD", side="sell", type="limit", price=D("63000"), size=D("0.5"))
    services.place_order(alice, request)

    report, error = audit_command()

    assert error is None and report["pending_commands"] == 1
    dispatch.run_matcher("BTC-USD")
    assert audit_command()[0]["pending_commands"] == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the rate tiers a new account needs
def test_a_write_commits_while_the_audit_reads_and_the_audit_does_not_see_it(make_account, fund):
    """The audit's snapshot takes no write lock (SQLite: a deferred transaction; PostgreSQL: REPEATABLE READ)."""
    dora = make_account("dora")
    fund(dora, "USD", "100")
    failures = []

    def deposit():
        try:
            fund(dora, "USD", "5")
        except Exception as error:  # kept for the assert below
            failures.append(error)
        finally:
            connection.close()

    with store().snapshot():
        entries = LedgerEntry.objects.count()
        writer = threading.Thread(target=deposit)
        writer.start()
        writer.join()
        assert failures == []
        assert LedgerEntry.objects.count() == entries and audit_snapshot() == []

    assert LedgerEntry.objects.count() == entries + 2 and balance_of(dora, "USD").available == D("105")


# -- on the production topology (PostgreSQL, gunicorn, a Celery matcher)


@pytest.mark.slow
def test_a_corrupted_balance_in_a_copy_of_the_database_is_named_and_the_original_stays_clean(stack):
    trader = stack.create_trader("carol", "USD=5000", "BTC=2")

    with stack.clone("corrupt") as copy:
        with psycopg.connect(f"{POSTGRES}/{copy.database}", autocommit=True) as conn:
            balance_id = conn.execute(
                "SELECT b.id FROM trading_balance b JOIN trading_asset a ON a.id = b.asset_id "
                "WHERE b.account_id = %s AND a.symbol = 'USD'", [trader["account_id"]]).fetchone()[0]
            conn.execute("UPDATE trading_balance SET available = available + 0.01 WHERE id = %s", [balance_id])
        broken = copy.audit()

    assert broken["problem_count"] >= 1
    assert broken["problems"][0].startswith(f"account {trader['account_id']} (carol) USD spot: available 5000.01")
    assert stack.audit()["problems"] == []


@pytest.mark.slow
def test_the_audit_reports_clean_again_and_again_while_orders_flow(stack):
    rest = stack.start_rest()
    stack.start_matcher("BTC-USD")
    bots = [ApiClient(rest, k["key"], k["secret"]) for k in
            (stack.create_trader(f"flow{i}", "USD=10000000", "BTC=1000") for i in range(3))]
    reports = []
    with OrderStream(bots, "BTC-USD", mid=D(63000), size_step=D("0.001")) as orders:
        for threshold in (30, 60, 90):  # audits at points of the stream, however fast this machine is
            orders.wait_for(threshold)
            reports.append(stack.audit())

    assert orders.failures == []
    assert [report["problems"] for report in reports] == [[], [], []]
    assert reports[0]["orders"] < reports[1]["orders"] < reports[2]["orders"]  # orders flowed between audits
    final = wait_until(lambda: (r := stack.audit())["pending_commands"] == 0 and r, timeout=90, interval=1)
    assert final["problems"] == [] and final["trades"] > 0
