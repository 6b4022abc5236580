"""Every route family and every method, on `meterline serve`'s app and through each function's
functions-framework test client: a 2xx or a 4xx (never a 5xx), always Lago-shaped JSON,
including the framework's own answers (no route, a path with a newline, a method nobody
serves), HEAD answered as GET without a body, and the local server's own refusals (a 1 MB
URL, too many headers) over a real loopback connection."""

from __future__ import annotations

import http.client
import socket

import orjson
import pytest
from functions_framework import create_app as function_app

from meterline.local.app import create_app as serve_app
from meterline.local.server import MeterlineServer
from tests.support import REPO_ROOT

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT")
ROUTE_NOT_FOUND = {"status": 404, "error": "Not Found", "code": "route_not_found"}
METHOD_NOT_ALLOWED = {"status": 405, "error": "Method Not Allowed", "code": "method_not_allowed"}
URI_TOO_LONG = {"status": 414, "error": "URI Too Long", "code": "uri_too_long"}
UNAUTHORIZED = {"status": 401, "error": "Unauthorized"}

COLLECTION = {"GET", "HEAD", "POST"}
ONE = {"GET", "HEAD"}
# (family, path, methods it answers, the function that serves it)
FAMILIES = [
    ("events", "/api/v1/events?external_subscription_id=sub-1", COLLECTION, "ingest"),
    ("events batch", "/api/v1/events/batch", {"POST"}, "ingest"),
    ("one event", "/api/v1/events/tx-1?external_subscription_id=sub-1", ONE, "ingest"),
    *[(name, f"/api/v1/{name}", COLLECTION, "admin") for name in ("billable_metrics", "plans", "customers", "subscriptions")],
    # One catalog object: GET and HEAD at least; PUT and DELETE are the admin API's to choose
    # (None: only the methods no route serves must answer 405).
    ("one metric", "/api/v1/billable_metrics/tokens", None, "admin"),
    ("one plan", "/api/v1/plans/starter", None, "admin"),
    ("one customer", "/api/v1/customers/acme", None, "admin"),
    ("one subscription", "/api/v1/subscriptions/sub-1", None, "admin"),
]
NEVER_SERVED = {"PATCH", "OPTIONS", "TRACE", "CONNECT"}
# Paths no function serves: 404 for every method, with or without a key.
NO_ROUTE = ["/api/v1/nope", "/api/v1/", "/api/v1", "/", "/favicon.ico", "/api/v1/events/a%0Ab?external_subscription_id=s",
            "/api/v1/customers/a%0Ab"]


@pytest.fixture
def clients(runtime):
    """The local app, and the function that serves each route family."""
    return {
        "serve": serve_app(runtime).test_client(),
        "ingest": function_app("ingest", str(REPO_ROOT / "functions/ingest/main.py")).test_client(),
        "admin": function_app("admin", str(REPO_ROOT / "functions/admin/main.py")).test_client(),
    }


def assert_lago_shaped(resp, method: str) -> dict | None:
    assert resp.headers["Content-Type"] == "application/json", (method, resp.status_code, resp.data[:200])
    assert resp.status_code < 500, (method, resp.data[:200])
    if method == "HEAD":
        assert resp.data == b""
        return None
    body = orjson.loads(resp.data)
    assert isinstance(body, dict)
    if resp.status_code >= 400:
        assert body["status"] == resp.status_code and isinstance(body["error"], str)
        if resp.status_code != 401:  # Lago's 401 is exactly {"status", "error"}
            assert isinstance(body["code"], str) and body["code"]
    return body


def send(client, method, path, key=None, data=b""):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.open(path, method=method, headers=headers, data=data)


