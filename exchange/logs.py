"""Log lines: what request or connection each belongs to, JSON or text, and never a secret.

``log_context(request_id=...)`` binds fields to the current context (a contextvar: a thread's request,
an asyncio task and the tasks and sync threads it starts); every record logged meanwhile carries them,
added by ``ContextFilter``. ``JsonFormatter`` writes one JSON object a line (production: a log shipper
parses it), ``TextFormatter`` a readable line with the fields at the end (a laptop). Both pass the
finished line through ``redact``: the code never logs a secret, signature or API key on purpose, and
this catches what a library or an exception message would let through.

Imported by gunicorn's configuration before Django is set up: no Django import here.
"""

import json
import logging
import re
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})

CONTEXT_FIELDS = ("request_id", "connection_id")


def current(name: str) -> str | None:
    return _context.get().get(name)


@contextmanager
def log_context(**fields: str):
    """The fields on every record logged inside the block (and in what it starts)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# What is never written, whatever logged it: a value after a sensitive name (a header, a form field, a
# keyword; an authorization's scheme is kept, its credential is not), any 64 hex digits (API secrets and
# HMAC signatures are that), and API key ids beyond their first 4 hex digits (enough for an operator to
# tell an account's keys apart, too little to use one).
SENSITIVE_VALUE = re.compile(
    r"(?i)((?:x[-_]api[-_](?:signature|key)|signature|secret|password|passwd|api[-_]?key|authorization|cookie|"
    r"sessionid|csrftoken|csrfmiddlewaretoken|token)[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
    r"([^\"'\s,;&}]+)")
HEX_SECRET = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64,}(?![0-9a-fA-F])")
KEY_ID = re.compile(r"(hkt_(?:live|test)_[0-9a-f]{4})[0-9a-f]{20}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    text = SENSITIVE_VALUE.sub(lambda match: match.group(1) + REDACTED, text)
    text = HEX_SECRET.sub(REDACTED, text)
    return KEY_ID.sub(r"\1…", text)


class ContextFilter(logging.Filter):
    """Puts the bound fields on the record (``record.request_id``...; None when unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ms), level, logger, message, the bound fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None):
                line[name] = redact(str(getattr(record, name)))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        # Each text redacted before it is quoted: in JSON a quoted name ("password": ...) is escaped.
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=...]``, for people."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        if fields:
            head, newline, rest = line.partition("\n")  # after the message, before a traceback
            line = f"{head} [{fields}]{newline}{rest}"
        return redact(line)


FORMATTERS = {"json": JsonFormatter, "text": TextFormatter}


def logging_config(log_format: str, level: str) -> dict:
    """The ``LOGGING`` dictConfig: every record through the context filter and the format chosen."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"line": {"()": FORMATTERS[log_format]}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"], "formatter": "line"}},
        "root": {"handlers": ["console"], "level": level},
    }
