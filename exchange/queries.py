"""Query strings, strictly (SPEC section 10): an operation takes the parameters its QuerySerializer
declares and nothing else.

Two steps, each in one place. Before any view runs, StrictQueryMiddleware (exchange/strictinput.py)
refuses a parameter the operation does not take, one given more than once and one left empty (DRF
would read the last of a repeated one and skip an empty one); after authentication the operation's
``QuerySerializer.parse`` checks the values. Either refusal is ``400 INVALID_PARAMETER`` naming the
parameter in ``details.parameter``.

A view declares its query as ``query_serializer``: a QuerySerializer, or a dict of them by action
(viewsets) or method (other views), like ``rate_weight``. A view, or an action, that declares none
takes no parameter at all.
"""

import functools
import threading
from collections.abc import Callable

from django.http import QueryDict
from rest_framework import serializers

from exchange.errors import InvalidParameter
from exchange.fields import Identifier, IntegerString, Milliseconds

MAX_PAGE_SIZE = 1000


# One serializer of each kind per thread, made once: making one (its declared fields deep-copied and bound)
# cost ten times checking a query with it (docs/performance.md, "Query strings"). A query serializer keeps
# no state between two checks but their results, which each check replaces.
_parsers = threading.local()


class QuerySerializer(serializers.Serializer):
    """The parameters of an operation's query string; ``parse`` gives their values or refuses the first bad one."""

    @classmethod
    def parse(cls, request) -> dict:
        query = cls.of_this_thread()
        # A plain dict: a QueryDict would make DRF skip an empty value (the middleware refused it anyway).
        query.initial_data = request.query_params.dict()
        for result in ("_validated_data", "_errors", "_data"):
            query.__dict__.pop(result, None)
        if not query.is_valid():
            name, messages = next(iter(query.errors.items()))
            raise InvalidParameter(name, str(messages[0]))
        return query.validated_data

    @classmethod
    def of_this_thread(cls) -> "QuerySerializer":
        made = vars(_parsers).setdefault("by_class", {})
        if cls not in made:
            made[cls] = cls(data={})
        return made[cls]


def sort_order() -> serializers.ChoiceField:
    """A list's ``sort``: which end of its window a page starts from."""
    return serializers.ChoiceField(
        choices=[("desc", "newest first"), ("asc", "oldest first")], required=False, default="desc",
        help_text="`desc` (default): newest first, each page older than the one before; `asc`: oldest first, "
                  "from the window's start (`start_time`), each page newer.")


class PageQuery(QuerySerializer):
    """What the cursor pagination reads (trading.api.views.IdCursorPagination)."""

    limit = IntegerString(required=False, default=100, min_value=1, max_value=MAX_PAGE_SIZE, help_text="Page size.")
    cursor = Identifier(required=False, schema_pattern=r"^[A-Za-z0-9+/]+={0,2}$",
                        help_text="Where the page starts: take it from the previous page's `next` link.")
    sort = sort_order()


class TimeWindowQuery(QuerySerializer):
    start_time = Milliseconds(required=False, help_text="At or after this time (ms since the epoch).")
    end_time = Milliseconds(required=False, help_text="Before this time (ms since the epoch), exclusive.")

    def validate(self, data):
        if "start_time" in data and "end_time" in data and data["start_time"] > data["end_time"]:
            raise serializers.ValidationError({"end_time": ["Must not be before start_time."]})
        return data


def time_lookups(field: str) -> dict[str, str]:
    """The lookups of a TimeWindowQuery's parameters on a model's time ``field``."""
    return {"start_time": f"{field}__gte", "end_time": f"{field}__lt"}


def serves(view_function: Callable, method: str) -> bool:
    """Whether the DRF view ``view_function`` answers ``method`` with an operation (or its metadata, for
    OPTIONS); any other method is 405 from DRF, whatever the query says."""
    if method == "options":
        return True
    actions = getattr(view_function, "actions", None)  # a viewset's methods and their actions
    handlers = set(actions) if actions is not None else {name for name in ("get", "post", "put", "patch", "delete")
                                                          if hasattr(view_function.cls, name)}
    return method in handlers or (method == "head" and "get" in handlers)


def declared_query(view_function: Callable, method: str) -> type[QuerySerializer] | None:
    """The QuerySerializer of the DRF view ``view_function`` (as URL resolving gives it) for ``method``."""
    declared = getattr(view_function.cls, "query_serializer", None)
    if isinstance(declared, dict):
        method = "get" if method == "head" else method
        actions = getattr(view_function, "actions", None)  # a viewset's methods and their actions
        declared = declared.get(actions.get(method) if actions else method)
    return declared


@functools.cache
def parameter_names(query_serializer: type[QuerySerializer] | None) -> frozenset[str]:
    return frozenset(query_serializer().fields) if query_serializer else frozenset()


def check_names(query: QueryDict, accepted: frozenset[str]) -> None:
    """Refuse the first parameter not in ``accepted``, given more than once, or empty."""
    for name, values in query.lists():
        if name not in accepted:
            takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
            raise InvalidParameter(name, f"Unknown parameter for this operation: {takes}.")
        if len(values) > 1:
            raise InvalidParameter(name, "Given more than once.")
        if values[0] == "":
            raise InvalidParameter(name, "Empty: leave the parameter out instead.")
