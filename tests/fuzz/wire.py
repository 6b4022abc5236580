"""What every fuzzed answer must be, whichever property sent it; the metrics the fuzzed events
are checked against; the worker's log kept quiet while thousands of messages are processed."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

# No fuzzed admin request names these metrics, so they stay as the world created them.
COUNTED = "counted_tokens"  # sum of "value": ingest checks it against the numeric domain
CALLS = "counted_calls"  # count: any value


def check_answer(method: str, url: str, resp) -> None:
    status, data = resp.status_code, resp.get_data()
    assert status < 500, (method, url[:200], status, data[:300])
    if method == "HEAD":
        assert data == b"", (method, url[:200])
        return
    try:
        body = json.loads(data)  # JSON, whoever answered
    except ValueError:
        raise AssertionError(f"not JSON: {method} {url[:200]} -> {status} {resp.content_type} {data[:300]!r}") from None
    if status >= 400:
        assert isinstance(body, dict) and body.get("status") == status, (method, url[:200], data[:300])
        if status in (400, 422):
            details = body.get("error_details")
            assert isinstance(details, dict) and details and all(isinstance(k, str) and k for k in details), data[:300]


@contextlib.contextmanager
def quiet_worker_log() -> Iterator[None]:
    """One INFO line per processed message, thousands of them: kept for failures only."""
    worker_log = logging.getLogger("meterline.worker")
    level = worker_log.level
    worker_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        worker_log.setLevel(level)
