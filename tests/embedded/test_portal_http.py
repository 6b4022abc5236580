"""The portal over HTTP, through `meterline serve`'s app and through the `portal` function's
framework test client: the current-usage API in Lago's shape (parsed by the official client's
model), portal links, and the page and its data behind a signed link, with its security:
no key, a tampered, expired or other customer's token get 401/403 and never any data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

import functions_framework
import orjson
import pytest
from lago_python_client.models.customer_usage import CustomerUsageResponse

from meterline.local.app import create_app
from meterline.runtime import set_runtime
from tests.harness.billing import DEC, Billing
from tests.harness.november import EXPECTED, NOV
from tests.support import REPO_ROOT, new_key

AT = NOV + timedelta(days=12, hours=5)
UNAUTHORIZED = {"status": 401, "error": "Unauthorized"}


class Portal:
    """The billing harness's data behind `meterline serve`'s app, the portal's clock at `at`."""

    def __init__(self, tmp_path, at: datetime = AT):
        self.billing = Billing(tmp_path)
        self.runtime = self.billing.runtime
        self.set_clock(at)
        self.client = create_app(self.runtime).test_client()
        self.key = new_key(self.runtime)
        self.auth = {"Authorization": f"Bearer {self.key}"}
        self.billing.admin.upsert_customer({"external_id": "globex", "name": "Globex", "currency": "USD"})

    def set_clock(self, at: datetime) -> None:
        self.runtime.portal.service.clock = lambda: at

    def usage(self, customer="acme", subscription="sub_acme", headers=None):
        return self.client.get(f"/api/v1/customers/{customer}/current_usage?external_subscription_id={subscription}",
                               headers=self.auth if headers is None else headers)

    def link(self, customer="acme") -> str:
        response = self.client.post(f"/api/v1/customers/{customer}/portal_url", headers=self.auth)
        assert response.status_code == 200, response.data
        url = orjson.loads(response.data)["customer"]["portal_url"]
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    def token(self, customer="acme") -> str:
        return self.link(customer).split("token=", 1)[1]


@pytest.fixture
def portal(tmp_path) -> Portal:
    return Portal(tmp_path)


# -- the API ---------------------------------------------------------------------------------------


def test_current_usage_is_lagos_shape_and_the_official_model_parses_it(portal):
    response = portal.usage()
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = orjson.loads(response.data)["customer_usage"]
    parsed = CustomerUsageResponse.parse_obj(body)  # the model lago-python-client returns
    assert (parsed.from_datetime, parsed.to_datetime, parsed.issuing_date) == (
        "2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z", "2026-12-01")
    assert parsed.currency == "USD" and parsed.lago_invoice_id is None
    assert parsed.amount_cents == parsed.total_amount_cents == EXPECTED["total"] - 4900 and parsed.taxes_amount_cents == 0
    tokens = next(c for c in parsed.charges_usage if c.billable_metric.code == "tokens_consumed")
    assert (tokens.units, tokens.events_count, tokens.amount_cents) == ("17000000", 5, 19000)
    assert tokens.billable_metric.aggregation_type == "sum_agg" and tokens.charge.charge_model == "graduated"
    assert [(f.values, f.units, f.amount_cents) for f in tokens.filters] == [
        ({"token_type": ["input"]}, "4000000", 1200),
        ({"token_type": ["output"]}, "12000000", 17500),
        (None, "1000000", 300),  # events matching no filter
    ]
    seats = next(c for c in parsed.charges_usage if c.billable_metric.code == "seats")
    assert (seats.units, seats.amount_cents, seats.filters) == ("1.5", 3000, [])


def test_the_api_needs_a_key(portal):
    for headers in ({}, {"Authorization": "Bearer ml_wrong"}, {"Authorization": portal.key}):
        response = portal.usage(headers=headers)
        assert (response.status_code, orjson.loads(response.data)) == (401, UNAUTHORIZED)
        response = portal.client.post("/api/v1/customers/acme/portal_url", headers=headers)
        assert (response.status_code, orjson.loads(response.data)) == (401, UNAUTHORIZED)


