"""`meterline serve` and the other CLI commands share one data dir (real processes).

While a server runs and events flow into it, `api-keys create`, `catalog apply` and
`events list` run on the same data dir as separate processes and succeed; every event the
server answered 200 is counted exactly once; a second `serve` on the dir refuses clearly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import orjson

from infra.servers import _free_port, wait_healthy
from tests.support import REPO_ROOT, cli, post_json

EXAMPLE = REPO_ROOT / "shared/meterline/local/example_catalog.yaml"


def test_cli_commands_work_while_serve_runs_on_the_same_data_dir(tmp_path):
    data = tmp_path / "data"
    key = cli(data, "api-keys", "create", "--name", "gateway").stdout.strip()  # before the server: plain SQLite
    assert key.startswith("ml_")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "METERLINE_BACKEND": "embedded"},
    )
    try:
        wait_healthy(url, serve)
        accepted: list[str] = []
        failures: list[BaseException] = []

        def gateway() -> None:  # events keep flowing while the other commands run
            try:
                for i in range(150):
                    txn = f"t{i}"
                    body = {"event": {"transaction_id": txn, "external_subscription_id": "sub_acme",
                                      "code": "tokens_consumed", "timestamp": 1767225600 + i, "properties": {"value": i}}}
                    assert post_json(f"{url}/api/v1/events", key, body) == 200
                    accepted.append(txn)
                    if i % 10 == 0:  # a client retry of the same event: counted once
                        assert post_json(f"{url}/api/v1/events", key, body) == 200
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(exc)

        flow = threading.Thread(target=gateway)
        flow.start()
        created = cli(data, "api-keys", "create", "--name", "second")
        assert created.returncode == 0, created.stderr
        applied = cli(data, "catalog", "apply", str(EXAMPLE))
        assert applied.returncode == 0, applied.stderr
        listed = cli(data, "api-keys", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert {k["name"] for k in orjson.loads(listed.stdout)} == {"gateway", "second"}
        midway = cli(data, "events", "list", "--subscription", "sub_acme", "--format", "json")
        assert midway.returncode == 0, midway.stderr  # a warehouse read, through the server
        flow.join(timeout=120)
        assert not failures, failures
        assert len(accepted) == 150

        # The new key works at once against the running server (it reads the shared SQLite).
        second = created.stdout.strip()
        one_more = {"event": {"transaction_id": "t-second", "external_subscription_id": "sub_acme",
                              "code": "tokens_consumed", "timestamp": 1767225600, "properties": {"value": 1}}}
        assert post_json(f"{url}/api/v1/events", second, one_more) == 200
        accepted.append("t-second")

        # A second server on the same dir refuses, names the holder, and changes nothing.
        other = cli(data, "serve", "--port", str(_free_port()), timeout=30)
        assert other.returncode == 2
        assert "meterline serve" in other.stderr and f"pid {serve.pid}" in other.stderr

        deadline = time.monotonic() + 20
        while True:
            out = cli(data, "events", "list", "--subscription", "sub_acme", "--per-page", "100", "--format", "json")
            assert out.returncode == 0, out.stderr
            total = int(out.stderr.split()[0])
            if total == len(accepted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == len(accepted) == 151  # every 200 counted, each exactly once
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)

    # With the server gone, a read opens the warehouse itself.
    out = cli(data, "events", "list", "--subscription", "sub_acme", "--per-page", "5", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("151 events counted")
    assert len(orjson.loads(out.stdout)) == 5


def _status(url: str, key: str, body: dict) -> int:
    try:
        return post_json(url, key, body)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_key_revoked_while_serve_runs_is_refused_within_the_cache_time(tmp_path):
    data = tmp_path / "data"
    cache_env = {"METERLINE_API_KEY_CACHE_SECONDS": "1"}
    key = cli(data, "api-keys", "create", "--name", "leaked").stdout.strip()
    kept = cli(data, "api-keys", "create", "--name", "gateway").stdout.strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "METERLINE_BACKEND": "embedded", **cache_env},
    )
    try:
        wait_healthy(url, serve)
        event = {"event": {"transaction_id": "r1", "external_subscription_id": "sub_acme", "code": "tokens_consumed",
                           "timestamp": 1767225600, "properties": {"value": 1}}}
        assert _status(f"{url}/api/v1/events", key, event) == 200  # verified, and now cached by the server

        listed = orjson.loads(cli(data, "api-keys", "list", "--format", "json").stdout)
        prefix = next(k["prefix"] for k in listed if k["name"] == "leaked")
        revoked = subprocess.run(
            [sys.executable, "-m", "meterline", "api-keys", "revoke", "--prefix", prefix, "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "METERLINE_BACKEND": "embedded", **cache_env},
        )
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith("revoked 'leaked'")
        assert "stop working within 1 s" in revoked.stderr  # it says how long
        revoked_at = time.monotonic()

        while _status(f"{url}/api/v1/events", key, event) == 200:
            assert time.monotonic() - revoked_at < 1 + 2, "a revoked key still works after the cache time"
            time.sleep(0.1)
        assert _status(f"{url}/api/v1/events", key, event) == 401
        assert _status(f"{url}/api/v1/events", kept, event) == 200  # other keys are untouched

        listed = {k["name"]: k for k in orjson.loads(cli(data, "api-keys", "list", "--format", "json").stdout)}
        assert listed["leaked"]["revoked_at"] and listed["gateway"]["revoked_at"] is None
        again = cli(data, "api-keys", "revoke", "--name", "leaked")
        assert again.returncode == 0 and "already revoked" in again.stdout
        unknown = cli(data, "api-keys", "revoke", "--name", "nobody")
        assert unknown.returncode == 1 and "no API key" in unknown.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)
