"""A real `kill -9` of `meterline serve` under load, then a restart on the same data dir:
every event answered 200 is counted exactly once within seconds of the restart.

The restart takes back the messages the dead worker had leased (`SqliteQueue.release_leases`),
so they are not left invisible for their 60 s lease; the test's deadline is far below that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

from infra.servers import _free_port
from tests.support import cli, post_json

SUBSCRIPTION = "sub_crash"
COUNTED_WITHIN_SECONDS = 10.0  # after the restart; a lease left to run out would take 60 s


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    """`meterline serve` as a real process; its stderr goes to a file (a pipe nobody reads
    could fill up under load and stall the server)."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data)],
            stdout=subprocess.DEVNULL, stderr=sink, env={**os.environ, "METERLINE_BACKEND": "embedded"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not become healthy")


def _counted(url: str, key: str) -> tuple[int, list[str]]:
    """meta.total_count and every counted transaction_id, through the API."""
    ids: list[str] = []
    page, total = 1, 0
    while True:
        query = urllib.parse.urlencode({"external_subscription_id": SUBSCRIPTION, "page": page, "per_page": 100})
        request = urllib.request.Request(f"{url}/api/v1/events?{query}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = orjson.loads(response.read())
        total = int(body["meta"]["total_count"])
        ids.extend(e["transaction_id"] for e in body["events"])
        if not body["events"] or len(ids) >= total:
            return total, ids
        page += 1


def test_every_accepted_event_is_counted_once_after_a_kill_9_and_a_restart(tmp_path):
    data = tmp_path / "data"
    key = cli(data, "api-keys", "create", "--name", "gateway").stdout.strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = _serve(data, port, tmp_path / "first.log")
    restarted: subprocess.Popen | None = None
    try:
        accepted: list[str] = []
        attempted: list[str] = []  # sent, whatever the answer: these MAY be counted
        lock = threading.Lock()
        stop = threading.Event()

        def gateway(worker: int) -> None:
            n = 0
            while not stop.is_set():
                ids = [f"w{worker}-{n + i}" for i in range(20)]
                n += 20
                body = {"events": [{"transaction_id": t, "external_subscription_id": SUBSCRIPTION, "code": "tokens",
                                    "timestamp": 1767225600, "properties": {"value": 1}} for t in ids]}
                with lock:
                    attempted.extend(ids)
                try:
                    status = post_json(f"{url}/api/v1/events/batch", key, body)
                except (OSError, urllib.error.URLError):
                    return  # the server died under us: this batch's fate is unknown
                if status == 200:
                    with lock:
                        accepted.extend(ids)

        flow = [threading.Thread(target=gateway, args=(w,)) for w in range(8)]
        for t in flow:
            t.start()
        deadline = time.monotonic() + 30
        while len(accepted) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(serve.pid, signal.SIGKILL)  # mid-load: requests in flight, messages leased
        serve.wait(timeout=10)
        stop.set()
        for t in flow:
            t.join(timeout=60)
        assert len(accepted) >= 3000, "the load never got going"

        restarted = _serve(data, port, tmp_path / "restart.log")
        started = time.monotonic()
        while True:
            total, ids = _counted(url, key)
            if set(accepted) <= set(ids) or time.monotonic() - started > COUNTED_WITHIN_SECONDS:
                break
            time.sleep(0.2)
        took = time.monotonic() - started

        missing = set(accepted) - set(ids)
        restart_log = (tmp_path / "restart.log").read_text()
        assert not missing, f"{len(missing)} events answered 200 not counted {took:.1f}s after the restart: {restart_log}"
        assert "took back" in restart_log  # the dead worker held leases, and the restart took them back
        assert len(ids) == len(set(ids)) == total  # each counted once
        assert set(ids) <= set(attempted)  # nothing counted that was never sent
        assert took < COUNTED_WITHIN_SECONDS
    finally:
        for proc in (serve, restarted):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
