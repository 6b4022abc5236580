"""Property-based fuzz of the routes around billing: invoices, current usage, portal links and
pages, billing runs, and Stripe's webhook with CORRECTLY SIGNED random events; every body also
sent in UTF-16 and UTF-32.

For every answer: never a 5xx (but the webhook's documented 503 for an event ahead of a draft
invoice); JSON in Lago's error shape whoever answered (the portal's page and static files: their
own content type); and the world's invoices never change behind an answer that refused.

Budget: METERLINE_FUZZ_EXAMPLES cases per property (150 in `make test`, 10,000 in `make fuzz`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.local.app import create_app
from meterline.local.worker import drain_once
from tests.fuzz.wire import CALLS, COUNTED, check_answer, quiet_worker_log
from tests.support import embedded_runtime, new_key

FUZZ = settings(
    max_examples=int(os.environ.get("METERLINE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
SECRET = "whsec_fuzz_" + "x" * 24
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
ENCODINGS = ("utf-8", "utf-8", "utf-8", "utf-16", "utf-16-le", "utf-32", "utf-32-be")


class Routes:
    """A runtime with a catalog, two customers (one in a far time zone, one mid-period start),
    events, and invoices from two billing runs: the objects the fuzzed routes name."""

    def __init__(self, base):
        self.runtime = embedded_runtime(base, stripe_webhook_secret=SECRET)
        self.client = create_app(self.runtime).test_client()
        self.key = new_key(self.runtime)
        for body in (
            {"billable_metric": {"code": COUNTED, "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value"}},
            {"billable_metric": {"code": CALLS, "name": "Calls", "aggregation_type": "count_agg"}},
        ):
            self.ok("POST", "billable_metrics", body)
        self.ok("POST", "plans", {"plan": {"code": "fuzz", "name": "Fuzz", "interval": "monthly", "amount_cents": 1000,
                                           "amount_currency": "USD", "charges": [
            {"billable_metric_code": COUNTED, "charge_model": "graduated", "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": 100, "per_unit_amount": "0.01", "flat_amount": "0"},
                {"from_value": 101, "to_value": None, "per_unit_amount": "0.005", "flat_amount": "1"}]}},
            {"billable_metric_code": CALLS, "charge_model": "standard", "properties": {"amount": "0.1"}}]}})
        self.customers = ["acme", "tokyo"]
        self.subscriptions = ["sub_acme", "sub_tokyo"]
        for customer, sub, zone, start in (("acme", "sub_acme", "UTC", "2026-09-01T00:00:00Z"),
                                           ("tokyo", "sub_tokyo", "Asia/Tokyo", "2026-09-17T05:00:00Z")):
            self.ok("POST", "customers", {"customer": {"external_id": customer, "name": customer, "currency": "USD",
                                                       "timezone": zone}})
            self.ok("POST", "subscriptions", {"subscription": {"external_id": sub, "external_customer_id": customer,
                                                               "plan_code": "fuzz", "subscription_at": start}})
        events = [{"transaction_id": f"t{i}", "external_subscription_id": sub, "code": code,
                   "timestamp": 1789000000 + i * 40000, "properties": {"value": str(i * 7)}}
                  for i in range(60) for sub, code in (("sub_acme", COUNTED), ("sub_tokyo", CALLS))]
        for start in range(0, len(events), 100):  # a batch holds at most 100 events
            self.ok("POST", "events/batch", {"events": events[start:start + 100]})
        while drain_once(self.runtime.queue, self.runtime.process.service, batch=100).messages:
            pass
        for as_of in ("2026-10-02T00:00:00Z", "2026-11-02T00:00:00Z"):
            self.ok("POST", "billing_runs", {"as_of": as_of})
        self.invoice_ids = [i["lago_id"] for i in self.ok("GET", "invoices?per_page=100")["invoices"]]
        assert self.invoice_ids, "the world has invoices to fuzz against"
        self.tokens = {c: self.ok("POST", f"customers/{c}/portal_url", None)["customer"]["portal_url"].split("token=")[1]
                       for c in self.customers}
        self.event_ids = itertools.count()

    def ok(self, method: str, path: str, body: Any = None) -> dict:
        resp = self.client.open("/api/v1/" + path, method=method, data=None if body is None else orjson.dumps(body),
                                headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        assert resp.status_code == 200, (method, path, resp.get_data()[:300])
        return resp.get_json()

    def snapshot(self) -> bytes:
        return self.client.get("/api/v1/invoices?per_page=100", headers={"Authorization": f"Bearer {self.key}"}).get_data()


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> Iterator[Routes]:
    with quiet_worker_log():
        made = Routes(tmp_path_factory.mktemp("fuzz-routes"))
        yield made
        made.runtime.adapters.warehouse.close()


# -- strategies ---------------------------------------------------------------------------------

texts = st.text(max_size=12) | st.sampled_from(["", ".", "..", "%2F", "a/b", "\x00", "x" * 300, "\ud800", "²"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3), max_leaves=8)
instants = st.one_of(
    st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)).map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-12-01", "2026-12-01T00:00:00",
                     "2026-12-01T00:00:00+14:00", "yesterday", "", "2026-13-01T00:00:00Z"]),
    json_values,
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None  # a JSON value (sent as JSON text), bytes (sent as they are), or None
    encoding: str = "utf-8"
    auth: str = "key"  # key | none | wrong | portal (the token is in the path)


def _quoted(text: str) -> str:
    # A lone surrogate has no UTF-8: sent as the raw bytes a broken client would send.
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def route_calls(draw) -> Call:
    w = draw(st.sampled_from(["invoice", "invoices", "usage", "portal_url", "page", "billing_run"]))
    method = draw(st.sampled_from(METHODS))
    customer = draw(st.sampled_from(["acme", "tokyo", "nobody"]) | texts)
    sub = draw(st.sampled_from(["sub_acme", "sub_tokyo", "sub_nobody"]) | texts)
    if w == "invoice":
        path = "invoices/" + _quoted(draw(st.sampled_from(ROUTES.invoice_ids or ["x"]) | texts))
    elif w == "invoices":
        query = draw(st.lists(st.tuples(st.sampled_from(["page", "per_page", "external_customer_id", "status",
                                                         "payment_status", "issuing_date_from", "issuing_date_to"]),
                                        texts | st.integers(-5, 10**20).map(str)), max_size=4))
        path = "invoices?" + "&".join(f"{k}={_quoted(v)}" for k, v in query)
    elif w == "usage":
        path = f"customers/{_quoted(customer)}/current_usage?external_subscription_id={_quoted(sub)}"
    elif w == "portal_url":
        path = f"customers/{_quoted(customer)}/portal_url"
    elif w == "page":
        token = draw(st.sampled_from(list(ROUTES.tokens.values())) | texts
                     | st.sampled_from(list(ROUTES.tokens.values())).map(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B")))
        tail = draw(st.sampled_from(["", "/usage", "/invoices", ".json"]) | texts.map(lambda t: "/" + _quoted(t)))
        path = f"/portal/customers/{_quoted(customer)}{tail}?token={_quoted(token)}"
        path = draw(st.sampled_from([path, "/portal/static/portal.css", "/portal/static/portal.js",
                                     "/portal/static/" + _quoted(draw(texts)), "/portal/", "/portal/favicon.ico"]))
    else:
        path = "billing_runs"
    body = draw(st.none() | st.builds(lambda v: {"as_of": v}, instants) | json_values | st.binary(max_size=20))
    return Call(method, path, body, draw(st.sampled_from(ENCODINGS)), draw(st.sampled_from(["key", "key", "none", "wrong"])))


STRIPE_TYPES = ["invoice.payment_succeeded", "invoice.paid", "invoice.payment_failed", "invoice.finalized",
                "invoice.voided", "customer.created", "checkout.session.completed", "invoice.upcoming"]


@st.composite
def stripe_events(draw) -> dict:
    ours = draw(st.sampled_from(ROUTES.invoice_ids + [None]) | texts)
    obj = draw(st.fixed_dictionaries(
        {"object": st.sampled_from(["invoice", "invoice", "customer"]) | json_values},
        optional={"id": st.sampled_from(["in_1", "in_2"]) | json_values,
                  "currency": st.sampled_from(["usd", "USD", "jpy", "", "xx", "xts"]) | json_values,
                  "amount_paid": st.integers(-(2**64), 2**64) | json_values,
                  "amount_due": st.integers(-(2**64), 2**64) | json_values,
                  "status": st.sampled_from(["paid", "open", "void"]) | json_values,
                  "hosted_invoice_url": texts | json_values,
                  "metadata": st.fixed_dictionaries({"meterline_invoice_id": st.just(ours) | json_values}) | json_values}))
    event = draw(st.fixed_dictionaries(
        {"id": st.builds(lambda n: f"evt_fuzz_{n}", st.integers(0, 10**12)) | texts,
         "type": st.sampled_from(STRIPE_TYPES) | texts},
        optional={"created": st.integers(-(2**63), 2**63) | json_values | st.integers(0, 2**33),
                  "data": st.just({"object": obj}) | json_values | st.builds(lambda o: {"object": o}, json_values),
                  "object": st.just("event")}))
    return event


def sign(body: bytes) -> str:
    t = int(time.time())
    return f"t={t},v1={hmac.new(SECRET.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def _encode(call: Call) -> bytes | None:
    if call.body is None:
        return None
    if isinstance(call.body, bytes):
        return call.body
    return json.dumps(call.body).encode(call.encoding, "surrogatepass")


def send(routes: Routes, call: Call):
    url = call.path if call.path.startswith("/") else "/api/v1/" + call.path
    headers = {"Content-Type": "application/json",
               "Authorization": {"key": f"Bearer {routes.key}", "wrong": "Bearer ml_wrong"}.get(call.auth, "")}
    resp = routes.client.open(url, method=call.method, data=_encode(call), headers=headers)
    if url.startswith("/portal/") and resp.mimetype != "application/json":
        # The customer's page and its files, and the page's own answers for a bad link (a person
        # reads those): never a 5xx, and only what a browser renders.
        assert resp.status_code < 500, (call, resp.status_code, resp.get_data()[:300])
        assert resp.mimetype in ("text/html", "text/css", "text/javascript", "image/svg+xml"), (call, resp.mimetype)
        return resp
    check_answer(call.method, url, resp)
    if call.encoding.startswith("utf-16") or call.encoding.startswith("utf-32"):
        # A body in another encoding is never read as if it were UTF-8 JSON and applied.
        assert not (call.method == "POST" and call.path == "billing_runs" and resp.status_code == 200
                    and call.body is not None and not isinstance(call.body, bytes)), call
    return resp


# Filled by the fixture before the strategies draw (they read the world's ids).
ROUTES: Routes


@pytest.fixture(autouse=True, scope="module")
def _world_ids(routes):
    global ROUTES
    ROUTES = routes


@FUZZ
@given(calls=st.lists(st.deferred(route_calls), min_size=1, max_size=4))
def test_billing_invoice_usage_and_portal_routes_never_5xx(routes, calls):
    for call in calls:
        send(routes, call)


@FUZZ
@given(events=st.lists(st.deferred(stripe_events), min_size=1, max_size=3), encoding=st.sampled_from(ENCODINGS))
def test_signed_random_stripe_events_never_5xx_and_refusals_change_nothing(routes, events, encoding):
    for event in events:
        before = routes.snapshot()
        body = json.dumps(event).encode(encoding, "surrogatepass")
        resp = routes.client.post("/api/v1/stripe_webhook", data=body,
                                  headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)})
        status = resp.status_code
        answer = resp.get_json()
        if status == 503:  # an event ahead of a draft invoice: Stripe delivers it again later
            assert answer["code"] == "invoice_not_finalized_yet", answer
            continue
        check_answer("POST", "/api/v1/stripe_webhook", resp)
        if status >= 400:
            assert routes.snapshot() == before, (event, answer)
