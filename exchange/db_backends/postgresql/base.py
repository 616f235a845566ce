"""PostgreSQL: amounts are numeric, which psycopg reads and writes as Decimal as they are; the health
check asks the server only when the connection has something to read; a hot statement can be run
prepared."""

import select
import sys

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_amountfield_value(self, value, max_digits, decimal_places):
        return value

    # No converter for "AmountField" (the base class returns none): psycopg's Decimal is already
    # exact, so a call per value read would be pure overhead.

    def last_executed_query(self, cursor, sql, params):
        if isinstance(cursor, PreparedCursor):  # its parameters went apart: the text as Django's cursors send it
            return self.compose_sql(sql, params)
        return super().last_executed_query(cursor, sql, params)


class PreparedCursor(base.ServerBindingCursor):
    """Server-side binding, and each statement prepared on the server the first time this connection runs
    it (psycopg keeps them per connection by text and parameter types; they outlive a rollback): the
    server neither parses nor plans it again, and the client neither quotes the parameters into the text
    nor converts a text it has seen (up to 4,096 characters and 50 parameters)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


class DatabaseWrapper(base.DatabaseWrapper):
    data_types = {**base.DatabaseWrapper.data_types, "AmountField": "numeric(%(max_digits)s, %(decimal_places)s)"}
    ops_class = DatabaseOperations

    def get_connection_params(self):
        params = super().get_connection_params()
        if params.get("prepare_threshold") is None:
            # Django turns psycopg's preparing off, and psycopg then ignores even a cursor that asks for it
            # (PreparedCursor); only such a cursor prepares with this, Django's bind client-side.
            params["prepare_threshold"] = sys.maxsize
        return params

    def prepared_cursor(self):
        """A PreparedCursor, connected, checked and wrapped as ``cursor()`` gives Django's own (its execute
        wrappers and query log see it). For a statement run as it is on every request: Django turns
        psycopg's automatic preparation off, which suits statements built per call."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            return self._prepare_cursor(PreparedCursor(self.connection))

    def is_usable(self):
        """CONN_HEALTH_CHECKS' check before a request's first query, without Django's ``SELECT 1`` round trip
        while the connection has nothing to read: an idle connection never has, unless the server closed
        it (a restart, a terminated backend: its notice, then the end of the stream) or sent a notice;
        then it is asked as Django asks it."""
        if self.connection is None or self.connection.closed or self.connection.broken:
            return False
        poll = select.poll()
        poll.register(self.connection.fileno(), select.POLLIN)
        return not poll.poll(0) or super().is_usable()
