"""Where the two stacks differ, chosen once in settings: the store, the matchers and the message bus.

- The **store** (``TRADING_STORE``) writes the trading tables: the matcher's bulk statements, row
  locks, id reservation, an order's insert and hold, a read in one snapshot. PostgreSQL sends rows as
  one array literal per column in one pipeline of statements; SQLite, the single-process embedded
  default, runs executemany, and adds amounts (text there) with its registered EXACT_ADD function.
- The **matchers** (``MATCHER_BACKEND``): how accepted work wakes a pair's single matcher and how a
  waiting request gets its order's state back. Celery: a long-lived loop per pair in the Celery worker
  that serves the pair's queue ``match.<PAIR>``, waiting on the pair's wake-up list in Redis, replying
  through Redis lists. In-process: the matcher runs right after the accepting transaction commits, in
  the same process.
- The **bus** (``MESSAGE_BUS``): how committed changes reach the WebSocket processes. Redis: sent
  from one publisher thread, in commit order, on one event loop; account events numbered in Redis.
  Local: the in-memory channel layer, sent on the serving event loop, numbered in this process.

Every other module calls these objects and never asks which stack it is on.
"""

import asyncio
import functools
import logging
import math
import re
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, Inexact
from typing import NamedTuple

import psycopg
import redis
import redis.exceptions
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.db.models import FloatField
from django.db.models.expressions import RawSQL

from exchange.backends import chosen
from exchange.money import EXACT
from exchange.redis import Reply, RoundTrip, get_redis
from exchange.request_ids import current_request_id
from trading.models import MatcherCommand, Order, Side
from trading.sql import Statement, columns_of, names_of

logger = logging.getLogger(__name__)

# What a matcher's rebuild reads of each resting order (store().resting_book): its time priority, then
# what the book and plain_resting need.
BOOK_COLUMNS = ("book_priority", "id", "account_id", "side", "price", "size", "status", "filled_size",
                "executed_value", "fee", "hold_remaining")
# Two million resting orders fit in this (one million take 118 MB): the rebuild's sort stays in memory.
BOOK_SORT_MEMORY = "256MB"


def in_steps(amount: str, step: Decimal) -> tuple[str, Decimal]:
    """SQL counting ``amount`` in ``step``s, and its parameter: a product by the exact inverse where there is
    one (0.01: 100), which PostgreSQL computes in a fraction of a division's time, else the quotient."""
    try:
        return f"{amount} * %s", EXACT.divide(1, step)
    except Inexact:
        return f"{amount} / %s", step


def store() -> "Store":
    return chosen("TRADING_STORE")


def matchers() -> "Matchers":
    return chosen("MATCHER_BACKEND")


def bus() -> "Bus":
    return chosen("MESSAGE_BUS")


def reset() -> None:
    """Forget what the trading backends remember (tests: a new process)."""
    for backend in (store(), matchers(), bus()):
        backend.reset()


# -- the store


def prepared(columns, rows) -> list[list]:
    return [[column.get_db_prep_save(value, connection) for column, value in zip(columns, row)] for row in rows]


def with_same(fields: list[str], rows: list[tuple], same: dict | None) -> tuple[list[str], list[tuple]]:
    """The fields and rows with ``same``'s fields added to every row (for executemany)."""
    if not same:
        return fields, rows
    values = tuple(same.values())
    return [*fields, *same], [(*row, *values) for row in rows]


class Store:
    """The statements of one database vendor. A statement builder needs at least one row."""

    def reset(self) -> None:
        pass

    # SQL spellings of what statements compute on amounts, each of two SQL expressions.
    ADD = "{} + {}"
    GREATEST = "GREATEST({}, {})"
    # A timestamp column as float seconds since the epoch.
    EPOCH_SECONDS = "EXTRACT(EPOCH FROM {})::float8"
    LEAST = "LEAST({}, {})"

    def add(self, left: str, right: str) -> str:
        return self.ADD.format(left, right)

    def epoch_seconds(self, model, field: str) -> RawSQL:
        """A datetime field read as seconds since the epoch (a float): a datetime costs more to read, its
        time zone converted on every row."""
        column = f'"{model._meta.db_table}"."{model._meta.get_field(field).column}"'
        return RawSQL(self.EPOCH_SECONDS.format(column), [], output_field=FloatField())

    def row_params(self, model, names: list[str], row: list) -> list:
        """One row's values as statement parameters."""
        return row

    def compiled(self, queryset) -> "CompiledRead":
        """A ``values_list()`` queryset compiled to SQL once, to run again with other parameters (in the
        order the queryset's own come in): the ORM builds and compiles a queryset in about as long as a
        short read takes."""
        compiler = queryset.query.get_compiler(connection=connection)
        sql, _ = compiler.as_sql()
        return CompiledRead(sql, compiler.get_converters([column for column, _, _ in compiler.select]))

    def adding_candle_statement(self, model, names: list[str], row: list) -> Statement:
        """Insert a candle, or add it to the stored one of its minute: high and low widen, volumes and
        trade counts add up, the close is the new one's, the open stays the first one's."""
        add, greatest, least = self.add, self.GREATEST.format, self.LEAST.format
        return Statement(
            f"INSERT INTO {model._meta.db_table} AS c ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
            f"ON CONFLICT (market_id, minute) DO UPDATE SET high = {greatest('c.high', 'EXCLUDED.high')}, "
            f"low = {least('c.low', 'EXCLUDED.low')}, close = EXCLUDED.close, "
            f"volume = {add('c.volume', 'EXCLUDED.volume')}, "
            f"quote_volume = {add('c.quote_volume', 'EXCLUDED.quote_volume')}, trades = c.trades + EXCLUDED.trades",
            self.row_params(model, names, row))

    @contextmanager
    def snapshot(self):
        """A transaction whose reads all see one committed state of the database."""
        with transaction.atomic():
            yield

    def upsert_conflict(self, model, unique: list[str], update: list[str]) -> str:
        return f"ON CONFLICT ({names_of(columns_of(model, unique))}) " + (
            "DO UPDATE SET " + ", ".join(f'"{column.column}" = EXCLUDED."{column.column}"'
                                          for column in columns_of(model, update))
            if update else "DO NOTHING"
        )


