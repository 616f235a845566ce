"""SQL that the ORM does not do well enough: exact sums on SQLite, and the matcher's bulk writes.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats, so an
EXACT_SUM aggregate doing Decimal arithmetic is registered on each new SQLite connection.
"""

import re
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import psycopg
from django.db import connection, transaction
from django.db.models import Sum


class ExactSum(Sum):
    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="EXACT_SUM", **extra_context)


class _DecimalSum:
    def __init__(self):
        self.total = None

    def step(self, value):
        if value is not None:
            self.total = Decimal(value) + (self.total or 0)

    def finalize(self):
        return None if self.total is None else str(self.total)


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("EXACT_SUM", 1, _DecimalSum)


# The matcher's bulk writes. Django's bulk_create/bulk_update build one large SQL text per call in
# Python (bulk_update a CASE per field per row) and were most of a batch's time
# (benchmarks/matcher_bench.py, docs/performance.md). Each write here is a Statement: on PostgreSQL
# one statement over unnest() of one array literal per column, and several of them go to the server
# in one pipeline (execute); on SQLite, the single-process embedded default, executemany with the
# fields' own conversions (amounts are fixed-width text there).


class Statement(NamedTuple):
    sql: str
    params: list
    many: bool = False  # SQLite: executemany over params, one list per row


def execute(statements: list[Statement]) -> None:
    """Run statements in order, in the current transaction.

    On PostgreSQL they are sent as one pipeline: the server works through them while the client
    waits once, instead of a round trip and an idle server between every two of them."""
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            with connection.connection.pipeline():
                for statement in statements:
                    cursor.execute(statement.sql, statement.params)
            return
        for statement in statements:
            (cursor.executemany if statement.many else cursor.execute)(statement.sql, statement.params)