@pytest.mark.parametrize("family,path,allowed,function", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_method_on_every_route_family_is_lago_json(clients, api_key, family, path, allowed, function):
    for name in ("serve", function):
        client = clients[name]
        get = send(client, "GET", path, api_key)
        for method in METHODS:
            resp = send(client, method, path, api_key)
            body = assert_lago_shaped(resp, method)
            where = (name, family, method, resp.status_code, body)
            if method == "HEAD":
                # HEAD is GET without the body, where GET is served and where it is not.
                assert resp.status_code == get.status_code, where
                assert resp.headers["Content-Length"] == get.headers["Content-Length"], where
            elif method in (allowed if allowed is not None else ONE):
                assert resp.status_code != 405, where  # a 2xx, or a 4xx about the body or the object
            elif allowed is not None or method in NEVER_SERVED:
                assert resp.status_code == 405 and body == METHOD_NOT_ALLOWED, where
                assert method not in resp.headers.get("Allow", ""), where
            # Without a key, a served route says only 401, whatever the method.
            resp = send(client, method, path)
            body = assert_lago_shaped(resp, method)
            assert resp.status_code == 401 and body in (UNAUTHORIZED, None), (name, family, method)


@pytest.mark.parametrize("name", ["serve", "ingest", "admin"])
@pytest.mark.parametrize("path", NO_ROUTE)
def test_paths_no_function_serves_are_json_404_for_every_method(clients, api_key, name, path):
    for method in METHODS:
        for key in (api_key, None):
            resp = send(clients[name], method, path, key)
            body = assert_lago_shaped(resp, method)
            assert resp.status_code == 404 and body in (ROUTE_NOT_FOUND, None), (method, path, body)


@pytest.mark.parametrize("path", ["/api/v1/events/tx/extra?external_subscription_id=s", "/api/v1/plans/starter/charges"])
def test_nested_paths_below_a_served_route_are_json_404_after_the_key_check(clients, api_key, path):
    for name in ("serve", "ingest" if "events" in path else "admin"):
        for method in METHODS:
            resp = send(clients[name], method, path, api_key)
            assert resp.status_code == 404 and assert_lago_shaped(resp, method) in (ROUTE_NOT_FOUND, None), (name, method)


def test_405_names_the_methods_of_an_events_route(clients, api_key):
    for name in ("serve", "ingest"):
        client = clients[name]
        assert send(client, "DELETE", "/api/v1/events", api_key).headers["Allow"] == "GET, HEAD, POST"
        assert send(client, "GET", "/api/v1/events/batch", api_key).headers["Allow"] == "POST"
        assert send(client, "PUT", "/api/v1/events/tx-1", api_key).headers["Allow"] == "GET, HEAD"


def test_healthz_answers_get_and_head_and_json_405_otherwise(clients):
    client = clients["serve"]
    assert send(client, "GET", "/healthz").get_json() == {"status": "ok"}
    assert send(client, "HEAD", "/healthz").status_code == 200
    for method in ("POST", "OPTIONS", "TRACE", "CONNECT"):
        resp = send(client, method, "/healthz")
        assert resp.status_code == 405 and assert_lago_shaped(resp, method) == METHOD_NOT_ALLOWED
        assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD"}


LIST_PATHS = ["/api/v1/events?external_subscription_id=sub-1&", "/api/v1/plans?", "/api/v1/customers?",
              "/api/v1/billable_metrics?", "/api/v1/subscriptions?"]


@pytest.mark.parametrize("query,field", [("page=²", "page"), ("per_page=¹", "per_page"), ("page=١", "page"),
                                         ("per_page=٣", "per_page"), ("page=" + "9" * 5000, "page"),
                                         ("page=-1", "page"), ("per_page=1.5", "per_page")])
def test_page_arguments_take_ascii_digits_only(clients, api_key, query, field):
    for path in LIST_PATHS:
        function = "ingest" if "events" in path else "admin"
        for name in ("serve", function):
            resp = send(clients[name], "GET", path + query, api_key)
            assert resp.status_code == 422, (name, path, query)
            assert resp.get_json() == {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                                       "error_details": {field: ["invalid_value"]}}


def test_head_of_a_list_is_its_get_without_the_body(clients, api_key):
    client = clients["ingest"]
    get = send(client, "GET", "/api/v1/events?external_subscription_id=sub-1&per_page=5", api_key)
    head = send(client, "HEAD", "/api/v1/events?external_subscription_id=sub-1&per_page=5", api_key)
    assert get.status_code == head.status_code == 200 and get.get_json()["meta"]["total_count"] == 0
    assert head.data == b"" and head.headers["Content-Length"] == str(len(get.data))


@pytest.mark.parametrize("path", ["/api/v1/events/{long}?external_subscription_id=s", "/api/v1/plans/{long}",
                                  "/api/v1/events?external_subscription_id={long}", "/api/v1/nope/{long}"])
def test_a_url_over_the_limit_is_414_json(clients, api_key, path):
    long_path = path.format(long="x" * 1_000_000)
    for name in ("serve", "ingest", "admin"):
        for method in ("GET", "POST", "HEAD"):
            resp = send(clients[name], method, long_path, api_key)
            body = assert_lago_shaped(resp, method)
            assert resp.status_code == 414 and body in (URI_TOO_LONG, None), (name, method)


# ---------------------------------------------------------------------------
# The local server itself, over a real loopback connection
# ---------------------------------------------------------------------------


@pytest.fixture
def server(runtime):
    with MeterlineServer(runtime, worker=False) as running:
        yield running


def request(server, method, path, key=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {key}"} if key else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_the_server_answers_a_1mb_url_with_414_json(server, api_key):
    # Over http.server's 64 KiB request line: refused by the server before the app sees it.
    for method in ("GET", "POST"):
        status, content_type, body = request(server, method, "/api/v1/events/" + "x" * 1_000_000, api_key)
        assert (status, content_type, orjson.loads(body)) == (414, "application/json", URI_TOO_LONG)
    status, content_type, body = request(server, "HEAD", "/api/v1/events/" + "x" * 1_000_000, api_key)
    assert (status, content_type, body) == (414, "application/json", b"")
    # Under it but over the app's limit: the same answer from the app.
    status, content_type, body = request(server, "GET", "/api/v1/plans/" + "x" * 20_000, api_key)
    assert (status, content_type, orjson.loads(body)) == (414, "application/json", URI_TOO_LONG)


def test_the_server_answers_headers_it_refuses_with_431_json(server):
    # http.server reads at most 100 header lines before the app sees the request.
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.") and b" 431 " in status_line
    assert b"Content-Type: application/json" in header_lines
    assert orjson.loads(body) == {"status": 431, "error": "Request Header Fields Too Large",
                                  "code": "request_header_fields_too_large"}


def test_the_server_answers_every_method_in_json(server, api_key):
    for method in METHODS:
        for path, expected_status in (("/api/v1/events?external_subscription_id=s", {"GET": 200, "HEAD": 200, "POST": 400}),
                                      ("/api/v1/", {}), ("/api/v1/events/a%0Ab?external_subscription_id=s", {})):
            status, content_type, body = request(server, method, path, api_key)
            want = expected_status.get(method, 405 if path.startswith("/api/v1/events?") else 404)
            assert (status, content_type) == (want, "application/json"), (method, path, body[:200])
            if method == "HEAD":
                assert body == b""
            else:
                assert orjson.loads(body).get("status", status) == status