class PostgresStore(Store):
    """Rows go out as unnest() of one array literal per column, several statements in one pipeline."""

    # The matcher may write batch N on a second connection while it matches batch N+1.
    writes_concurrently = True

    @contextmanager
    def cursor(self):
        """Django's PostgreSQL cursors bind parameters client-side, quoting every array element in
        Python; these bind them server-side, on the same connection and transaction, with errors
        raised as Django's."""
        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            yield cursor

    def execute(self, statements: list[Statement]) -> None:
        """Run statements in order, in the current transaction, as one pipeline: the server works
        through them while the client waits once."""
        with self.cursor() as cursor, connection.connection.pipeline():
            for statement in statements:
                cursor.execute(statement.sql, statement.params)

    def resting_book(self, resting, tick: Decimal, lot: Decimal, convert: Callable[..., tuple],
                     chunk: int = 20_000):
        """The book of the ``resting`` orders (a queryset) in time priority, lists of ``chunk`` rows (id,
        account_id, is_buy, price in ticks, size left in lots, whether ``plain_resting``), computed by the
        server: it sends five integers and a flag a row instead of six amounts for the client to parse.
        One product or quotient per amount (the subquery kept apart by OFFSET 0, or each use would compute
        it again); an amount off the grid fails the read (the cast of a message to bigint). Streamed through
        a server-side cursor in binary, in the caller's transaction or one of its own; sorted in memory."""
        inner, params = resting.order_by().values_list(*BOOK_COLUMNS).query.sql_with_params()
        whole = "CASE WHEN {0} = trunc({0}) THEN {0}::bigint ELSE ('order ' || id || ' is off the grid')::bigint END"
        (ticks, per_tick), (lots, per_lot) = in_steps("price", tick), in_steps("(size - filled_size)", lot)
        sql = (f"SELECT id, account_id, is_buy, {whole.format('ticks')}, {whole.format('lots')}, plain FROM ("
               f"SELECT book_priority, id, account_id, side = %s AS is_buy, {ticks} AS ticks, {lots} AS lots, "
               "status = %s AND filled_size = 0 AND executed_value = 0 AND fee = 0 "
               "AND hold_remaining = CASE WHEN side = %s THEN size ELSE price * size END AS plain "
               f"FROM ({inner}) o OFFSET 0) t ORDER BY book_priority, id")
        params = [Side.BUY, per_tick, per_lot, Order.Status.OPEN, Side.SELL, *params]
        with (transaction.atomic(savepoint=False), connection.wrap_database_errors,
              psycopg.ServerCursor(connection.connection, "resting_book") as cursor):
            connection.connection.execute(f"SET LOCAL work_mem = '{BOOK_SORT_MEMORY}'")
            cursor.execute(sql, params, binary=True)
            rows = cursor.fetchmany(chunk)  # the sort runs now
            connection.connection.execute("RESET work_mem")
            while rows:
                yield rows
                rows = cursor.fetchmany(chunk)

    def reserve_ids(self, counts: dict) -> dict:
        """New primary keys, {model: count} -> {model: [ids]}, in one round trip."""
        wanted = {model: count for model, count in counts.items() if count}
        ids = {model: [] for model in counts}
        if not wanted:
            return ids
        # The sequence's name in a subquery: evaluated once, not once per id.
        arrays = ", ".join(
            f"ARRAY(SELECT nextval((SELECT pg_get_serial_sequence('\"{model._meta.db_table}\"', 'id'))) "
            f"FROM generate_series(1, %s))" for model in wanted
        )
        with self.cursor() as cursor:
            cursor.execute(f"SELECT {arrays}", list(wanted.values()))
            return {**ids, **dict(zip(wanted, cursor.fetchone()))}

    def select_rows(self, queryset) -> list[tuple]:
        """The rows of a ``values_list()`` queryset, read by a plain cursor (Django's iteration costs as
        much again). Only for fields whose Python value is what psycopg returns."""
        sql, params = queryset.query.sql_with_params()
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def read(self, compiled: "CompiledRead", params: list) -> list[tuple]:
        """A compiled read's rows (psycopg's values, no conversions), through Django's cursor as the ORM's
        reads go."""
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            return cursor.fetchall()

    def insert_statement(self, model, fields: list[str], rows: list[tuple], same: dict | None = None) -> Statement:
        """``same``: fields of the same value in every row, {field: value}, sent once each."""
        columns, same = columns_of(model, fields), same or {}
        fixed = columns_of(model, list(same))
        return Statement(f'INSERT INTO "{model._meta.db_table}" ({names_of(columns + fixed)}) '
                         f"SELECT *{''.join(f', %s::{base_type(column)}' for column in fixed)} FROM {unnest(columns)}",
                         [*same.values(), *arrays(rows)])

    def update_statement(self, model, fields: list[str], rows: list[tuple], *, key=("id",), add: bool = False,
                         keep: tuple[str, ...] = (), same: dict | None = None):
        """``add``: add the values to the stored ones; ``keep``: those fields keep their stored value
        where the row gives None; ``same``: fields set to one value in every row, {field: value}."""
        key, same = list(key), same or {}
        keys, columns = columns_of(model, key), columns_of(model, fields)
        assignments = ", ".join([*(f'"{column.column}" = ' + (
            f'COALESCE(v."{column.column}", t."{column.column}")' if column.name in keep else
            (f't."{column.column}" + ' if add else "") + f'v."{column.column}"') for column in columns),
            *(f'"{column.column}" = %s::{base_type(column)}' for column in columns_of(model, list(same)))])
        matching = " AND ".join(f't."{column.column}" = v."{column.column}"' for column in keys)
        values = arrays(rows)
        if key == ["id"]:
            # The redundant ANY() makes the planner fetch the rows by primary key, not hash a scan of
            # the whole table joined with the unnest().
            matching, values = matching + ' AND t."id" = ANY(%s::bigint[])', [*values, values[0]]
        return Statement(f'UPDATE "{model._meta.db_table}" AS t SET {assignments} FROM {unnest(keys + columns)} '
                         f"AS v({names_of(keys + columns)}) WHERE {matching}", [*same.values(), *values])

    def upsert_statement(self, model, fields: list[str], rows: list[tuple], *, unique: list[str], update: list[str]):
        columns = columns_of(model, fields)
        return Statement(f'INSERT INTO "{model._meta.db_table}" ({names_of(columns)}) SELECT * FROM {unnest(columns)} '
                         f"{self.upsert_conflict(model, unique, update)}", arrays(rows))

    def delete_statement(self, model, fields: list[str], rows: list[tuple]) -> Statement:
        columns, table = columns_of(model, fields), model._meta.db_table
        if len(columns) == 1:
            # = ANY() fetches the rows through the column's index, where a join with unnest() made
            # the planner hash a sequential scan of the whole table.
            return Statement(f'DELETE FROM "{table}" WHERE "{columns[0].column}" = ANY(%s::{array_type(columns[0])})',
                             arrays(rows))
        matching = " AND ".join(f't."{column.column}" = v."{column.column}"' for column in columns)
        return Statement(f'DELETE FROM "{table}" AS t USING {unnest(columns)} AS v({names_of(columns)}) '
                         f"WHERE {matching}", arrays(rows))

    def lock_statement(self, model, fields: list[str], keys: list[tuple]) -> Statement:
        return Statement(locking_query(model, columns_of(model, fields), "1"), arrays(keys))

    def lock_rows(self, model, fields: list[str], keys: list[tuple]) -> list:
        return list(model.objects.raw(locking_query(model, columns_of(model, fields), "*"), arrays(keys)))

    @contextmanager
    def snapshot(self):
        """REPEATABLE READ: one snapshot, no locks (a transaction already open keeps its own level)."""
        starts_transaction = not connection.in_atomic_block
        with transaction.atomic():
            if starts_transaction:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def hold(self, update_sql: str, update_params: list, entries: Statement) -> bool:
        """Run the conditional balance update and, if it changed the row, the entries, in one statement
        (the entries are inserted from the updated row)."""
        insert, _, select = entries.sql.partition(" SELECT * FROM ")
        with connection.cursor() as cursor:
            cursor.execute(f"WITH held AS ({update_sql} RETURNING id) "
                           f"{insert} SELECT v.* FROM held CROSS JOIN {select} AS v",
                           [*update_params, *entries.params])
            return bool(cursor.rowcount)

    def __init__(self):
        self.insert_order_statements: dict[tuple[str, str, str], str] = {}

    def insert_order(self, insert: str, fields: list, params: list, market_id: int,
                     hold: Callable[..., tuple[str, list, Statement]]) -> tuple[int | None, bool]:
        """Insert an order with ``insert`` (its SELECT's placeholders left to fill), queue it and hold its
        funds (``hold``: ledger.hold_statement for a reference, which is "order:" and the order's id);
        (its id, whether the hold was made), (None, False) when ``insert`` inserted nothing."""
        update, update_params, entries = hold(reference="order:")
        sql = self.insert_order_statements.get((insert, update, entries.sql))
        if sql is None:
            # The SELECT's parameters are typed only by their casts (they would be text otherwise). The
            # order's NEW command and its hold go in the same statement, the hold only if the order was
            # inserted, and its entries only if the hold was made, their reference completed with the id.
            # Constants are written in: psycopg converts a statement of over 50 parameters anew each
            # time, at twice the client's CPU (docs/performance.md, "Order entry").
            placeholders = ", ".join(f"CAST(%s AS {field.cast_db_type(connection)})" for field in fields)
            into, _, rows = entries.sql.partition(" SELECT * FROM ")
            columns = into[into.index("(") + 1:into.rindex(")")]
            values = ", ".join(f"v.{name} || placed.id" if name == '"reference"' else f"v.{name}"
                               for name in columns.split(", "))
            sql = self.insert_order_statements[(insert, update, entries.sql)] = (
                f"WITH placed AS ({insert.format(placeholders=placeholders)} RETURNING id, market_id), "
                "queued AS (INSERT INTO trading_matchercommand (market_id, kind, order_id, request_id) "
                f"SELECT market_id, '{MatcherCommand.Kind.NEW}', id, %s FROM placed), "
                f"held AS ({update} AND EXISTS (SELECT FROM placed) RETURNING id), "
                f"entered AS ({into} SELECT {values} FROM held CROSS JOIN placed CROSS JOIN {rows} AS v({columns})) "
                "SELECT id, EXISTS (SELECT FROM held) FROM placed")
        with connection.prepared_cursor() as cursor:
            cursor.execute(sql, [*params, current_request_id(), *update_params, *entries.params])
            row = cursor.fetchone()
        return (row[0], row[1]) if row else (None, False)


