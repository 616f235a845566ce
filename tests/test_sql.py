"""The matcher's bulk writes (the store, trading.backends): unnest() of array literals on PostgreSQL,
executemany on SQLite. Both must keep every digit of an amount and write NULLs as NULLs."""

from decimal import Decimal

import pytest
from django.db import connection, transaction

from trading.models import Balance, BookLevel, Order
from trading.backends import store

D = Decimal
# 36 digits, 18 after the point: the widest amount an AmountField holds.
WIDEST = D("987654321098765432.123456789012345678")


def upsert_rows(*args, **kwargs) -> None:
    store().execute([store().upsert_statement(*args, **kwargs)])


def update_rows(*args, **kwargs) -> None:
    store().execute([store().update_statement(*args, **kwargs)])


def insert_rows(*args, **kwargs) -> None:
    store().execute([store().insert_statement(*args, **kwargs)])


def levels(market) -> dict:
    return {(side, price): size for side, price, size in
            BookLevel.objects.filter(market=market).values_list("side", "price", "size")}


def test_upsert_and_delete_rows_keep_every_digit(btc_usd):
    upsert_rows(BookLevel, ["market", "side", "price", "size"],
                [(btc_usd.pk, "bid", D("0.000000000000000001"), WIDEST), (btc_usd.pk, "ask", WIDEST, D("1"))],
                unique=["market", "side", "price"], update=["size"])
    assert levels(btc_usd) == {("bid", D("0.000000000000000001")): WIDEST, ("ask", WIDEST): D("1")}

    upsert_rows(BookLevel, ["market", "side", "price", "size"], [(btc_usd.pk, "ask", WIDEST, D("2.5"))],
                unique=["market", "side", "price"], update=["size"])
    upsert_rows(BookLevel, ["market", "side", "price", "size"], [(btc_usd.pk, "bid", D("0.000000000000000001"), D("7"))],
                unique=["market", "side", "price"], update=[])  # DO NOTHING: the existing row stays
    assert levels(btc_usd) == {("bid", D("0.000000000000000001")): WIDEST, ("ask", WIDEST): D("2.5")}

    store().execute([store().delete_statement(BookLevel, ["market", "side", "price"],
                                              [(btc_usd.pk, "ask", WIDEST), (btc_usd.pk, "ask", D("5"))])])
    assert levels(btc_usd) == {("bid", D("0.000000000000000001")): WIDEST}

    # By one column (= ANY() on PostgreSQL): exactly the listed rows, an unknown key is no error.
    upsert_rows(BookLevel, ["market", "side", "price", "size"],
                [(btc_usd.pk, "ask", D(price), D("1")) for price in (3, 4)], unique=["market", "side", "price"], update=[])
    doomed = BookLevel.objects.get(market=btc_usd, price=D("3")).pk
    store().execute([store().delete_statement(BookLevel, ["id"], [(doomed,), (doomed + 1000,)])])
    assert levels(btc_usd) == {("bid", D("0.000000000000000001")): WIDEST, ("ask", D("4")): D("1")}


def test_insert_rows_with_reserved_ids_never_collide_with_later_inserts(btc_usd):
    with transaction.atomic():
        ids, none = store().reserve_ids({BookLevel: 3, Order: 0}).values()
        insert_rows(BookLevel, ["id", "market", "side", "price", "size"],
                    [(pk, btc_usd.pk, "ask", D(100 + n), WIDEST) for n, pk in enumerate(ids)])
    assert len(set(ids)) == 3 and ids == sorted(ids) and none == []
    assert dict(BookLevel.objects.filter(pk__in=ids).values_list("pk", "size")) == {pk: WIDEST for pk in ids}
    later = BookLevel.objects.create(market=btc_usd, side="bid", price=D("1"), size=D("1"))
    assert later.pk > max(ids)


def test_update_rows_writes_nulls_and_exact_amounts(alice, trade):
    first = trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    second = trade(alice, side="sell", type="limit", price=D("64000"), size=D("0.5"))
    assert first.book_priority is not None and second.book_priority is not None

    # Every value of a column NULL (no array element to tell its type), and an exact amount.
    update_rows(Order, ["book_priority", "done_at", "fee"], [(first.pk, None, None, WIDEST), (second.pk, None, None, D(0))])
    rows = dict((pk, rest) for pk, *rest in Order.objects.filter(account=alice).values_list(
        "pk", "book_priority", "done_at", "fee"))
    assert rows == {first.pk: [None, None, WIDEST], second.pk: [None, None, D(0)]}


