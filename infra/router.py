"""A loopback router in front of the functions: what the load balancer's URL map does on Google
Cloud, by the same route table (`meterline.routes`), so one base URL serves a Lago client.

    python infra/router.py --port 8080 ingest=http://127.0.0.1:8081 admin=http://127.0.0.1:8082 ...

`make gcp-local` (infra/gcp_local.py) and the compat suite (tests/compat/targets.py) start it in
process with `start_router`. It binds 127.0.0.1 only, forwards each request unchanged (method,
path, query, headers, body) to the function its path belongs to and the answer back; a path no
running function serves gets Lago's JSON 404. It routes bill too (`/api/v1/billing_runs`, with
an API key's header passed through) unless told `public_only`, as the load balancer is.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT / "shared") not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT / "shared"))

from meterline import routes  # noqa: E402

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}
_NOT_FOUND = json.dumps({"status": 404, "error": "Not Found", "code": "route_not_found"}).encode()


class Router(http.server.ThreadingHTTPServer):
    """`upstreams`: {function: base URL} of the running functions."""

    daemon_threads = True

    def __init__(self, upstreams: dict[str, str], port: int = 0, public_only: bool = False):
        self.upstreams = {name: urlsplit(url) for name, url in upstreams.items()}
        self.public_only = public_only
        super().__init__((HOST, port), _Forward)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def upstream(self, path: str):
        function = routes.function_for(path, self.public_only)
        if function is None and self.public_only:
            function = routes.DEFAULT_FUNCTION  # the load balancer's default service
        return self.upstreams.get(function or "")

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Router

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = self.server.upstream(urlsplit(self.path).path)
        if target is None:
            return self._answer(404, [("Content-Type", "application/json")], _NOT_FOUND)
        # The Host the client used, as the load balancer keeps it (portal links are built from it).
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            return self._answer(502, [("Content-Type", "application/json")],
                                json.dumps({"status": 502, "error": "Bad Gateway", "code": "bad_gateway"}).encode())
        finally:
            conn.close()
        kept = [(k, v) for k, v in resp.getheaders()
                if k.lower() not in _HOP_BY_HOP | {"content-length", "server", "date"}]
        self._answer(resp.status, kept, data)

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the functions log every request themselves


def start_router(upstreams: dict[str, str], port: int = 0, public_only: bool = False) -> Router:
    """A running router on 127.0.0.1 (port 0: a free one); `stop()` ends it."""
    router = Router(upstreams, port, public_only)
    threading.Thread(target=router.serve_forever, name="router", daemon=True).start()
    return router


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Route Lago's paths to local functions (loopback only).")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--public-only", action="store_true", help="route as the load balancer does (no bill)")
    parser.add_argument("upstream", nargs="+", help="FUNCTION=URL, e.g. ingest=http://127.0.0.1:8081")
    args = parser.parse_args(argv)
    upstreams = dict(item.split("=", 1) for item in args.upstream)
    router = Router(upstreams, args.port, args.public_only)
    print(f"router {router.url} -> {', '.join(f'{k}={v}' for k, v in upstreams.items())}", flush=True)
    try:
        router.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        router.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