class SqliteStore(Store):
    """executemany with the fields' own conversions (amounts are fixed-width text); the transactions
    are IMMEDIATE (settings), so each holds the database's write lock from its start."""

    writes_concurrently = False

    ADD = "EXACT_ADD({}, {})"  # amounts are text: the function our SQLite backend registers
    # Prices are non-negative: their fixed-width text compares as the numbers do.
    GREATEST = "MAX({}, {})"
    EPOCH_SECONDS = "((julianday({}) - 2440587.5) * 86400.0)"  # UTC text, as Django stores it
    LEAST = "MIN({}, {})"

    def row_params(self, model, names: list[str], row: list) -> list:
        return prepared(columns_of(model, names), [row])[0]

    @contextmanager
    def snapshot(self):
        """A DEFERRED transaction: in WAL mode it reads one state from its first read and never takes the write
        lock, which an atomic block (IMMEDIATE) would hold until the audit ends, stopping trading meanwhile. A
        transaction already open keeps its own."""
        if connection.in_atomic_block:
            yield
            return
        with self.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            with self.cursor() as cursor:
                cursor.execute("ROLLBACK")  # it wrote nothing

    @contextmanager
    def cursor(self):
        with connection.cursor() as cursor:
            yield cursor

    def execute(self, statements: list[Statement]) -> None:
        with self.cursor() as cursor:
            for statement in statements:
                (cursor.executemany if statement.many else cursor.execute)(statement.sql, statement.params)

    def reserve_ids(self, counts: dict) -> dict:
        """The ids after the highest used: this transaction holds the write lock, so no other writer
        can take them before it commits."""
        ids = {model: [] for model in counts}
        with self.cursor() as cursor:
            for model, count in counts.items():
                if not count:
                    continue
                table = model._meta.db_table
                cursor.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{table}"')
                last = cursor.fetchone()[0]
                cursor.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = %s", [table])
                last = max(last, cursor.fetchone()[0])
                ids[model] = list(range(last + 1, last + count + 1))
        return ids

    def select_rows(self, queryset) -> list[tuple]:
        return list(queryset)

    def resting_book(self, resting, tick: Decimal, lot: Decimal, convert: Callable[..., tuple],
                     chunk: int = 20_000):
        """Amounts are text here, so ``convert(tick, lot, *row)`` makes each row of BOOK_COLUMNS (but the
        first) a row of the book in Python; read by a plain cursor, each stored amount (exact text) made a
        Decimal here, where Django's per-field converters cost twice all the rest."""
        sql, params = resting.order_by("book_priority", "pk").values_list(*BOOK_COLUMNS[1:]).query.sql_with_params()
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            while part := cursor.fetchmany(chunk):
                yield [convert(tick, lot, order_id, account_id, side, Decimal(price), Decimal(size), status,
                               Decimal(filled), Decimal(value), Decimal(fee), Decimal(hold))
                       for order_id, account_id, side, price, size, status, filled, value, fee, hold in part]

    def read(self, compiled: "CompiledRead", params: list) -> list[tuple]:
        """A compiled read's rows with the fields' conversions (amounts are text here), as the queryset gives them."""
        with self.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        converters = list(compiled.converters.items())
        if not converters:
            return rows
        converted = []
        for row in map(list, rows):
            for position, (functions, expression) in converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, connection)
                row[position] = value
            converted.append(tuple(row))
        return converted

    def insert_statement(self, model, fields: list[str], rows: list[tuple], same: dict | None = None) -> Statement:
        fields, rows = with_same(fields, rows, same)
        columns = columns_of(model, fields)
        return Statement(f'INSERT INTO "{model._meta.db_table}" ({names_of(columns)}) '
                         f"VALUES ({', '.join(['%s'] * len(columns))})", prepared(columns, rows), many=True)

    def update_statement(self, model, fields: list[str], rows: list[tuple], *, key=("id",), add: bool = False,
                         keep: tuple[str, ...] = (), same: dict | None = None):
        fields, rows = with_same(fields, rows, same)
        keys, columns = columns_of(model, list(key)), columns_of(model, fields)
        assignments = ", ".join(f'"{column.column}" = ' + (
            f'COALESCE(%s, "{column.column}")' if column.name in keep else
            self.add(f'"{column.column}"', "%s") if add else "%s") for column in columns)
        matching = " AND ".join(f'"{column.column}" = %s' for column in keys)
        return Statement(f'UPDATE "{model._meta.db_table}" SET {assignments} WHERE {matching}',
                         [[*values[len(keys):], *values[:len(keys)]] for values in prepared(keys + columns, rows)],
                         many=True)

    def upsert_statement(self, model, fields: list[str], rows: list[tuple], *, unique: list[str], update: list[str]):
        columns = columns_of(model, fields)
        return Statement(f'INSERT INTO "{model._meta.db_table}" ({names_of(columns)}) '
                         f"VALUES ({', '.join(['%s'] * len(columns))}) {self.upsert_conflict(model, unique, update)}",
                         prepared(columns, rows), many=True)

    def delete_statement(self, model, fields: list[str], rows: list[tuple]) -> Statement:
        columns = columns_of(model, fields)
        matching = " AND ".join(f'"{column.column}" = %s' for column in columns)
        return Statement(f'DELETE FROM "{model._meta.db_table}" WHERE {matching}', prepared(columns, rows), many=True)

    def lock_statement(self, model, fields: list[str], keys: list[tuple]) -> Statement:
        return Statement("SELECT 1", [])  # the transaction holds the write lock already

    def lock_rows(self, model, fields: list[str], keys: list[tuple]) -> list:
        columns = columns_of(model, fields)
        marks = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(keys))
        return list(model.objects.raw(
            f'SELECT * FROM "{model._meta.db_table}" WHERE ({names_of(columns)}) IN (VALUES {marks}) ORDER BY "id"',
            [value for row in prepared(columns, keys) for value in row],
        ))

    def hold(self, update_sql: str, update_params: list, entries: Statement) -> bool:
        with self.cursor() as cursor:
            cursor.execute(update_sql, update_params)
            if not cursor.rowcount:
                return False
        self.execute([entries])
        return True

    def insert_order(self, insert: str, fields: list, params: list, market_id: int,
                     hold: Callable[..., tuple[str, list, Statement]]) -> tuple[int | None, bool]:
        with connection.cursor() as cursor:
            cursor.execute(insert.format(placeholders=", ".join(["%s"] * len(fields))) + " RETURNING id", params)
            row = cursor.fetchone()
        if row is None:
            return None, False
        MatcherCommand.objects.create(market_id=market_id, kind=MatcherCommand.Kind.NEW, order_id=row[0],
                                      request_id=current_request_id())
        return row[0], self.hold(*hold(reference=f"order:{row[0]}"))


