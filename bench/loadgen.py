"""A small closed-loop HTTP/1.1 load generator: several processes, persistent connections.

Stdlib only, so `make bench` runs from a fresh clone. Each worker process opens its share of
keep-alive connections to one loopback server and drives them from a single `selectors`
loop: a connection sends its next request as soon as the previous answer is in (closed loop,
one request in flight per connection). Requests are pre-built bytes, and answers are parsed
just far enough to find the status and the body's end. That costs about a tenth of the CPU
that `http.client` costs per request (measured: ~15 µs instead of ~100 µs), which matters
here: the machine has two cores, and every cycle the load generator spends is a cycle the
server under test does not get.

Every loop is bounded: by the measuring window (warm-up + duration), by `max_requests` per
worker, and by a drain timeout for the answers still in flight at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class LoadSpec:
    port: int
    path: str
    bodies: tuple[bytes, ...]  # cycled through; each connection starts at another offset
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 32  # in total, spread over the processes
    processes: int = 1
    warmup: float = 1.0  # seconds of load before the window opens (connections, caches, JIT-less warm-up)
    duration: float = 5.0  # seconds in the measuring window
    max_requests: int = 2_000_000  # per process, whatever the time
    host: str = HOST


@dataclass
class LoadResult:
    requests: int = 0  # completed inside the window
    errors: int = 0  # non-2xx answers inside the window
    window: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # a sample, for percentiles
    pids: list[int] = field(default_factory=list)
    started_at: float = 0.0  # time.time() at which the window opened
    error_sample: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.window if self.window else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _request_bytes(spec: LoadSpec, body: bytes) -> bytes:
    head = [f"POST {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}", f"Content-Length: {len(body)}",
            "Content-Type: application/json", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in spec.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Conn:
    __slots__ = ("sock", "buf", "sent_at", "index")

    def __init__(self, spec: LoadSpec, index: int):
        self.sock = socket.create_connection((spec.host, spec.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sent_at = 0.0
        self.index = index


def _parse(buf: bytearray) -> tuple[int, int, bool] | None:
    """(status, length of the whole answer, server closes) once a whole answer is in, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"content-length:")
    if at < 0:
        raise RuntimeError("answer without Content-Length (chunked answers are not supported)")
    line_end = head.find(b"\r\n", at)
    length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
    total = end + 4 + length
    if len(buf) < total:
        return None
    return status, total, b"connection: close" in head


def _worker(spec: LoadSpec, share: int, seed: int, barrier, results) -> None:
    requests = [_request_bytes(spec, b) for b in spec.bodies]
    result = LoadResult(pids=[os.getpid()])
    sel = selectors.DefaultSelector()
    conns: list[_Conn] = []
    try:
        for i in range(share):
            conns.append(_Conn(spec, (seed * 7919 + i * 104729) % len(requests)))
        barrier.wait(timeout=60)
        now = time.time()
        window_start = now + spec.warmup
        window_end = window_start + spec.duration
        result.started_at, result.window = window_start, spec.duration
        sample_every = 1

        def send(conn: _Conn, t: float) -> None:
            conn.sent_at = t
            conn.sock.sendall(requests[conn.index])
            conn.index = (conn.index + 1) % len(requests)

        for conn in conns:
            send(conn, time.time())
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        in_flight = len(conns)
        sent = len(conns)
        drain_deadline = window_end + 10.0
        while in_flight:
            now = time.time()
            if now > drain_deadline:
                break
            for key, _ in sel.select(timeout=0.5):
                conn: _Conn = key.data
                chunk = conn.sock.recv(262_144)
                if not chunk:
                    raise RuntimeError("the server closed a keep-alive connection")
                conn.buf += chunk
                parsed = _parse(conn.buf)
                if parsed is None:
                    continue
                status, total, closes = parsed
                if not 200 <= status < 300 and not result.error_sample:
                    result.error_sample = bytes(conn.buf[:total])[-400:].decode(errors="replace")
                del conn.buf[:total]
                done = time.time()
                in_flight -= 1
                if window_start <= done < window_end:
                    result.requests += 1
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if not 200 <= status < 300:
                        result.errors += 1
                    if result.requests % sample_every == 0:
                        result.latencies_ms.append((done - conn.sent_at) * 1000)
                        if len(result.latencies_ms) >= 20_000:  # keep the sample bounded
                            result.latencies_ms = result.latencies_ms[::2]
                            sample_every *= 2
                if closes:
                    sel.unregister(conn.sock)
                    conn.sock.close()
                    fresh = _Conn(spec, conn.index)
                    conn.sock, conn.buf = fresh.sock, fresh.buf
                    sel.register(conn.sock, selectors.EVENT_READ, conn)
                if done < window_end and sent < spec.max_requests:
                    send(conn, done)
                    sent += 1
                    in_flight += 1
    except Exception as exc:  # noqa: BLE001 - reported, never hidden: a broken run must not print a figure
        result.error_sample = f"{type(exc).__name__}: {exc}"
        result.errors += 1
    finally:
        for conn in conns:
            conn.sock.close()
        results.put(result)


def run_load(spec: LoadSpec, probe: Callable[[], Any] | None = None) -> tuple[LoadResult, Any, Any]:
    """Run the load from `spec.processes` fresh processes and merge what they measured.

    `probe` (e.g. a CPU-time reading) is called when the window opens and when it closes;
    both readings are returned with the result.
    """
    # spawn, not fork: the parent holds gRPC clients, which do not survive a fork.
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(spec.processes + 1)  # the workers and this process
    results = ctx.Queue()
    shares = [spec.connections // spec.processes + (1 if i < spec.connections % spec.processes else 0)
              for i in range(spec.processes)]
    procs = [ctx.Process(target=_worker, args=(spec, share, i, barrier, results), daemon=True)
             for i, share in enumerate(shares)]
    for p in procs:
        p.start()
    merged = LoadResult(window=spec.duration)
    deadline = time.monotonic() + 60 + spec.warmup + spec.duration + 15
    before = after = None
    try:
        barrier.wait(timeout=60)
        if probe is not None:
            time.sleep(spec.warmup)
            before = probe()
            time.sleep(spec.duration)
            after = probe()
        for _ in procs:
            part: LoadResult = results.get(timeout=max(1.0, deadline - time.monotonic()))
            merged.requests += part.requests
            merged.errors += part.errors
            merged.latencies_ms += part.latencies_ms
            merged.pids += part.pids
            merged.started_at = max(merged.started_at, part.started_at)
            merged.error_sample = merged.error_sample or part.error_sample
            for status, n in part.statuses.items():
                merged.statuses[status] = merged.statuses.get(status, 0) + n
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()  # our own child, by its handle
                p.join(timeout=5)
    return merged, before, after
