"""gunicorn's settings for the REST processes (make production, tests/stack.py): gunicorn -c exchange/gunicorn.conf.py

Options given on the command line win over these.
"""

import json
import logging
import multiprocessing
import os

from django.conf import settings
from gunicorn import glogging, util

from exchange import logs, metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

refusals = logging.getLogger("exchange.requests")

bind = os.environ.get("REST_BIND", "127.0.0.1:8001")
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count())
# Threads: an order create waits (up to 1 s) for its pair's matcher, and a sync worker would be held
# for the whole wait (docs/performance.md, "Order entry").
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS") or 16)
# No access log of gunicorn's own: each request's line is Django's (exchange/request_ids.py), with its id.
accesslog = None


class Logger(glogging.Logger):
    """gunicorn's own lines (starting, workers booted, timeouts) in the format of the others (settings.LOG_FORMAT)."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.FORMATTERS[settings.LOG_FORMAT]())


logger_class = Logger


def child_exit(server, worker):
    """A worker that exited (restarted, killed) no longer counts in the live gauges of /metrics."""
    metrics.mark_process_dead(worker.pid)

# supervisord manages the processes; a control socket at gunicorn's default path would be one per host, shared.
control_socket_disable = True

# Explicit limits on what gunicorn reads before Django sees a request; above the proxy's own
# (deploy/nginx.conf), so that behind it the proxy refuses first.
limit_request_line = 8190  # bytes of "METHOD /path?query HTTP/1.1" (gunicorn's maximum): 414 above
limit_request_fields = 100  # header fields: 431 above
limit_request_field_size = 8190  # bytes of one header field, name and value: 431 above


def write_error(sock, status_int, reason, mesg):
    """The envelope instead of gunicorn's HTML page for the requests it refuses itself (a malformed
    or oversized request line or header): gunicorn writes every such answer through this function."""
    from exchange.errors import ErrorCode, error_body
    from exchange.request_ids import new_request_id

    code = ErrorCode.INTERNAL_ERROR if status_int >= 500 else ErrorCode.INVALID_REQUEST
    # A request refused here never reached a trusted proxy check: its id is always a new one.
    request_id = new_request_id()
    with logs.log_context(request_id=request_id):
        body = json.dumps(error_body(code, f"{reason}: {mesg}" if mesg else reason)).encode()
        refusals.info("refused by gunicorn: %s %s", status_int, reason)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_error