class CompiledRead(NamedTuple):
    sql: str
    converters: dict  # Django's: {column position: (converters, expression)}


_BASE_TYPE = re.compile(r"\(\d+(, *\d+)?\)")  # the length or precision of a type: varchar(8), numeric(36, 18)


def unnest(columns) -> str:
    """Rows as one unnest() of typed arrays, one array literal per column. The arrays are of the
    columns' base types (varchar, not varchar(8)): a cast to the length would cut a string that is too
    long, where writing it to the column refuses it."""
    return "unnest(" + ", ".join(f"%s::{array_type(column)}" for column in columns) + ")"


@functools.cache
def base_type(column) -> str:
    """A column's type without its length or precision, worked out once per column (db_type costs
    microseconds per call)."""
    return _BASE_TYPE.sub("", column.db_type(connection))


def array_type(column) -> str:
    return base_type(column) + "[]"


def locking_query(model, columns, select: str) -> str:
    """SELECT ``select`` of the rows keyed by ``columns`` (one array each), locked FOR UPDATE in
    primary-key order, so that two transactions locking overlapping rows never deadlock."""
    return (f'SELECT {select} FROM "{model._meta.db_table}" WHERE ({names_of(columns)}) IN '
            f'(SELECT * FROM {unnest(columns)}) ORDER BY "id" FOR UPDATE')