def test_current_usage_refuses_what_it_cannot_answer(portal):
    missing = portal.client.get("/api/v1/customers/acme/current_usage", headers=portal.auth)
    assert missing.status_code == 422
    assert orjson.loads(missing.data)["error_details"] == {"external_subscription_id": ["value_is_mandatory"]}
    assert orjson.loads(portal.usage(subscription="sub_none").data)["code"] == "subscription_not_found"
    assert orjson.loads(portal.usage(customer="globex").data)["code"] == "subscription_not_found"  # not its own
    assert orjson.loads(portal.usage(customer="nobody").data)["code"] == "customer_not_found"
    assert portal.client.post("/api/v1/customers/acme/current_usage?external_subscription_id=sub_acme",
                              headers=portal.auth).status_code == 405


def test_the_other_customer_routes_stay_the_admin_functions(portal):
    response = portal.client.get("/api/v1/customers/acme", headers=portal.auth)
    assert response.status_code == 200 and orjson.loads(response.data)["customer"]["external_id"] == "acme"


def test_portal_url_is_lagos_shape_and_only_for_a_customer_that_exists(portal):
    for method in (portal.client.post, portal.client.get):  # Lago's client sends GET
        response = method("/api/v1/customers/acme/portal_url", headers=portal.auth)
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        url = orjson.loads(response.data)["customer"]["portal_url"]
        assert url.startswith("http://localhost/portal/customers/acme?token=mlp1.")
    response = portal.client.post("/api/v1/customers/nobody/portal_url", headers=portal.auth)
    assert (response.status_code, orjson.loads(response.data)["code"]) == (404, "customer_not_found")
    assert portal.client.delete("/api/v1/customers/acme/portal_url", headers=portal.auth).status_code == 405


# -- the page --------------------------------------------------------------------------------------


