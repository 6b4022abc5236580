"""Run the local app on a loopback port in a background thread (demo, tests, benchmarks).

The server's own answers and logs follow the app's: a request line it refuses (over 64 KiB:
414; malformed: 400; headers too many or too long: 431) is answered in Lago's JSON shape, not
http.server's HTML page, and a failure inside the server logs one JSON line, not
socketserver's plain-text traceback. werkzeug's logger writes JSON too (`logs.configure`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, cast

import orjson
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from meterline import logs
from meterline.entrypoints import lago
from meterline.entrypoints.lago import http_error
from meterline.local.app import create_app
from meterline.local.worker import QueueWorker
from meterline.runtime import LocalRuntime

_log = logs.get("server")


class _StopAfterTimeout:
    """The request stream, reading nothing more once a read timed out.

    A socket file that timed out raises on every later read; werkzeug drains the unread rest of
    a body after answering (here, the 408) and would log that as a server error."""

    def __init__(self, raw: Any):
        self._raw = raw
        self._timed_out = False

    def _guard(self, read: Callable[..., Any], *args: Any) -> Any:
        if self._timed_out:
            return 0 if read.__name__ == "readinto" else b""
        try:
            return read(*args)
        except TimeoutError:
            self._timed_out = True
            raise

    def read(self, *args: Any) -> bytes:
        return self._guard(self._raw.read, *args)

    def readline(self, *args: Any) -> bytes:
        return self._guard(self._raw.readline, *args)

    def readinto(self, buffer: Any) -> int:
        return self._guard(self._raw.readinto, buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _QuietHandler(WSGIRequestHandler):
    """No access log: requests are counted by the services' own structured logs."""

    def log_request(self, *args, **kwargs) -> None:
        pass

    def setup(self) -> None:
        # A socket timeout bounds every read: a client that stalls in its request line, headers
        # or body (slowloris) loses its connection instead of holding a thread for good.
        self.timeout = cast(_Server, self.server).read_timeout  # type: ignore[misc]  # per connection, as http.server reads it
        super().setup()
        self.rfile = cast(Any, _StopAfterTimeout(self.rfile))  # read like the file it wraps

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):
            return  # an idle keep-alive connection, or a client that stalled, was closed: no failure
        super().log_error(format, *args)

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        except TimeoutError:
            # Stalled inside its headers: the request line is known, so answer 408, then close.
            self.send_error(408)
            self.close_connection = True
            return False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server calls this for what it refuses before the app sees the request (all 4xx
        # and 5xx, so there is always a body). A client's mistake: answered, not logged.
        err = http_error(code)
        data = orjson.dumps(lago.error(err)[1])
        self.send_response(code, err.error)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadedWSGIServer):
    read_timeout: float = 10.0

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a plain-text traceback here (the app's own errors never get
        # this far: Flask answers them); one JSON line instead.
        logs.failure(_log, "request handling failed", sys.exc_info()[1] or RuntimeError("unknown"))


class MeterlineServer:
    """`meterline serve` in one process: the local app on a loopback port and the embedded
    queue's worker, each in a background thread."""

    def __init__(self, runtime: LocalRuntime, host: str = "127.0.0.1", port: int = 0, worker: bool = True):
        self.runtime = runtime
        self._server = _Server(host, port, create_app(runtime), handler=_QuietHandler)
        self._server.read_timeout = runtime.settings.http_read_timeout_seconds
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="meterline-http", daemon=True)
        self.worker = QueueWorker(runtime.queue, runtime.process.service) if worker and runtime.settings.backend == "embedded" else None

    def start(self) -> MeterlineServer:
        self._thread.start()
        if self.worker:
            self.worker.start()
        return self

    def serve_forever(self) -> None:
        if self.worker:
            self.worker.start()
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        if self.worker:
            self.worker.stop()

    def __enter__(self) -> MeterlineServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