# Numbers go into an array literal as str() gives them; anything else is quoted.
_UNQUOTED = (int, Decimal, bool)
_UNQUOTED_TYPES = frozenset(_UNQUOTED)


def quoted(value) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(values) -> str:
    """One column as an array literal, ``{1,NULL,"text"}``, sent as a single text parameter: psycopg
    would dump an array element by element in Python. A column's few distinct texts (a status, the
    batch's timestamp) are quoted once each."""
    if set(map(type, values)) <= _UNQUOTED_TYPES:
        return "{" + ",".join(map(str, values)) + "}"
    literal = {value: quoted(value) for value in set(values) if value is not None and not isinstance(value, _UNQUOTED)}
    literal[None] = "NULL"
    return "{" + ",".join([literal.get(value) or str(value) for value in values]) + "}"


def arrays(rows) -> list[str]:
    return [array_literal(values) for values in zip(*rows)]


# -- the matchers

# Each order's state as its matcher left it (the Order fields trading.settlement.WRITTEN_ORDER_FIELDS),
# as a line of text: ``id|status|filled_size|...``; None is "~".
STATE_SEPARATOR = "|"
NONE_TEXT = "~"


class Matchers:
    """How accepted work reaches a pair's matcher, and how the matcher's answer reaches the request."""

    def reset(self) -> None:
        pass

    def wake_and_wait(self, pair: str, drain: Callable[[str], int], order_id: int, timeout: float):
        """Wake the pair's matcher, then wait for the order's state (dispatch.wake_and_wait_for_state)."""
        self.wake(pair, drain)
        return self.wait(order_id, timeout)