def test_fields_the_same_in_every_row_are_written_to_every_row(btc_usd, alice, trade):
    """``same``: a field given once for all the rows (the batch's time, its market), on both stacks."""
    from datetime import UTC, datetime

    when = datetime(2026, 12, 6, 10, 11, 12, 345678, tzinfo=UTC)
    ids = store().reserve_ids({BookLevel: 2})[BookLevel]
    insert_rows(BookLevel, ["id", "side", "price"], [(ids[0], "ask", D("101")), (ids[1], "bid", D("99"))],
                same={"market": btc_usd.pk, "size": WIDEST})
    assert levels(btc_usd) == {("ask", D("101")): WIDEST, ("bid", D("99")): WIDEST}

    orders = [trade(alice, side="sell", type="limit", price=D(63000 + n), size=D("0.1")) for n in range(2)]
    update_rows(Order, ["reject_reason"], [(orders[0].pk, "a"), (orders[1].pk, "b")],
                same={"done_at": when, "fee": WIDEST})
    rows = Order.objects.filter(pk__in=[order.pk for order in orders]).order_by("pk").values_list(
        "reject_reason", "done_at", "fee")
    assert list(rows) == [("a", when, WIDEST), ("b", when, WIDEST)]


def test_lock_rows_returns_exactly_the_keyed_rows_in_primary_key_order(alice, bob):
    usd = Balance.objects.get(account=alice, asset__symbol="USD").asset_id
    wanted = [(bob.pk, usd, "spot"), (alice.pk, usd, "spot"), (alice.pk, usd, "margin")]  # no margin row exists
    with transaction.atomic():
        rows = store().lock_rows(Balance, ["account", "asset", "wallet"], wanted)
    expected = Balance.objects.filter(account__in=[alice, bob], asset_id=usd, wallet="spot").order_by("pk")
    assert [(row.pk, row.account_id, row.available) for row in rows] == [
        (row.pk, row.account_id, row.available) for row in expected
    ]


def test_a_compiled_read_run_with_other_parameters_reads_what_its_queryset_would(alice, bob, trade):
    """The matcher's reads are compiled once (store().compiled) and run with each batch's parameters."""
    for account, price in ((alice, D("63000.5")), (bob, D("64000.25")), (bob, D("65000"))):
        trade(account, side="sell", type="limit", price=price, size=D("0.00123"), post_only=True)

    def orders(account):
        return Order.objects.filter(account=account).order_by("-pk").values_list(
            "pk", "side", "price", "size", "post_only", "status")

    read = store().compiled(orders(alice))
    assert store().read(read, [alice.pk]) == list(orders(alice))
    assert store().read(read, [bob.pk]) == list(orders(bob))
    assert [row[2:5] for row in store().read(read, [bob.pk])] == [(D("65000"), D("0.00123"), True),
                                                                   (D("64000.25"), D("0.00123"), True)]


def test_texts_and_timestamps_come_back_exactly_as_written(alice, trade):
    """Array literals quote every text: quotes, backslashes, commas, braces, the word NULL, empty."""
    from datetime import datetime, timezone

    texts = ['say "no"', "back\\slash", "a,b", "{x}", "NULL", "", "naïve ✓"]
    orders = [trade(alice, side="sell", type="limit", price=D(63000 + n), size=D("0.1")) for n in range(len(texts))]
    when = datetime(2026, 12, 1, 13, 2, 3, 456789, tzinfo=timezone.utc)
    update_rows(Order, ["reject_reason", "done_at", "post_only"],
                [(order.pk, text, when if n % 2 else None, bool(n % 2)) for n, (order, text) in enumerate(zip(orders, texts))])
    rows = Order.objects.filter(pk__in=[order.pk for order in orders]).order_by("pk").values_list(
        "reject_reason", "done_at", "post_only")
    assert list(rows) == [(text, when if n % 2 else None, bool(n % 2)) for n, text in enumerate(texts)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite does not hold texts to a length")
def test_a_text_too_long_for_its_column_is_refused_not_cut(alice):
    from django.db import DataError

    from trading.models import Asset

    usd = Asset.objects.get(symbol="USD")
    with pytest.raises(DataError), transaction.atomic():  # wallet is at most 8 characters
        upsert_rows(Balance, ["account", "asset", "wallet", "available", "locked"],
                    [(alice.pk, usd.pk, "spot-and-more", D(0), D(0))], unique=["account", "asset", "wallet"], update=[])
    assert not Balance.objects.filter(wallet__startswith="spot-").exists()
