"""Run the local app on a loopback port in a background thread (demo, tests, benchmarks)."""

from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from meterline.local.app import create_app
from meterline.runtime import LocalRuntime
from meterline.local.worker import QueueWorker


class _QuietHandler(WSGIRequestHandler):
    """No access log: requests are counted by the services' own structured logs."""

    def log_request(self, *args, **kwargs) -> None:
        pass


class LocalServer:
    def __init__(self, runtime: LocalRuntime, host: str = "127.0.0.1", port: int = 0, worker: bool = True):
        self.runtime = runtime
        self._server = make_server(host, port, create_app(runtime), threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="meterline-http", daemon=True)
        self.worker = QueueWorker(runtime.queue, runtime.process.service) if worker and runtime.settings.backend == "embedded" else None

    def start(self) -> LocalServer:
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

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
