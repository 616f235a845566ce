"""Our database backends (exchange.db_backends): every amount goes in and comes back exactly on both
stacks; on SQLite as fixed-width text, with exact EXACT_SUM and EXACT_ADD over it."""

import time
from decimal import Decimal
from uuid import uuid4

import psycopg
import pytest
from django.db import connection
from django.db.models import F, Sum

from trading.models import Balance, BookLevel, LedgerEntry
from trading.sql import ExactSum

from .stack import POSTGRES

D = Decimal
# 36 digits, 18 after the point: the widest amount an AmountField holds.
WIDEST = D("987654321098765432.123456789012345678")
TINY = D("0.000000000000000001")
SIGNED = [WIDEST, -WIDEST, TINY, -TINY, D("-0.5"), D("63000.5")]

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's amounts as text")
postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's numeric amounts")


def raw(sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def ledger_lines(asset, amounts):
    """External ledger lines, the one amount column that holds negative values."""
    journal = uuid4()
    LedgerEntry.objects.bulk_create(LedgerEntry(journal=journal, asset=asset, bucket="external", amount=amount,
                                                reason="adjustment", reference="test:amounts") for amount in amounts)
    return LedgerEntry.objects.filter(journal=journal)


def test_signed_amounts_round_trip_exactly(btc_usd):
    lines = ledger_lines(btc_usd.base, SIGNED)

    assert list(lines.order_by("id").values_list("amount", flat=True)) == SIGNED
    assert lines.get(amount=-WIDEST).amount == -WIDEST
    assert sorted(lines.filter(amount__lt=0).values_list("amount", flat=True)) == [-WIDEST, D("-0.5"), -TINY]
    # Text order on SQLite: every negative value before every non-negative one.
    assert [amount < 0 for amount in lines.order_by("amount").values_list("amount", flat=True)] == [True] * 3 + [False] * 3


def test_zero_and_saved_amounts_round_trip_exactly(btc_usd, make_account):
    balance = Balance.objects.create(account=make_account(), asset=btc_usd.base, locked=WIDEST)
    balance.refresh_from_db()
    assert (balance.available, balance.locked) == (D(0), WIDEST)

    Balance.objects.filter(pk=balance.pk).update(available=TINY)
    balance.available, balance.locked = WIDEST, D(0)
    balance.save(update_fields=["locked"])
    assert Balance.objects.filter(available=TINY, locked=0).count() == 1


def test_amounts_read_through_expressions_are_exact(btc_usd):
    lines = ledger_lines(btc_usd.base, [WIDEST, TINY, D("-1")])

    assert set(lines.values_list(F("amount"), flat=True)) == {WIDEST, TINY, D("-1")}
    assert lines.aggregate(total=ExactSum("amount"))["total"] == WIDEST + TINY - 1
    assert lines.filter(amount__gt=WIDEST).aggregate(total=ExactSum("amount"))["total"] is None


@postgresql_only
def test_postgresql_reads_amounts_without_a_converter_per_value():
    compiler = BookLevel.objects.values_list("price", "size").query.get_compiler(connection=connection)
    compiler.setup_query()

    # What the compiler would call on each value of each row it reads.
    assert compiler.get_converters([expression for expression, _, _ in compiler.select]) == {}


@sqlite_only
def test_sqlite_stores_fixed_width_text_in_numeric_order(btc_usd):
    prices = [TINY, D("9.5"), D("10"), D("63000.5"), WIDEST]
    for price in reversed(prices):
        BookLevel.objects.create(market=btc_usd, side="ask", price=price, size=D(1))

    stored = raw('SELECT price, typeof(price) FROM "trading_booklevel" ORDER BY price')
    assert stored[2] == ("000000000000000010.000000000000000000", "text")
    assert {(len(text), kind) for text, kind in stored} == {(37, "text")}
    assert list(BookLevel.objects.order_by("price").values_list("price", flat=True)) == prices


@sqlite_only
def test_exact_sum_adds_what_sum_adds_as_floats(btc_usd):
    lines = ledger_lines(btc_usd.base, [WIDEST, TINY, D("-1")])
    exact = WIDEST + TINY - 1

    assert lines.aggregate(total=ExactSum("amount"))["total"] == exact
    # SQLite's SUM() over the text: a float, read back as the Decimal it prints as (15 digits).
    assert lines.aggregate(total=Sum("amount"))["total"] == D(repr(float(exact)))


@sqlite_only
def test_exact_add_returns_the_fields_text(db):
    amount = LedgerEntry._meta.get_field("amount")

    def text(value: str) -> str:
        return amount.get_db_prep_value(D(value), connection)

    assert raw("SELECT EXACT_ADD(%s, %s)", [text("1.5"), "-2"]) == [(text("-0.5"),)]
    assert raw("SELECT EXACT_ADD(%s, %s)", [text(str(WIDEST - TINY)), TINY]) == [(text(str(WIDEST)),)]
    assert raw("SELECT EXACT_ADD(0.5, 1), EXACT_ADD(%s, 0)", [text("-7.25")]) == [(text("1.5"), text("-7.25"))]
    assert raw("SELECT EXACT_ADD(NULL, '1'), EXACT_ADD('1', NULL)") == [(None, None)]
    assert text("-0.5") == "-00000000000000000.500000000000000000"


@sqlite_only
def test_exact_add_updates_and_upserts_amounts(btc_usd, make_account):
    balance = Balance.objects.create(account=make_account(), asset=btc_usd.base, available=WIDEST - 1)
    raw('UPDATE "trading_balance" SET available = EXACT_ADD(available, %s) WHERE id = %s', [str(1 - TINY), balance.pk])
    balance.refresh_from_db()
    assert balance.available == WIDEST - TINY

    size = BookLevel._meta.get_field("size")
    BookLevel.objects.create(market=btc_usd, side="bid", price=D(100), size=WIDEST - 2)
    for amount in (D("1.5"), D("0.5")):
        raw('INSERT INTO "trading_booklevel" (market_id, side, price, size) VALUES (%s, %s, %s, %s) '
            "ON CONFLICT (market_id, side, price) DO UPDATE SET size = EXACT_ADD(size, excluded.size)",
            [btc_usd.pk, "bid", size.get_db_prep_value(D(100), connection), size.get_db_prep_value(amount, connection)])
    assert BookLevel.objects.get(market=btc_usd, price=D(100)).size == WIDEST


def last_query_of(pid: int) -> str:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


@postgresql_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_health_check_asks_the_server_only_about_a_connection_it_closed():
    """CONN_HEALTH_CHECKS' check of an idle connection sends nothing; one whose backend was terminated is
    found unusable, and the next query runs on a new connection."""
    pid = raw("SELECT pg_backend_pid()")[0][0]
    raw("SELECT 'before the check'")
    assert connection.is_usable()
    assert last_query_of(pid) == "SELECT 'before the check'"  # no SELECT 1 sent

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    for _ in range(200):  # the terminated backend's notice reaches the socket
        if not connection.is_usable():
            break
        time.sleep(0.01)
    assert not connection.is_usable()
    connection.close_if_unusable_or_obsolete()  # what Django does as a request starts
    connection.health_check_done = False
    assert raw("SELECT pg_backend_pid()")[0][0] != pid
