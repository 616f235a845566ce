"""Statements as the store (``trading.backends``) runs them, and what SQL needs the same on every stack.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats: ``ExactSum``
calls the EXACT_SUM aggregate that our SQLite backend registers on each connection.
"""

from datetime import datetime
from typing import NamedTuple

from django.db.models import QuerySet, Sum


class ExactSum(Sum):
    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="EXACT_SUM", **extra_context)


def first_id_stamped_since(rows: QuerySet, stamp: str, moment: datetime) -> int | None:
    """The first of ``rows`` (by id) whose ``stamp`` is at or after ``moment``, None if there is none.

    For the rows the matchers write (trades, fills), whose ids rise with their batch's time: a binary
    search by primary key, a few index probes, since an index on their time would cost every row
    written. Callers look from some slack before the time they want, for batches of different pairs
    that interleave, and filter on the time itself.
    """
    ids = rows.order_by("pk").values_list("pk", flat=True)
    low, last = ids.first(), ids.reverse().first()
    if low is None:
        return None
    high, found = last + 1, None
    while low < high:
        middle = (low + high) // 2
        row_id, stamped = rows.filter(pk__gte=middle).order_by("pk").values_list("pk", stamp).first()
        if stamped < moment:
            low = row_id + 1
        else:
            found, high = row_id, middle
    return found


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
