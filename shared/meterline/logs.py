"""Structured JSON logs that Cloud Logging understands (one object per line on stderr).

`severity` and `message` are the fields Cloud Logging reads; everything else lands in
jsonPayload. Callers pass counts and ids, never payloads or secrets.

A failure is one line: `failure()` adds `exception_type` and the Python traceback as
`stack_trace`, the first field Error Reporting reads to group errors, so a traceback never
spreads over many plain-text lines. The web frameworks' own loggers (werkzeug under
`meterline serve`, gunicorn under functions-framework) write through the same formatter, and
so does every library's WARNING or worse (urllib3's, Google's, Stripe's: the root logger's
handler is ours) and every `warnings.warn` (`logging.captureWarnings`).

One handler writes every line, under its lock, as one write of the whole record: records from
many threads (a function serves THREADS requests at once) never share or split a line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson

from meterline.core.clock import iso_ms

# Loggers of the servers around our code: their error lines are written as ours are.
FRAMEWORK_LOGGERS = ("werkzeug", "gunicorn.error")
_LOGGED = "_meterline_logged"

_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            # UTC (Z), whatever the host's zone, to the millisecond the logging module took.
            "time": iso_ms(int(record.created) * 1_000_000 + int(record.msecs) * 1000),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            entry.setdefault("exception_type", type(record.exc_info[1]).__name__)
            entry["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _LineHandler(logging.StreamHandler):
    """Writes each record as one line with ONE write: straight to the file descriptor when the
    stream has one (a pipe on Cloud Run: a write up to PIPE_BUF is never interleaved with
    another process's), else through the stream. `Handler.handle` holds the lock meanwhile."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            stream = self.stream
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # a StringIO, pytest's capture
                fd = None
            if fd is None:
                stream.write(line)
                stream.flush()
                return
            stream.flush()  # what was written through the stream goes first, whole
            data = line.encode("utf-8", "backslashreplace")
            while data:
                data = data[os.write(fd, data):]
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: a failed write never raises into the caller
            self.handleError(record)


class _ThroughOurHandler(logging.Filter):
    """Sends a framework logger's records through our handler instead of the framework's own.

    gunicorn installs its plain-text handler when its arbiter starts, after a function's
    main.py was imported, and functions-framework offers no hook to change it. A logger's
    filters survive that and run before any of its handlers, so this one writes the record
    as JSON and stops it there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _handler is not None:
            _handler.handle(record)
        return False


def configure(level: int = logging.INFO) -> None:
    global _handler
    if _handler is not None:
        return
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    ours = logging.getLogger("meterline")
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
    # Libraries' records (urllib3's "Connection pool is full", a deprecation) reach the root
    # logger: through ours they are JSON with a severity, not Python's plain-text last resort.
    # The root keeps its level (WARNING unless the host application chose another).
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).addFilter(_ThroughOurHandler())
    _handler = handler


def set_level(level: int) -> None:
    """The level of every meterline logger (e.g. WARNING for a CLI that draws its own progress)."""
    configure()
    logging.getLogger("meterline").setLevel(level)


def get(name: str) -> logging.Logger:
    configure()
    return logging.getLogger(f"meterline.{name}")


def event(logger: logging.Logger, message: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log `message` with structured fields (ids and counts only)."""
    logger.log(level, message, exc_info=exc_info, extra={"fields": fields})


def failure(logger: logging.Logger, message: str, exc: BaseException, level: int = logging.ERROR, **fields: Any) -> None:
    """Log a failure as one line with its exception type and stack trace, and mark `exc` as logged.

    A framework error handler further up (`entrypoints.http.framework_error`) then answers for
    it without a second line.
    """
    logger.log(level, message, exc_info=(type(exc), exc, exc.__traceback__),
               extra={"fields": {"exception_type": type(exc).__name__, **fields}})
    try:
        setattr(exc, _LOGGED, True)
    except AttributeError:  # an exception type with __slots__: at worst it is logged twice
        pass


def was_logged(exc: BaseException) -> bool:
    return getattr(exc, _LOGGED, False)
