"""SQL that the ORM does not do well enough: exact sums on SQLite, and the matcher's bulk writes.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats, so an
EXACT_SUM aggregate doing Decimal arithmetic is registered on each new SQLite connection.
"""

from decimal import Decimal

import psycopg
from django.db import connection
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
# (benchmarks/matcher_bench.py, docs/performance.md). PostgreSQL gets COPY and array parameters
# instead; SQLite, the single-process embedded default, gets executemany with the fields' own
# conversions (amounts are fixed-width text there).


def _cursor():
    """Django's PostgreSQL cursors bind parameters client-side, quoting every array element in Python
    (2.5x slower for a batch's order states); these statements bind them server-side instead, on
    the same connection and in the same transaction."""
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        return psycopg.Cursor(connection.connection)
    return connection.cursor()


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
            arrays = ", ".join(
                f"ARRAY(SELECT nextval(pg_get_serial_sequence('\"{model._meta.db_table}\"', 'id')) "
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


def insert_rows(model, fields: list[str], rows: list[tuple]) -> None:
    """Insert rows (tuples of ``fields`` values, Python types) in one COPY on PostgreSQL."""
    if not rows:
        return
    columns = _columns(model, fields)
    names = ", ".join(f'"{column.column}"' for column in columns)
    table = model._meta.db_table
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', _prepared(columns, rows))


def _unnest(columns) -> str:
    """PostgreSQL: rows as one unnest() of typed arrays, one array parameter per column. The arrays
    go in binary (%b): dumped as text, every element was checked against quoting patterns in Python."""
    return "unnest(" + ", ".join(f"%b::{column.db_type(connection)}[]" for column in columns) + ")"


def _arrays(rows) -> list[list]:
    return [list(values) for values in zip(*rows)]


def _names(columns) -> str:
    return ", ".join(f'"{column.column}"' for column in columns)


def update_rows(model, fields: list[str], rows: list[tuple]) -> None:
    """Set ``fields`` of many rows, each given as (pk, *values), in one statement on PostgreSQL."""
    if not rows:
        return
    columns = _columns(model, ["id", *fields])
    table = model._meta.db_table
    assignments = ", ".join(f'"{column.column}" = %s' for column in columns[1:])
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            assignments = ", ".join(f'"{column.column}" = v."{column.column}"' for column in columns[1:])
            # The redundant ANY() makes the planner fetch the rows by primary key: joined with the
            # unnest() alone it hashed a sequential scan of the whole table, every batch.
            arrays = _arrays(rows)
            cursor.execute(f'UPDATE "{table}" AS t SET {assignments} FROM {_unnest(columns)} AS v({_names(columns)}) '
                           f'WHERE t."id" = v."id" AND t."id" = ANY(%b::bigint[])', [*arrays, arrays[0]])
        else:
            cursor.executemany(f'UPDATE "{table}" SET {assignments} WHERE "id" = %s',
                               [[*values[1:], values[0]] for values in _prepared(columns, rows)])


def upsert_rows(model, fields: list[str], rows: list[tuple], *, unique: list[str], update: list[str]) -> None:
    """Insert rows, or where a row with the same ``unique`` fields exists, set its ``update`` fields
    (or leave it as it is when ``update`` is empty)."""
    if not rows:
        return
    columns = _columns(model, fields)
    table = model._meta.db_table
    conflict = f"ON CONFLICT ({_names(_columns(model, unique))}) " + (
        "DO UPDATE SET " + ", ".join(f'"{column.column}" = EXCLUDED."{column.column}"' for column in _columns(model, update))
        if update else "DO NOTHING"
    )
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f'INSERT INTO "{table}" ({_names(columns)}) SELECT * FROM {_unnest(columns)} {conflict}',
                           _arrays(rows))
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f'INSERT INTO "{table}" ({_names(columns)}) VALUES ({marks}) {conflict}',
                               _prepared(columns, rows))


def delete_rows(model, fields: list[str], rows: list[tuple]) -> None:
    """Delete the rows whose ``fields`` equal one of the given tuples."""
    if not rows:
        return
    columns = _columns(model, fields)
    table = model._meta.db_table
    with _cursor() as cursor:
        if connection.vendor == "postgresql":
            matching = " AND ".join(f't."{column.column}" = v."{column.column}"' for column in columns)
            cursor.execute(f'DELETE FROM "{table}" AS t USING {_unnest(columns)} AS v({_names(columns)}) '
                           f"WHERE {matching}", _arrays(rows))
        else:
            matching = " AND ".join(f'"{column.column}" = %s' for column in columns)
            cursor.executemany(f'DELETE FROM "{table}" WHERE {matching}', _prepared(columns, rows))


def lock_rows(model, fields: list[str], keys: list[tuple]) -> list:
    """The model instances whose ``fields`` equal one of ``keys``, locked FOR UPDATE in primary-key
    order, so that two transactions locking overlapping rows never deadlock."""
    columns = _columns(model, fields)
    if connection.vendor == "postgresql":
        source, params, lock = f"SELECT * FROM {_unnest(columns)}", _arrays(keys), " FOR UPDATE"
    else:  # SQLite has no row locks: its IMMEDIATE transactions already hold the database's write lock
        source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(keys))
        params, lock = [value for row in _prepared(columns, keys) for value in row], ""
    return list(model.objects.raw(
        f'SELECT * FROM "{model._meta.db_table}" WHERE ({_names(columns)}) IN ({source}) ORDER BY "id"{lock}', params
    ))
