"""Run the local app on a loopback port in a background thread (demo, tests, benchmarks).

The server's own answers and logs follow the app's: a request line it refuses (over 64 KiB:
414; malformed: 400; headers too many or too long: 431) is answered in Lago's JSON shape, not
http.server's HTML page, and a failure inside the server logs one JSON line, not
socketserver's plain-text traceback. werkzeug's logger writes JSON too (`logs.configure`).
"""

from __future__ import annotations

import sys
import threading

import orjson
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from meterline import logs
from meterline.entrypoints.http import http_error, lago_error
from meterline.local.app import create_app
from meterline.local.worker import QueueWorker
from meterline.runtime import LocalRuntime

_log = logs.get("server")


class _QuietHandler(WSGIRequestHandler):
    """No access log: requests are counted by the services' own structured logs."""

    def log_request(self, *args, **kwargs) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server calls this for what it refuses before the app sees the request (all 4xx
        # and 5xx, so there is always a body). A client's mistake: answered, not logged.
        err = http_error(code)
        data = orjson.dumps(lago_error(err)[1])
        self.send_response(code, err.error)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadedWSGIServer):
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
