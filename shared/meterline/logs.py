"""Structured JSON logs that Cloud Logging understands (one object per line on stderr).

`severity` and `message` are the fields Cloud Logging reads; everything else lands in
jsonPayload. Callers pass counts and ids, never payloads or secrets.

A failure is one line: `failure()` adds `exception_type` and the Python traceback as
`stack_trace`, the first field Error Reporting reads to group errors, so a traceback never
spreads over many plain-text lines. The web frameworks' own loggers (werkzeug under
`meterline serve`, gunicorn under functions-framework) write through the same formatter.
"""

from __future__ import annotations

import logging
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("meterline")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
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
