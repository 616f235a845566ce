"""Statements as the store (``trading.backends``) runs them, and what SQL needs the same on every stack.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats: ``ExactSum``
calls the EXACT_SUM aggregate that our SQLite backend registers on each connection.
"""

from typing import NamedTuple

from django.db.models import Sum


class ExactSum(Sum):
    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="EXACT_SUM", **extra_context)


class Statement(NamedTuple):
    sql: str
    params: list
    many: bool = False  # executemany over params, one list per row


def columns_of(model, fields: list[str]):
    return [model._meta.get_field(name) for name in fields]


def names_of(columns) -> str:
    return ", ".join(f'"{column.column}"' for column in columns)


def id_array(ids) -> str:
    """Integer ids as one array literal, for ``= ANY(%s::bigint[])``."""
    return "{" + ",".join(map(str, ids)) + "}"