@contextmanager
def _cursor():
    """Django's PostgreSQL cursors bind parameters client-side, quoting every array element in Python
    (2.5x slower for a batch's order states); these statements bind them server-side instead, on
    the same connection and in the same transaction, with errors raised as Django's."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _columns(model, fields: list[str]):
    return [model._meta.get_field(name) for name in fields]


def _prepared(fields, rows):
    return [[field.get_db_prep_save(value, connection) for field, value in zip(fields, row)] for row in rows]


def reserve_ids(counts: dict) -> dict:
    """New primary keys, {model: count} -> {model: [ids]}, for rows this transaction is about to
    insert with explicit ids (one round trip on PostgreSQL)."""
    wanted = {model: count for model, count in counts.items() if count}
    ids = {model: [] for model in counts}
    if not wanted:
        return ids
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            # The sequence's name in a subquery: evaluated once, not once per id (4x slower).
            arrays = ", ".join(
                f"ARRAY(SELECT nextval((SELECT pg_get_serial_sequence('\"{model._meta.db_table}\"', 'id'))) "
                f"FROM generate_series(1, %s))" for model in wanted
            )
            cursor.execute(f"SELECT {arrays}", list(wanted.values()))
            return {**ids, **dict(zip(wanted, cursor.fetchone()))}
        # SQLite transactions here are IMMEDIATE (settings): this one holds the write lock, so no
        # other writer can take these ids before it commits.
        for model, count in wanted.items():
            table = model._meta.db_table
            cursor.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{table}"')
            last = cursor.fetchone()[0]
            cursor.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = %s", [table])
            last = max(last, cursor.fetchone()[0])
            ids[model] = list(range(last + 1, last + count + 1))
    return ids


def select_rows(queryset) -> list[tuple]:
    """The rows of a ``values_list()`` queryset, read on PostgreSQL by a plain cursor: Django's
    iteration took as long again as the query (a matcher batch's commands). Only for fields whose
    Python value is what psycopg returns (no converters: on PostgreSQL amounts have none)."""
    if connection.vendor != "postgresql":
        return list(queryset)
    sql, params = queryset.query.sql_with_params()
    with _cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_BASE_TYPE = re.compile(r"\(\d+(, *\d+)?\)")  # the length or precision of a type: varchar(8), numeric(36, 18)


def _unnest(columns) -> str:
    """PostgreSQL: rows as one unnest() of typed arrays, one array literal (_array_literal) per column.

    The arrays are of the columns' base types (varchar, not varchar(8)): an explicit cast to the
    length would cut a string that is too long, where writing it to the column refuses it."""
    return "unnest(" + ", ".join(f"%s::{_array_type(column)}" for column in columns) + ")"


def _array_type(column) -> str:
    return _BASE_TYPE.sub("", column.db_type(connection)) + "[]"


# Numbers go into an array literal as str() gives them; anything else is quoted.
_UNQUOTED = (int, Decimal, bool)
_UNQUOTED_TYPES = frozenset(_UNQUOTED)


def _quoted(value) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array_literal(values) -> str:
    """One column as a PostgreSQL array literal, ``{1,NULL,"text"}``, sent as a single text parameter.

    psycopg dumps an array parameter element by element in Python (binary or text, and as text it
    also tests each element for quoting): that was an eighth of a matcher batch. ``str.join`` does
    the same in a fraction of the time; a column's few distinct texts (a status, the batch's
    timestamp) are quoted once each."""
    if set(map(type, values)) <= _UNQUOTED_TYPES:
        return "{" + ",".join(map(str, values)) + "}"
    literal = {value: _quoted(value) for value in set(values)
               if value is not None and not isinstance(value, _UNQUOTED)}
    literal[None] = "NULL"
    return "{" + ",".join([literal.get(value) or str(value) for value in values]) + "}"


def id_array(ids) -> str:
    """Integer ids as one array literal, for ``= ANY(%s::bigint[])``."""
    return "{" + ",".join(map(str, ids)) + "}"


def _arrays(rows) -> list[str]:
    return [_array_literal(values) for values in zip(*rows)]


def _names(columns) -> str:
    return ", ".join(f'"{column.column}"' for column in columns)


# The statement builders need at least one row.


def insert_statement(model, fields: list[str], rows: list[tuple]) -> Statement:
    """Insert rows (tuples of ``fields`` values, Python types)."""
    columns = _columns(model, fields)
    insert = f'INSERT INTO "{model._meta.db_table}" ({_names(columns)})'
    if connection.vendor == "postgresql":
        return Statement(f"{insert} SELECT * FROM {_unnest(columns)}", _arrays(rows))
    return Statement(f"{insert} VALUES ({', '.join(['%s'] * len(columns))})", _prepared(columns, rows), many=True)


def update_statement(model, fields: list[str], rows: list[tuple], *, key: list[str] = ("id",),
                     add: bool = False) -> Statement:
    """Set ``fields`` of many rows, each given as (*key values, *field values); with ``add``, add the
    values to the fields instead (PostgreSQL only: SQLite's amounts are text)."""
    key, table = list(key), model._meta.db_table
    keys, columns = _columns(model, key), _columns(model, fields)
    if connection.vendor == "postgresql":
        assignments = ", ".join(f'"{column.column}" = ' + (f't."{column.column}" + ' if add else "")
                                + f'v."{column.column}"' for column in columns)
        matching = " AND ".join(f't."{column.column}" = v."{column.column}"' for column in keys)
        arrays = _arrays(rows)
        if key == ["id"]:
            # The redundant ANY() makes the planner fetch the rows by primary key: joined with the
            # unnest() alone it hashed a sequential scan of the whole table, every batch.
            matching, arrays = matching + ' AND t."id" = ANY(%s::bigint[])', [*arrays, arrays[0]]
        return Statement(f'UPDATE "{table}" AS t SET {assignments} FROM {_unnest(keys + columns)} '
                         f"AS v({_names(keys + columns)}) WHERE {matching}", arrays)
    if add:
        raise NotImplementedError("adding to amounts needs PostgreSQL")
    assignments = ", ".join(f'"{column.column}" = %s' for column in columns)
    matching = " AND ".join(f'"{column.column}" = %s' for column in keys)
    return Statement(f'UPDATE "{table}" SET {assignments} WHERE {matching}',
                     [[*values[len(keys):], *values[:len(keys)]] for values in _prepared(keys + columns, rows)],
                     many=True)


def upsert_statement(model, fields: list[str], rows: list[tuple], *, unique: list[str], update: list[str]) -> Statement:
    """Insert rows, or where a row with the same ``unique`` fields exists, set its ``update`` fields
    (or leave it as it is when ``update`` is empty)."""
    columns = _columns(model, fields)
    conflict = f"ON CONFLICT ({_names(_columns(model, unique))}) " + (
        "DO UPDATE SET " + ", ".join(f'"{column.column}" = EXCLUDED."{column.column}"' for column in _columns(model, update))
        if update else "DO NOTHING"
    )
    insert = f'INSERT INTO "{model._meta.db_table}" ({_names(columns)})'
    if connection.vendor == "postgresql":
        return Statement(f"{insert} SELECT * FROM {_unnest(columns)} {conflict}", _arrays(rows))
    return Statement(f"{insert} VALUES ({', '.join(['%s'] * len(columns))}) {conflict}", _prepared(columns, rows),
                     many=True)


def delete_statement(model, fields: list[str], rows: list[tuple]) -> Statement:
    """Delete the rows whose ``fields`` equal one of the given tuples."""
    columns = _columns(model, fields)
    table = model._meta.db_table
    if connection.vendor == "postgresql":
        if len(columns) == 1:
            # = ANY() fetches the rows through the column's index; a join with unnest() made the
            # planner hash a sequential scan of the whole table (2,000 of 20,000 queued commands:
            # 12 ms against 2).
            return Statement(f'DELETE FROM "{table}" WHERE "{columns[0].column}" = ANY(%s::{_array_type(columns[0])})',
                             _arrays(rows))
        matching = " AND ".join(f't."{column.column}" = v."{column.column}"' for column in columns)
        return Statement(f'DELETE FROM "{table}" AS t USING {_unnest(columns)} AS v({_names(columns)}) '
                         f"WHERE {matching}", _arrays(rows))
    matching = " AND ".join(f'"{column.column}" = %s' for column in columns)
    return Statement(f'DELETE FROM "{table}" WHERE {matching}', _prepared(columns, rows), many=True)


def _locking_query(model, columns, select: str) -> str:
    """PostgreSQL: SELECT ``select`` of the rows keyed by ``columns`` (one array each), locked FOR
    UPDATE in primary-key order, so that two transactions locking overlapping rows never deadlock."""
    return (f'SELECT {select} FROM "{model._meta.db_table}" WHERE ({_names(columns)}) IN '
            f'(SELECT * FROM {_unnest(columns)}) ORDER BY "id" FOR UPDATE')


def lock_statement(model, fields: list[str], keys: list[tuple]) -> Statement:
    """Lock the rows whose ``fields`` equal one of ``keys`` (_locking_query); a no-op on SQLite, whose
    IMMEDIATE transactions already hold the database's write lock."""
    if connection.vendor != "postgresql":
        return Statement("SELECT 1", [])
    return Statement(_locking_query(model, _columns(model, fields), "1"), _arrays(keys))


def update_rows(model, fields: list[str], rows: list[tuple]) -> None:
    """Set ``fields`` of many rows, each given as (pk, *values)."""
    if rows:
        execute([update_statement(model, fields, rows)])


def lock_rows(model, fields: list[str], keys: list[tuple]) -> list:
    """The model instances whose ``fields`` equal one of ``keys``, locked as lock_statement locks them,
    in primary-key order."""
    columns = _columns(model, fields)
    if connection.vendor == "postgresql":
        return list(model.objects.raw(_locking_query(model, columns, "*"), _arrays(keys)))
    marks = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(keys))
    return list(model.objects.raw(
        f'SELECT * FROM "{model._meta.db_table}" WHERE ({_names(columns)}) IN (VALUES {marks}) ORDER BY "id"',
        [value for row in _prepared(columns, keys) for value in row],
    ))


@contextmanager
def read_in_one_snapshot():
    """A transaction whose reads all see one committed state of the database.

    The sequence and the levels must come from the same matcher commit, or a client would join
    deltas onto a book that does not match its sequence. PostgreSQL gives that with REPEATABLE READ
    (one snapshot, no locks); SQLite's read transactions already see a single snapshot.
    """
    starts_transaction = not connection.in_atomic_block
    with transaction.atomic():
        if starts_transaction and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield
