"""The log format, in process: records from the frameworks' own loggers (werkzeug, gunicorn)
are JSON lines like meterline's, and times are UTC. (The functions' log lines are checked in
tests/embedded/test_logs.py.)"""

from __future__ import annotations

import io
import logging

import orjson

from meterline import logs
from tests.support import written


def test_werkzeug_and_gunicorn_errors_are_json_lines():
    gunicorn = logging.getLogger("gunicorn.error")
    plain = io.StringIO()
    # gunicorn adds its own plain-text handler when its arbiter starts, after our import.
    gunicorn.addHandler(logging.StreamHandler(plain))
    try:
        with written() as lines:
            gunicorn.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", 42)
            try:
                raise OSError("boom")
            except OSError:
                logging.getLogger("werkzeug").exception("Error on request")
    finally:
        gunicorn.handlers.clear()
    assert plain.getvalue() == ""
    first, second = lines
    assert (first["severity"], first["logger"], first["message"]) == (
        "ERROR", "gunicorn.error", "Worker (pid:42) was sent SIGKILL! Perhaps out of memory?")
    assert (second["severity"], second["logger"], second["exception_type"]) == ("ERROR", "werkzeug", "OSError")
    assert second["stack_trace"].rstrip().endswith("OSError: boom")


def test_time_is_utc():
    record = logging.LogRecord("meterline.x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 0.0, 0.0
    assert orjson.loads(logs.JsonFormatter().format(record))["time"] == "1970-01-01T00:00:00.000Z"
