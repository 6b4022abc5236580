"""Helpers shared by the test layers (plain functions; fixtures live in conftest.py files)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.servers import environ
from meterline import logs
from meterline.config import Settings
from meterline.core.clock import now_us
from meterline.runtime import LocalRuntime, build_runtime
from meterline.services.auth import create_api_key

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 60.0


def embedded_runtime(data_dir: Path, **overrides) -> LocalRuntime:
    return build_runtime(Settings(backend="embedded", data_dir=data_dir, **overrides))


def new_key(runtime: LocalRuntime, name: str = "test") -> str:
    return create_api_key(runtime.adapters.api_keys, name, now_us())


def cli(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `meterline <args> --data-dir <data_dir>` in a child process on the embedded backend."""
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "METERLINE_BACKEND": "embedded"},
    )


@contextlib.contextmanager
def serve_process(data_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`meterline serve` on a free loopback port as a real process, healthy: (process, base URL).
    Stopped with Ctrl-C's signal afterwards, as a user stops it."""
    from infra.servers import _free_port, wait_healthy

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "METERLINE_BACKEND": "embedded", **env},
    )
    try:
        wait_healthy(url, serve)
        yield serve, url
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)


def post_json(url: str, key: str, body: dict) -> int:
    """POST `body` as JSON with the API key; the answer's status."""
    request = urllib.request.Request(
        url, data=orjson.dumps(body), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def poll(check: Callable[[], Any], what: str, seconds: float = POLL_SECONDS) -> Any:
    """Call `check` until it returns a truthy value; fail with the last value after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}; last seen: {last!r}")


@contextlib.contextmanager
def written() -> Iterator[list[dict]]:
    """The lines meterline's handler writes in the block, parsed (filled when the block ends)."""
    logs.configure()
    buffer = io.StringIO()
    previous = logs._handler.setStream(buffer)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        logs._handler.setStream(previous)
    lines.extend(orjson.loads(x) for x in buffer.getvalue().splitlines())


def env(**values: str):
    """Set environment variables for the block, restoring them afterwards."""
    return environ(values)


def gateway_stream(n_unique: int, seed: int, subscriptions: int = 20, repeat_rate: float = 0.10, conflict_rate: float = 0.01):
    """A stream of raw events: n_unique distinct events, plus exact repeats and conflicting reuses.

    Returns (stream, conflicts, truth): the unique events and their exact repeats shuffled,
    the conflicting reuses, and subscription -> {transaction_id: Decimal value} for the
    events that must be counted.
    """
    rng = random.Random(seed)
    base = 1_767_225_600  # 2026-01-01T00:00:00Z
    uniques = []
    for i in range(n_unique):
        value = rng.choice([str(rng.randint(1, 5000)), rng.randint(1, 5000), f"{rng.randint(0, 99)}.{rng.randint(0, 999):03d}"])
        uniques.append({
            "transaction_id": f"tx-{seed}-{i}",
            "external_subscription_id": f"sub-{i % subscriptions}",
            "code": "tokens_consumed",
            "timestamp": base + i,
            "properties": {"value": value, "model": rng.choice(["gpt-4o", "claude"])},
        })
    stream = list(uniques)
    for _ in range(int(n_unique * repeat_rate)):
        stream.append(dict(rng.choice(uniques)))
    conflicts = []
    for _ in range(int(n_unique * conflict_rate)):
        original = rng.choice(uniques)
        conflicts.append({**original, "properties": {**original["properties"], "value": "999999"}})
    rng.shuffle(stream)
    truth: dict[str, dict[str, Decimal]] = {}
    for e in uniques:
        truth.setdefault(e["external_subscription_id"], {})[e["transaction_id"]] = Decimal(str(e["properties"]["value"]))
    # Conflicting reuses are returned apart: a test sends them after the originals are counted,
    # so that "the first payload wins" has one answer whatever order the bus delivers in.
    return stream, conflicts, truth