class CeleryMatchers(Matchers):
    """Each pair's matcher is a loop (``trading.dispatch.MatcherLoops``) in the Celery worker that serves
    the pair's queue ``match.<PAIR>``. A commit wakes it through the pair's wake-up list in Redis, which
    holds at most one entry: a burst of orders while the loop drains leaves one wake-up, and the next
    drain takes them all. The matcher pushes each order's state to a Redis list
    that its request waits on."""

    WAKE_PREFIX = "matcher-wake-ups:"
    # A blocked wait ends by this long at the latest. The waiter's socket timeout lies WAIT_SLACK_SECONDS
    # beyond the longest wait it was asked for: a Redis that hangs (stopped, not down) ends the wait soon
    # after it would have ended anyway, and the matchers poll the database meanwhile.
    WAIT_SECONDS_MAX = 60.0
    WAIT_SLACK_SECONDS = 2.0
    REPLY_SECONDS = 30
    REPLY_PREFIX = "order-processed:"
    # One command for a whole batch, the states as one string rather than a key and an argument each:
    # the script makes each key itself (reply_key); fine on one Redis server, where Redis Cluster would
    # want each key declared. Sent whole (EVAL) in the batch's round trip: Redis keeps it compiled, and
    # a restarted Redis needs no SCRIPT LOAD.
    REPLY_SCRIPT = """
for line in string.gmatch(ARGV[2], '[^\\n]+') do
    local key = ARGV[1] .. string.match(line, '^%d+')
    redis.call('RPUSH', key, line)
    redis.call('EXPIRE', key, ARGV[3])
end
"""

    def __init__(self):
        self.waiting_client = None
        self.waiting_client_wait = 0.0  # the longest wait its socket timeout allows
        self.wait_turns = 0  # which pair's key a wait lists first (wait_for_wake_up)

    def reset(self) -> None:
        self.waiting_client = None

    @staticmethod
    def queue_name(pair: str) -> str:
        return f"match.{pair}"

    def wake_key(self, pair: str) -> str:
        return f"{self.WAKE_PREFIX}{pair}"

    def reply_key(self, order_id: int) -> str:
        return f"{self.REPLY_PREFIX}{order_id}"

    def wake(self, pair: str, drain: Callable[[str], int]) -> None:
        self.queue_wake_up(pair)

    def queue_wake_up(self, pair: str) -> None:
        """One round trip; the list keeps one entry, however many commits wake a loop that is busy."""
        self.wake_up_commands(get_redis().pipeline(transaction=False), pair).execute()

    def wake_up_commands(self, pipeline: redis.client.Pipeline, pair: str) -> redis.client.Pipeline:
        pipeline.lpush(self.wake_key(pair), 1)
        return pipeline.ltrim(self.wake_key(pair), 0, 0)

    def wait_for_wake_up(self, pairs: list[str], timeout: float) -> str | None:
        """The pair (one of ``pairs``) whose wake-up came within ``timeout``, taken: a commit from now on
        wakes it again; None when none came."""
        timeout = min(max(timeout, 0.01), self.WAIT_SECONDS_MAX)
        if self.waiting_client is None or self.waiting_client_wait < timeout:
            # A client of the waiter's own: its blocked wait holds a connection for its whole length.
            if self.waiting_client is not None:
                self.waiting_client.close()
            wait = math.ceil(timeout)  # whole seconds: waits a little longer than the first do not make a new client
            self.waiting_client, self.waiting_client_wait = redis.Redis.from_url(
                **{**settings.REDIS_CLIENT, "socket_timeout": wait + self.WAIT_SLACK_SECONDS}), wait
        # BLPOP takes the first key listed that holds a wake-up: each wait lists them from the next pair on,
        # so that a pair woken between every two waits cannot keep the others' wake-ups from being taken.
        first = self.wait_turns % len(pairs)
        self.wait_turns += 1
        keys = [self.wake_key(pair) for pair in pairs[first:] + pairs[:first]]
        popped = self.waiting_client.blpop(keys, timeout=timeout)
        return None if popped is None else popped[0].decode().removeprefix(self.WAKE_PREFIX)

    def reply(self, states: dict[int, tuple | None], trip: RoundTrip) -> Reply:
        """Queue each order's state for the request waiting on it in ``trip`` (the batch's round trip)."""
        if not states:
            return Reply()
        lines = "\n".join(
            f"{order_id}" if state is None else
            STATE_SEPARATOR.join([str(order_id), *(NONE_TEXT if value is None else str(value) for value in state)])
            for order_id, state in states.items()
        )
        return trip.queue(lambda pipeline: pipeline.eval(self.REPLY_SCRIPT, 0, self.REPLY_PREFIX, lines,
                                                         self.REPLY_SECONDS))

    @staticmethod
    def decode(line: bytes) -> list:
        return [None if value == NONE_TEXT else value for value in line.decode().split(STATE_SEPARATOR)[1:]]

    def wait(self, order_id: int, timeout: float) -> list | None:
        """The next state the matcher pushed for the order within ``timeout`` (its fields, as text),
        [] when the order's command changed nothing; None when none came."""
        popped = get_redis().blpop([self.reply_key(order_id)], timeout=max(timeout, 0.001))
        return None if popped is None else self.decode(popped[1])

    def wake_and_wait(self, pair: str, drain: Callable[[str], int], order_id: int, timeout: float) -> list | None:
        """wake, then wait, in one round trip: the wait's BLPOP queued behind the wake-up's commands."""
        pipeline = self.wake_up_commands(get_redis().pipeline(transaction=False), pair)
        popped = pipeline.blpop([self.reply_key(order_id)], timeout=max(timeout, 0.001)).execute()[-1]
        return None if popped is None else self.decode(popped[1])

    def latest(self, order_ids: list[int]) -> dict[int, list]:
        """The last state pushed for each order, if any (the lists are emptied)."""
        pipeline = get_redis().pipeline(transaction=False)
        for order_id in order_ids:
            pipeline.rpop(self.reply_key(order_id))
            pipeline.delete(self.reply_key(order_id))
        popped = pipeline.execute()[::2]
        return {order_id: self.decode(line) for order_id, line in zip(order_ids, popped) if line is not None}


