"""Exact aggregates over AmountField on every database.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats, so an
EXACT_SUM aggregate doing Decimal arithmetic is registered on each new SQLite connection.
"""

from decimal import Decimal

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


UPDATE_CHUNK = 1000


def update_rows(model, rows, fields: list[str]) -> None:
    """Write ``fields`` of many rows in one UPDATE ... FROM (VALUES ...) per chunk.

    Django's bulk_update builds a CASE expression per field per row, which made it half of a
    matcher batch's time (benchmarks/matcher_bench.py). PostgreSQL gets explicit casts because
    VALUES parameters arrive untyped; SQLite (3.33+ has UPDATE FROM) is dynamically typed and must
    not be cast (CAST(... AS datetime) would turn a timestamp into a number).
    """
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    postgres = connection.vendor == "postgresql"
    # SQLite names the VALUES columns column1, column2, ... and takes no column list after the alias.
    names = ['"id"', *(f'"{column.column}"' for column in columns)] if postgres else [
        f"column{i}" for i in range(1, len(columns) + 2)
    ]

    def value(column, name: str) -> str:
        return f"CAST(v.{name} AS {column.db_type(connection)})" if postgres else f"v.{name}"

    assignments = ", ".join(f'"{column.column}" = {value(column, name)}' for column, name in zip(columns, names[1:]))
    alias = f"v({', '.join(names)})" if postgres else "v"
    key = f"CAST(v.{names[0]} AS bigint)" if postgres else f"v.{names[0]}"
    for start in range(0, len(rows), UPDATE_CHUNK):
        chunk = rows[start:start + UPDATE_CHUNK]
        row_sql = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
        params = []
        for row in chunk:
            params.append(row.pk)
            params.extend(column.get_db_prep_save(getattr(row, column.attname), connection) for column in columns)
        sql = (f'UPDATE "{meta.db_table}" AS t SET {assignments} FROM (VALUES {", ".join([row_sql] * len(chunk))}) '
               f'AS {alias} WHERE t."id" = {key}')
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
