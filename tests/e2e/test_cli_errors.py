"""Every `meterline` command with bad arguments, or with a server that dies under it: one line on
stderr, a non-zero exit, never a traceback; and commands that only read never create a data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from meterline.local.datadir import ServerInfo, hold_warehouse

# (arguments, what the one line must say); `DIR` stands for an existing data dir.
BAD_ARGUMENTS = [
    ([], "required"),
    (["nonsense"], "invalid choice"),
    (["serve", "--port", "70000", "--data-dir", "DIR"], "--port"),
    (["serve", "--port", "x", "--data-dir", "DIR"], "--port"),
    (["api-keys", "create", "--data-dir", "DIR"], "--name"),
    (["api-keys", "create", "--name", "", "--data-dir", "DIR"], "--name"),
    (["api-keys", "create", "--name", "   ", "--data-dir", "DIR"], "--name"),
    (["api-keys", "create", "--name", "a\x07b", "--data-dir", "DIR"], "--name"),
    (["api-keys", "list", "--format", "xml", "--data-dir", "DIR"], "--format"),
    (["api-keys", "revoke", "--data-dir", "DIR"], "--prefix"),
    (["api-keys", "revoke", "--name", "nobody", "--data-dir", "DIR"], "no API key"),
    (["dead-letters", "list", "--limit", "-5", "--data-dir", "DIR"], "--limit"),
    (["dead-letters", "list", "--limit", "0", "--data-dir", "DIR"], "--limit"),
    (["dead-letters", "replay", "--data-dir", "DIR"], "--id"),
    (["dead-letters", "replay", "--id", "999", "--data-dir", "DIR"], "no dead letter"),
    (["events", "list", "--data-dir", "DIR"], "--subscription"),
    (["events", "list", "--subscription", "s", "--page", "0", "--data-dir", "DIR"], "--page"),
    (["events", "list", "--subscription", "s", "--per-page", "-1", "--data-dir", "DIR"], "--per-page"),
    (["events", "list", "--subscription", "s", "--per-page", "101", "--data-dir", "DIR"], "--per-page"),
    (["catalog", "apply", "/nonexistent.yaml", "--data-dir", "DIR"], "nonexistent.yaml"),
    (["bill", "--as-of", "yesterday", "--data-dir", "DIR"], "--as-of"),
    (["bill", "--as-of", "2026-12-01T02:00:00", "--data-dir", "DIR"], "timezone"),
    (["bill", "--as-of", "9999-12-31T23:59:59Z", "--data-dir", "DIR"], "--as-of"),
    (["demo", "--events", "-1", "--data-dir", "DIR"], "--events"),
]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meterline", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "METERLINE_BACKEND": "embedded"}, stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess, says: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.stderr


@pytest.mark.parametrize(("args", "says"), BAD_ARGUMENTS, ids=[" ".join(a[:3]) or "(none)" for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_gets_one_line_and_a_nonzero_exit(tmp_path, args, says):
    data = tmp_path / "data"
    data.mkdir()
    assert_one_line_error(run(*[str(data) if a == "DIR" else a for a in args]), says)


@pytest.mark.parametrize("args", [
    ["api-keys", "list"], ["api-keys", "revoke", "--name", "gateway"], ["dead-letters", "list"],
    ["dead-letters", "replay", "--all"], ["events", "list", "--subscription", "sub_1"],
])
def test_a_read_command_never_creates_a_data_dir(tmp_path, args):
    missing = tmp_path / "not-there"
    assert_one_line_error(run(*args, "--data-dir", str(missing)), "no data dir")
    assert not missing.exists()


class _DyingServer:
    """Stands in for a `meterline serve` that dies mid-request: it accepts, reads, then closes."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()


@pytest.mark.parametrize("args", [["bill"], ["events", "list", "--subscription", "sub_1"]])
def test_a_server_that_dies_under_a_command_gets_one_line(tmp_path, args):
    data = tmp_path / "data"
    dying = _DyingServer()
    with hold_warehouse(data, "meterline serve") as announce:
        announce(ServerInfo(os.getpid(), dying.url, "mll_test"))
        result = run(*args, "--data-dir", str(data))
    dying.sock.close()
    assert_one_line_error(result, "is `meterline serve` still running?")


def test_a_server_that_is_gone_gets_one_line(tmp_path):
    data = tmp_path / "data"
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there any more
    with hold_warehouse(data, "meterline serve") as announce:
        announce(ServerInfo(os.getpid(), url, "mll_test"))
        result = run("bill", "--data-dir", str(data))
    assert_one_line_error(result, "did not answer")