class InProcessMatchers(Matchers):
    """The matcher runs right after the accepting transaction commits, in the same process, under a
    per-pair lock: the request's answer is there when it asks."""

    KEPT_STATES = 10_000  # answers nobody asked for (a timer's drain) are dropped, oldest first

    def __init__(self):
        self.states: OrderedDict[int, tuple | None] = OrderedDict()
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.states.clear()

    def wake(self, pair: str, drain: Callable[[str], int]) -> None:
        drain(pair)

    def reply(self, states: dict[int, tuple | None], trip: RoundTrip) -> Reply:
        with self.lock:
            self.states.update(states)
            while len(self.states) > self.KEPT_STATES:
                self.states.popitem(last=False)
        return Reply()

    def wait(self, order_id: int, timeout: float) -> tuple | list | None:
        """The order's state if its matcher ran (it ran before the request got here)."""
        with self.lock:
            if order_id not in self.states:
                return None
            state = self.states.pop(order_id)
        return [] if state is None else state

    def latest(self, order_ids: list[int]) -> dict[int, tuple | list]:
        found = {}
        for order_id in order_ids:
            state = self.wait(order_id, 0)
            if state is not None:
                found[order_id] = state
        return found


# -- the bus


def event_numbers(numbered: Reply, count: int) -> list[int | None]:
    """The numbers ``Bus.number_account_events`` took for ``count`` events, or None for each where its round
    trip failed (logged): such events go out unnumbered, as a publisher of the previous release sends them
    (a connection follows the numbers of those that carry one), rather than be dropped unannounced."""
    try:
        return numbered.result()
    except redis.exceptions.RedisError:
        logger.warning("account events could not be numbered: sent without numbers", exc_info=True)
        return [None] * count


class Bus:
    """How messages for the WebSocket processes leave this process (Channels groups)."""

    publishes_from_any_thread = False
    # An account noted as having a connection on its private channels gets each batch's changed orders
    # and fills rendered once by the publisher (marketdata.publishing). A note lapses after this long;
    # a connection given an event without the rendering reads the rows itself and renews the note.
    PRIVATE_NOTE_SECONDS = 600

    def reset(self) -> None:
        pass

    def serve_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """The WebSocket server's event loop, where this process's connections receive."""

    def wait_published(self) -> None:
        pass

    async def groups_with_members(self, layer, groups: list[str]) -> set[str]:
        """Of ``groups``, those a send may reach (all of them, unless the layer can tell cheaply)."""
        return set(groups)

    async def send_in_order(self, layer, messages: list[tuple[str, dict]]) -> None:
        sent_at = time.time()  # for the relay latency the hubs measure (marketdata/hub.py)
        listened = await self.groups_with_members(layer, [group for group, _ in messages])
        messages = [(group, message) for group, message in messages if group in listened]
        # Account events not numbered yet (a batch's are, by the publisher thread: marketdata.publishing)
        # are numbered as they are sent, on the one loop this process sends from, so that the numbers
        # follow the order of the sends; one round trip numbers all of them. Only those sent: a connection
        # follows the numbers from the first event it receives, so an event no one receives needs none
        # (a create's, for an account with no private subscriber, costs no round trip).
        trip = RoundTrip()
        unnumbered = [message["account"] for _, message in messages
                      if message["type"] == "account.changes" and "event" not in message]
        numbered = self.number_account_events(unnumbered, trip)
        trip.run()
        numbers = iter(event_numbers(numbered, len(unnumbered)))
        for group, message in messages:
            message = {**message, "sent_at": sent_at}
            if message["type"] == "account.changes" and "event" not in message:
                number = next(numbers)
                if number is not None:
                    message["event"] = number
            try:
                await layer.group_send(group, message)
            except redis.exceptions.ConnectionError:
                # After a Redis restart the first command on each pooled connection fails (the server
                # closed it): sent again on a fresh one, rather than a trade or event lost for good. Had
                # the first send's reply been lost instead, clients get it twice and tell by trade id,
                # delta sequence or event number.
                await layer.group_send(group, message)

    def send(self, messages: list[tuple[str, dict]]) -> None:
        """Send (group, message) pairs in order, with one hand-over to async code for all of them."""
        layer = get_channel_layer()
        if layer is not None and messages:
            self.run(self.send_in_order(layer, messages))

    def send_if_followed(self, group: str, message: dict) -> None:
        """send the message, unless a look from the calling thread finds its group without a member."""
        layer = get_channel_layer()
        if layer is not None and self.has_members(layer, group):
            self.run(self.send_in_order(layer, [(group, message)]))

    def has_members(self, layer, group: str) -> bool:
        """Whether ``group`` may have a member, told without a hand-over to async code (yes, unless the
        layer can tell cheaply)."""
        return True