def assert_private(response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_page_shows_the_customers_usage_with_a_strict_policy(portal):
    response = portal.client.get(portal.link())
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert_private(response)
    page = response.data.decode()
    assert "<script" in page and "<script>" not in page and "style=" not in page  # no inline script or style
    assert 'data-k="usage" data-cents="22000">$220.00<' in page
    assert 'data-k="invoice" data-cents="26900">$269.00<' in page
    assert "Projection for the full period" in page and ">estimate<" in page
    assert page.count('class="bar"') == 2 * 13  # two charts, November 1..13
    assert "Prepaid credits" in page and 'data-k="credits"' in page


def test_the_pages_data_is_the_same_figures_and_the_fragment(portal):
    token = portal.token()
    response = portal.client.get("/portal/usage/acme", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert_private(response)
    data = orjson.loads(response.data)
    (sub,) = data["subscriptions"]
    api = orjson.loads(portal.usage().data)["customer_usage"]
    assert sub["usage_amount_cents"] == api["amount_cents"] and sub["invoice_amount_cents"] == EXPECTED["total"]
    assert {(line["charge"], line["filter"]): line["amount_cents"] for line in sub["lines"]} == {
        ("seats", None): 3000, ("tokens_consumed", "token_type=input"): 1200,
        ("tokens_consumed", "token_type=output"): 17500, ("tokens_consumed", None): 300}
    assert [len(d["points"]) for d in sub["daily"]] == [13, 13]
    assert 'data-k="usage" data-cents="22000"' in data["html"] and len(data["version"]) == 16


def test_invoices_show_their_status_and_only_a_web_link(portal):
    billing = portal.billing
    billing.run(DEC + timedelta(hours=2))
    (invoice,) = billing.all()
    from dataclasses import replace

    billing.invoices.update(replace(invoice, hosted_invoice_url="https://invoice.stripe.com/i/abc"))
    portal.set_clock(DEC + timedelta(days=3))
    page = portal.client.get(portal.link()).data.decode()
    assert 'href="https://invoice.stripe.com/i/abc"' in page and ">Open<" in page and "$269.00" in page
    (invoice,) = billing.all()
    billing.invoices.update(replace(invoice, hosted_invoice_url="javascript:alert(1)"))
    page = portal.client.get(portal.link()).data.decode()
    assert "javascript:" not in page


def test_customer_text_is_escaped(portal):
    portal.billing.admin.upsert_customer({"external_id": "acme", "name": "<img src=x onerror=alert(1)>", "currency": "USD"})
    page = portal.client.get(portal.link()).data.decode()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_static_files_are_served_by_the_function(portal):
    page = portal.client.get(portal.link()).data.decode()
    for name, kind in (("portal.js", "text/javascript"), ("portal.css", "text/css")):
        url = page.split(f'/portal/static/{name}?v=', 1)[1].split('"', 1)[0]
        response = portal.client.get(f"/portal/static/{name}?v={url}")
        assert response.status_code == 200 and response.mimetype == kind and response.data
    assert portal.client.get("/portal/static/other.js").status_code == 404


# -- security: a token opens one customer's page, while it is valid, and nothing else ----------------


def test_a_token_for_one_customer_cannot_read_another(portal):
    token = portal.token("acme")
    page = portal.client.get(f"/portal/customers/globex?token={token}")
    assert page.status_code == 403 and "Acme" not in page.data.decode() and "$" not in page.data.decode()
    assert_private(page)
    data = portal.client.get("/portal/usage/globex", headers={"Authorization": f"Bearer {token}"})
    assert data.status_code == 403 and orjson.loads(data.data) == {"status": 403, "error": "Forbidden", "code": "forbidden"}
    # ... and globex's own token does not open acme's page either
    assert portal.client.get(f"/portal/customers/acme?token={portal.token('globex')}").status_code == 403


@pytest.mark.parametrize("spoil", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
    lambda t: t.replace(".YWNtZQ.", ".Z2xvYmV4."),  # another customer ("globex") in the signed part
    lambda t: ".".join([*t.split(".")[:2], str(int(t.split(".")[2]) + 3600), t.split(".")[3]]),  # a longer life
    lambda t: "",
    lambda t: "mlp1.YWNtZQ.9999999999.AAAA",
])
def test_a_tampered_token_gets_401_and_no_data(portal, spoil):
    token = spoil(portal.token())
    page = portal.client.get(f"/portal/customers/acme?token={token}")
    assert page.status_code == 401 and "$" not in page.data.decode() and "sub_acme" not in page.data.decode()
    assert_private(page)
    data = portal.client.get("/portal/usage/acme", headers={"Authorization": f"Bearer {token}"})
    assert (data.status_code, orjson.loads(data.data)) == (401, UNAUTHORIZED)


def test_an_expired_token_gets_401(portal):
    link = portal.link()
    lifetime = timedelta(seconds=portal.runtime.settings.portal_link_seconds)
    portal.set_clock(AT + lifetime - timedelta(seconds=1))
    assert portal.client.get(link).status_code == 200
    portal.set_clock(AT + lifetime + timedelta(seconds=2))
    response = portal.client.get(link)
    assert response.status_code == 401 and "expired" in response.data.decode()
    token = link.split("token=", 1)[1]
    assert portal.client.get("/portal/usage/acme", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_page_without_a_token_and_other_paths(portal):
    assert portal.client.get("/portal/customers/acme").status_code == 401
    assert portal.client.get("/portal/usage/acme").status_code == 401
    assert portal.client.get("/portal/").status_code == 404
    assert portal.client.get("/portal/customers/").status_code == 404
    assert portal.client.post(portal.link()).status_code == 405


def test_links_use_the_configured_public_base_url(tmp_path):
    from tests.support import embedded_runtime

    runtime = embedded_runtime(tmp_path, portal_base_url="https://usage.example.com/")
    runtime.admin.service.upsert_customer({"external_id": "acme", "name": "Acme", "currency": "USD"})
    response = create_app(runtime).test_client().post(
        "/api/v1/customers/acme/portal_url", headers={"Authorization": f"Bearer {new_key(runtime)}"})
    assert orjson.loads(response.data)["customer"]["portal_url"].startswith(
        "https://usage.example.com/portal/customers/acme?token=mlp1.")


def test_a_signing_key_survives_a_restart(tmp_path):
    first = Portal(tmp_path)
    link = first.link()
    from tests.support import embedded_runtime

    again = embedded_runtime(tmp_path)  # a new process on the same data dir
    again.portal.service.clock = lambda: AT
    assert create_app(again).test_client().get(link).status_code == 200


# -- the portal function (functions-framework) ---------------------------------------------------


@pytest.fixture
def function(portal):
    set_runtime(portal.runtime)
    try:
        yield functions_framework.create_app("portal", str(REPO_ROOT / "functions/portal/main.py")).test_client()
    finally:
        set_runtime(None)


def test_the_function_serves_the_api_the_page_and_json_errors(portal, function):
    response = function.get("/api/v1/customers/acme/current_usage?external_subscription_id=sub_acme",
                            headers=portal.auth)
    assert response.status_code == 200
    assert orjson.loads(response.data)["customer_usage"]["amount_cents"] == EXPECTED["total"] - 4900
    link = orjson.loads(function.post("/api/v1/customers/acme/portal_url", headers=portal.auth).data)
    path = urlsplit(link["customer"]["portal_url"])
    page = function.get(f"{path.path}?{path.query}")
    assert page.status_code == 200 and 'data-k="usage"' in page.data.decode()
    for path in ("/api/v1/customers/acme", "/api/v1/events", "/favicon.ico"):
        response = function.get(path, headers=portal.auth)
        assert response.status_code == 404 and orjson.loads(response.data)["code"] == "route_not_found"


def test_the_portal_function_loads_only_firestore_and_bigquery(monkeypatch):
    import sys

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_coldstart import measure

    monkeypatch.setenv("METERLINE_PORTAL_SIGNING_KEY", "k" * 32)  # from Secret Manager on GCP
    _, _, sdks = measure("portal", REPO_ROOT / "shared", REPO_ROOT / "functions")
    assert set(sdks.split(",")) == {"firestore", "firestore_v1", "bigquery"}  # catalog, keys, invoices; usage


NOT_CONFIGURED = {"status": 503, "error": "Service Unavailable", "code": "portal_base_url_not_configured",
                  "error_details": {"portal_base_url": ["value_is_mandatory"]}}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[2001:db8::1]:80"])
def test_a_forged_host_header_never_yields_a_link(portal, host):
    response = portal.client.post("/api/v1/customers/acme/portal_url", headers={**portal.auth, "Host": host})
    assert response.status_code == 503
    assert orjson.loads(response.data) == NOT_CONFIGURED
    assert b"token" not in response.data


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
def test_loopback_hosts_are_allowed_by_default(portal, host):
    response = portal.client.post("/api/v1/customers/acme/portal_url", headers={**portal.auth, "Host": host})
    assert response.status_code == 200
    assert orjson.loads(response.data)["customer"]["portal_url"].startswith(f"http://{host}/portal/customers/acme?token=")


def test_an_allowed_host_setting_and_a_base_url_decide_the_link(tmp_path):
    from tests.support import embedded_runtime

    allowed = embedded_runtime(tmp_path / "a", portal_allowed_hosts=["billing.example.com"])
    allowed.admin.service.upsert_customer({"external_id": "acme", "name": "Acme", "currency": "USD"})
    client, auth = create_app(allowed).test_client(), {"Authorization": f"Bearer {new_key(allowed)}"}
    ok = client.post("/api/v1/customers/acme/portal_url", headers={**auth, "Host": "billing.example.com"})
    assert orjson.loads(ok.data)["customer"]["portal_url"].startswith("http://billing.example.com/portal/")
    # The default list is replaced, not extended: loopback is no longer trusted.
    assert client.post("/api/v1/customers/acme/portal_url", headers={**auth, "Host": "localhost"}).status_code == 503

    based = embedded_runtime(tmp_path / "b", portal_base_url="https://usage.example.com")
    based.admin.service.upsert_customer({"external_id": "acme", "name": "Acme", "currency": "USD"})
    response = create_app(based).test_client().post(
        "/api/v1/customers/acme/portal_url",
        headers={"Authorization": f"Bearer {new_key(based)}", "Host": "evil.example"})
    assert orjson.loads(response.data)["customer"]["portal_url"].startswith("https://usage.example.com/portal/")
