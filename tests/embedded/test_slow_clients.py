"""`meterline serve` and slow clients: a stalled request is answered 408 and closed, and 50 of
them at once do not stop a normal client from being served."""

from __future__ import annotations

import http.client
import socket
import time

import orjson
import pytest

from meterline.local.server import MeterlineServer
from meterline.runtime import set_runtime
from tests.support import embedded_runtime, new_key

READ_TIMEOUT = 1.0


@pytest.fixture
def slow_server(tmp_path):
    runtime = embedded_runtime(tmp_path / "data", http_read_timeout_seconds=READ_TIMEOUT)
    set_runtime(runtime)
    with MeterlineServer(runtime, worker=False) as running:
        yield running, new_key(runtime)
    set_runtime(None)


def _read_all(sock: socket.socket) -> bytes:
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_a_body_that_stalls_is_answered_408_and_closed(slow_server):
    server, key = slow_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\": ")
        raw = _read_all(sock)  # returns only when the server closes the connection
        waited = time.monotonic() - started
    head, _, body = raw.partition(b"\r\n\r\n")
    assert _status(raw) == 408, raw[:200]
    assert orjson.loads(body) == {"status": 408, "error": "Request Timeout", "code": "request_timeout"}
    assert READ_TIMEOUT * 0.9 <= waited < READ_TIMEOUT + 10


def test_headers_that_stall_are_answered_408_and_closed(slow_server):
    server, _ = slow_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/plans HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        raw = _read_all(sock)
    assert _status(raw) == 408, raw[:200]


def test_an_idle_connection_is_closed_without_an_answer(slow_server):
    server, _ = slow_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        assert _read_all(sock) == b""  # closed by the server, not left open


def test_fifty_slow_clients_do_not_stop_a_normal_one(slow_server):
    server, key = slow_server
    slow = []
    try:
        for i in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            part = (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                    + b"\r\nContent-Length: 1000\r\n\r\n{" if i % 2
                    else b"GET /api/v1/plans HTTP/1.1\r\nHost: x\r\n")
            sock.sendall(part)
            slow.append(sock)
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/api/v1/plans", headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        assert resp.status == 200 and "plans" in orjson.loads(resp.read())
        conn.close()
        # Served while all fifty still stall, well within their timeout.
        assert time.monotonic() - started < READ_TIMEOUT
        # And every slow one is let go: answered 408 or closed, none left holding a thread.
        for sock in slow:
            raw = _read_all(sock)
            assert raw == b"" or _status(raw) == 408
    finally:
        for sock in slow:
            sock.close()