class RedisBus(Bus):
    """Redis channel layer: committed batches go out on one publisher thread, in commit order, so that
    formatting and sending stay off the matcher's thread; sends run on one event loop of their own
    (async_to_sync would make a new loop, and new Redis connections, for every call). Account events
    are numbered in Redis, across every process that publishes."""

    publishes_from_any_thread = True
    PUBLISH_BACKLOG = 8  # committed batches waiting for the publisher; then the matcher waits for it

    def __init__(self):
        self.start_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.publisher: ThreadPoolExecutor | None = None
        self.backlog = threading.BoundedSemaphore(self.PUBLISH_BACKLOG)
        self.layer_clients: "weakref.WeakKeyDictionary[object, list[redis.Redis]]" = weakref.WeakKeyDictionary()

    def run(self, coroutine) -> None:
        with self.start_lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, name="channel-layer-publisher", daemon=True).start()
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def groups_with_members(self, layer, groups: list[str]) -> set[str]:
        """Those of ``groups`` with a member, read for all of them in one round trip per Redis host:
        channels_redis's group_send takes two to find a group empty (the candles of six intervals, the
        accounts with no connection), which made most of a light batch's publishing. Expired members are
        dropped first, as group_send drops them."""
        expired, hosts = int(time.time()) - layer.group_expiry, defaultdict(list)
        for group in dict.fromkeys(groups):
            hosts[layer.consistent_hash(group)].append(group)
        listened = set()
        try:
            for host, names in hosts.items():
                pipeline = layer.connection(host).pipeline(transaction=False)
                for group in names:
                    pipeline.zremrangebyscore(layer._group_key(group), min=0, max=expired)
                    pipeline.zcard(layer._group_key(group))
                counts = (await pipeline.execute())[1::2]
                listened.update(group for group, count in zip(names, counts) if count)
        except redis.exceptions.ConnectionError:
            return set(groups)  # after a Redis restart: each group_send tries again on a fresh connection
        return listened

    def number_account_events(self, account_ids: list[int], trip: RoundTrip) -> Reply:
        """The next event number of each account (a list), taken in ``trip``."""
        if not account_ids:
            return Reply([])
        return trip.queue(lambda pipeline: [pipeline.incr(f"account-events:{account_id}") for account_id in account_ids])

    def has_members(self, layer, group: str) -> bool:
        """Whether ``group`` has a member, expired ones included: one ZCARD by a redis-py client of the
        calling thread's kind, so that an event for an account no connection follows (a bot's create, most
        often) costs no hand-over to the publisher's loop (whose send_in_order reads the members again,
        expired ones dropped). True when that cannot be told (a host not given by its address, an
        outage): the send then finds out, and meets any outage, as before."""
        clients = self.layer_clients.get(layer)
        if clients is None:
            if not all("address" in host for host in layer.hosts):
                return True
            clients = self.layer_clients[layer] = [
                redis.Redis.from_url(host["address"], **settings.REDIS_TIMEOUTS) for host in layer.hosts]
        try:
            return bool(clients[layer.consistent_hash(group)].zcard(layer._group_key(group)))
        except redis.exceptions.RedisError:
            return True

    def note_private_subscriber(self, account_id: int) -> None:
        get_redis().set(f"private-subscribers:{account_id}", 1, ex=self.PRIVATE_NOTE_SECONDS)

    def private_subscribers(self, account_ids: list[int], trip: RoundTrip) -> Reply:
        """Those of the accounts noted as having a connection on their private channels (a set), read in
        ``trip``."""
        if not account_ids:
            return Reply(set())
        return trip.queue(lambda pipeline: pipeline.mget([f"private-subscribers:{account_id}" for account_id in account_ids]),
                          lambda results: {account_id for account_id, note in zip(account_ids, results[0])
                                           if note is not None})

    def publish_in_order(self, send: Callable, *args) -> None:
        """``send(*args)`` on the publisher thread: what is handed over goes out in that order."""
        with self.start_lock:
            if self.publisher is None:
                self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-publisher")
        self.backlog.acquire()
        self.publisher.submit(send, *args).add_done_callback(self.sent)

    def sent(self, future: Future) -> None:
        self.backlog.release()
        if future.exception() is not None:
            logger.error("publishing failed", exc_info=future.exception())

    def wait_published(self) -> None:
        if self.publisher is not None:
            self.publisher.submit(lambda: None).result()


class LocalBus(Bus):
    """The in-memory channel layer of the single-process embedded default. It is not thread-safe: its
    queues belong to the server's event loop, where the connections wait on them, so messages are sent
    there from whichever thread (a request's, a retry timer's). Events are numbered in this process."""

    def __init__(self):
        self.serving_loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
        self.events: dict[int, int] = defaultdict(int)
        self.noted: dict[int, float] = {}  # account id: when a private subscriber was last noted
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.noted.clear()

    def serve_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self.serving_loops.add(loop)

    def run(self, coroutine) -> None:
        loop = next((loop for loop in list(self.serving_loops) if loop.is_running()), None)
        if loop is not None:
            asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)
        else:
            async_to_sync(awaiting)(coroutine)  # no connection here to receive it

    def number_account_events(self, account_ids: list[int], trip: RoundTrip) -> Reply:
        with self.lock:
            numbers = []
            for account_id in account_ids:
                self.events[account_id] += 1
                numbers.append(self.events[account_id])
            return Reply(numbers)

    def note_private_subscriber(self, account_id: int) -> None:
        with self.lock:
            self.noted[account_id] = time.monotonic()

    def private_subscribers(self, account_ids: list[int], trip: RoundTrip) -> Reply:
        since = time.monotonic() - self.PRIVATE_NOTE_SECONDS
        with self.lock:
            return Reply({account_id for account_id in account_ids if self.noted.get(account_id, since) > since})

    def publish_in_order(self, send: Callable, *args) -> None:
        """``send(*args)`` now; a failure is logged, as on a publisher thread (the work is committed)."""
        try:
            send(*args)
        except Exception:
            logger.exception("publishing failed")


async def awaiting(coroutine):
    return await coroutine
