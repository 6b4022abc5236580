"""Structured JSON logs that Cloud Logging understands (one object per line on stderr).

`severity` and `message` are the fields Cloud Logging reads; everything else lands in
jsonPayload. Callers pass counts and ids, never payloads or secrets.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("meterline")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _configured = True


def get(name: str) -> logging.Logger:
    configure()
    return logging.getLogger(f"meterline.{name}")


def event(logger: logging.Logger, message: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log `message` with structured fields (ids and counts only)."""
    logger.log(level, message, exc_info=exc_info, extra={"fields": fields})
