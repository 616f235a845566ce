"""This process's Django application served over HTTP on a free local port, for clients that need a real
socket (schemathesis, a generated client) without starting processes. Django's LiveServerThread, with one
difference: the environ carries the request target exactly as received (``RAW_URI``), as gunicorn's does,
because that is what a client signs (accounts/authentication.py: request_path).

Requests are served in threads of this process: the test must use ``transactional_db`` (its rows committed,
so that they are seen), and the in-memory SQLite of the embedded default is shared as Django shares it.
"""

from contextlib import contextmanager

from django.db import connections
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler


class RawUriRequestHandler(QuietWSGIRequestHandler):
    def get_environ(self):
        environ = super().get_environ()
        environ["RAW_URI"] = self.path
        return environ


class RawUriServerThread(LiveServerThread):
    def _create_server(self, connections_override=None):
        return self.server_class((self.host, self.port), RawUriRequestHandler, allow_reuse_address=False,
                                 connections_override=connections_override)


@contextmanager
def serving():
    """The base URL (``http://127.0.0.1:<port>``) of this application, served until the block ends."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    shared = {conn.alias: conn for conn in connections.all() if conn.vendor == "sqlite" and conn.is_in_memory_db()}
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread = RawUriServerThread("127.0.0.1", StaticFilesHandler, connections_override=shared)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    try:
        if thread.error:
            raise thread.error
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
        for conn in shared.values():
            conn.dec_thread_sharing()
