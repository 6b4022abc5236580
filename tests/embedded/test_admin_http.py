"""The admin function through functions-framework's test client: Lago's catalog API, every
client mistake with its exact body, and the subscription lifecycle (upgrade, downgrade,
terminate) on the embedded runtime."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from functions_framework import create_app

from tests.support import REPO_ROOT

UNPROCESSABLE = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"}
# lago_ids are uuid5s of (kind, key) as a JSON array in this namespace (core.catalog.lago_id).
CATALOG_NS = uuid.UUID("0c6f2b4e-51a7-4d8e-9a36-7e1f0b9d2c58")


def unprocessable(details):
    return {**UNPROCESSABLE, "error_details": details}


def not_found(resource):
    return {"status": 404, "error": "Not Found", "code": f"{resource}_not_found"}


def missing_root(root):
    return {"status": 400, "error": f"BadRequest: param is missing or the value is empty: {root}", "code": "bad_request",
            "error_details": {root: ["value_is_mandatory"]}}


BAD_JSON = {"status": 400, "error": "BadRequest: the body is not valid JSON", "code": "bad_request",
            "error_details": {"body": ["invalid_json"]}}

TOKENS = {"code": "tokens_consumed", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value",
          "filters": [{"key": "model", "values": ["gpt-4o", "claude"]}, {"key": "token_type", "values": ["input", "output"]}]}
SEATS = {"code": "seats", "name": "Seats", "aggregation_type": "unique_count_agg", "field_name": "user_id", "recurring": True}


def plan_body(code="starter", amount_cents=4900, interval="monthly", **changes):
    body = {
        "code": code, "name": code.title(), "interval": interval, "amount_cents": amount_cents, "amount_currency": "USD",
        "charges": [
            {"billable_metric_code": "seats", "charge_model": "standard", "prorated": True, "properties": {"amount": "20"}},
            {"billable_metric_code": "tokens_consumed", "charge_model": "standard", "properties": {"amount": "0.00002"},
             "filters": [{"values": {"token_type": ["output"]}, "properties": {"amount": "0.00006"}}]},
        ],
    }
    return {k: v for k, v in {**body, **changes}.items() if v is not ...}


def sub_body(**changes):
    body = {"external_customer_id": "acme", "plan_code": "starter", "external_id": "sub-1",
            "subscription_at": "2026-01-01T00:00:00Z"}
    return {k: v for k, v in {**body, **changes}.items() if v is not ...}


@pytest.fixture
def client(runtime):
    return create_app("admin", str(REPO_ROOT / "functions/admin/main.py")).test_client()


class Api:
    def __init__(self, client, key):
        self.client, self.headers = client, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path, body):
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(f"/api/v1/{path}", data=data, headers=self.headers)

    def get(self, path):
        return self.client.get(f"/api/v1/{path}", headers=self.headers)

    def delete(self, path):
        return self.client.delete(f"/api/v1/{path}", headers=self.headers)

    def put(self, path, body):
        return self.client.put(f"/api/v1/{path}", data=orjson.dumps(body), headers=self.headers)

    def ok(self, method, path, body=None):
        resp = getattr(self, method)(path, body) if body is not None else getattr(self, method)(path)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()


@pytest.fixture
def api(client, api_key):
    return Api(client, api_key)


@pytest.fixture
def catalog(api):
    """Two metrics, a 49 USD plan, a cheaper and a dearer one, and a USD customer."""
    api.ok("post", "billable_metrics", {"billable_metric": TOKENS})
    api.ok("post", "billable_metrics", {"billable_metric": SEATS})
    api.ok("post", "plans", {"plan": plan_body()})
    api.ok("post", "plans", {"plan": plan_body("lite", 1900)})
    api.ok("post", "plans", {"plan": plan_body("pro", 19900)})
    api.ok("post", "plans", {"plan": plan_body("euro", 4900, amount_currency="EUR")})
    api.ok("post", "customers", {"customer": {"external_id": "acme", "currency": "USD", "timezone": "UTC"}})
    api.ok("post", "customers", {"customer": {"external_id": "globex", "currency": "USD"}})
    return api


# ---------------------------------------------------------------------------------------------
# Every client mistake, with its exact body
# ---------------------------------------------------------------------------------------------

CASES = [
    # (name, path, body (dict or raw bytes), status, exact body)
    # -- request shape, on every resource
    *[(f"{res} malformed json", res, b'{"x": ', 400, BAD_JSON) for res in ("billable_metrics", "plans", "customers", "subscriptions")],
    ("empty body", "plans", b"", 400, BAD_JSON),
    *[(f"{res} missing root key", res, {"wrong": {}}, 400, missing_root(root))
      for res, root in (("billable_metrics", "billable_metric"), ("plans", "plan"), ("customers", "customer"), ("subscriptions", "subscription"))],
    ("root key null", "plans", {"plan": None}, 400, missing_root("plan")),
    ("json array body", "customers", [{"external_id": "x"}], 400, missing_root("customer")),
    *[(f"{res} root not an object", res, {root: ["x"]}, 422, unprocessable({root: ["invalid_type"]}))
      for res, root in (("billable_metrics", "billable_metric"), ("plans", "plan"), ("customers", "customer"), ("subscriptions", "subscription"))],
    # -- billable metrics
    ("metric missing code and name", "billable_metrics", {"billable_metric": {"aggregation_type": "count_agg"}}, 422,
     unprocessable({"code": ["value_is_mandatory"], "name": ["value_is_mandatory"]})),
    ("metric empty code", "billable_metrics", {"billable_metric": {**TOKENS, "code": ""}}, 422,
     unprocessable({"code": ["value_is_mandatory"]})),
    ("metric code not a string", "billable_metrics", {"billable_metric": {**TOKENS, "code": 5}}, 422,
     unprocessable({"code": ["invalid_type"]})),
    ("metric unknown aggregation", "billable_metrics", {"billable_metric": {**TOKENS, "aggregation_type": "avg_agg"}}, 422,
     unprocessable({"aggregation_type": ["invalid_value"]})),
    ("metric sum without field_name", "billable_metrics", {"billable_metric": {**TOKENS, "field_name": None}}, 422,
     unprocessable({"field_name": ["value_is_mandatory"]})),
    ("metric recurring count", "billable_metrics",
     {"billable_metric": {"code": "calls", "name": "Calls", "aggregation_type": "count_agg", "recurring": True}}, 422,
     unprocessable({"recurring": ["invalid_recurring"]})),
    ("metric filter without values", "billable_metrics",
     {"billable_metric": {**TOKENS, "filters": [{"key": "model", "values": []}]}}, 422,
     unprocessable({"filters.0.values": ["invalid_value"]})),
    ("metric bad rounding", "billable_metrics", {"billable_metric": {**TOKENS, "rounding_function": "truncate"}}, 422,
     unprocessable({"rounding_function": ["invalid_value"]})),
    ("metric unknown field", "billable_metrics", {"billable_metric": {**TOKENS, "expression": "a + b"}}, 422,
     unprocessable({"expression": ["unknown_field"]})),
    ("metric duplicate code", "billable_metrics", {"billable_metric": TOKENS}, 422,
     unprocessable({"code": ["value_already_exist"]})),
    # -- plans
    ("plan missing fields", "plans", {"plan": {"code": "x"}}, 422,
     unprocessable({"name": ["value_is_mandatory"], "interval": ["value_is_mandatory"],
                    "amount_cents": ["value_is_mandatory"], "amount_currency": ["value_is_mandatory"]})),
    ("plan bad interval, amount and currency", "plans",
     {"plan": plan_body("x", interval="daily", amount_cents="ten", amount_currency="XXX")}, 422,
     unprocessable({"interval": ["invalid_value"], "amount_cents": ["invalid_format"], "amount_currency": ["invalid_value"]})),
    ("plan negative amount", "plans", {"plan": plan_body("x", amount_cents=-1)}, 422,
     unprocessable({"amount_cents": ["invalid_value"]})),
    ("plan charges not a list", "plans", {"plan": plan_body("x", charges="seats")}, 422,
     unprocessable({"charges": ["invalid_type"]})),
    ("plan unknown charge model", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "tiered", "properties": {}}])}, 422,
     unprocessable({"charges.0.charge_model": ["invalid_value"]})),
    ("plan charge amount missing", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "standard", "properties": {}}])}, 422,
     unprocessable({"charges.0.properties.amount": ["value_is_mandatory"]})),
    ("plan charge amount as float", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": 0.1}}])},
     422, unprocessable({"charges.0.properties.amount": ["invalid_type"]})),
    ("plan graduated ranges not from 0", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "tokens_consumed", "charge_model": "graduated", "properties": {
         "graduated_ranges": [{"from_value": 1, "to_value": None, "per_unit_amount": "1", "flat_amount": "0"}]}}])}, 422,
     unprocessable({"charges.0.properties.graduated_ranges": ["invalid_graduated_ranges"]})),
    ("plan prorated graduated charge", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "tokens_consumed", "charge_model": "graduated", "prorated": True,
                                       "properties": {"graduated_ranges": [
                                           {"from_value": 0, "to_value": None, "per_unit_amount": "1", "flat_amount": "0"}]}}])},
     422, unprocessable({"charges.0": ["invalid_prorated_charge_model"]})),
    ("plan duplicate charge", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "1"}}] * 2)},
     422, unprocessable({"charges": ["duplicated_charge"]})),
    ("plan filter outside the metric's values", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "tokens_consumed", "charge_model": "standard",
                                       "properties": {"amount": "1"},
                                       "filters": [{"values": {"token_type": ["input"]}, "properties": {"amount": "1"}},
                                                   {"values": {"token_type": ["cached"]}, "properties": {"amount": "1"}},
                                                   {"values": {"region": ["eu"]}, "properties": {"amount": "1"}}]}])},
     422, unprocessable({"charges.0.filters.1.values": ["invalid_value"], "charges.0.filters.2.values": ["invalid_value"]})),
    ("plan on a metric without filters uses filters", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "1"},
                                       "filters": [{"values": {"model": ["claude"]}, "properties": {"amount": "1"}}]}])},
     422, unprocessable({"charges.0.filters.0.values": ["invalid_value"]})),
    ("plan prorates a metric that is not recurring", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "tokens_consumed", "charge_model": "standard", "prorated": True,
                                       "properties": {"amount": "1"}}])},
     422, unprocessable({"charges.0.prorated": ["invalid_billable_metric_or_charge_model"]})),
    ("plan unknown metric", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "gpu_hours", "charge_model": "standard", "properties": {"amount": "1"}}])},
     404, not_found("billable_metric")),
    ("plan metric by lago id only", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_id": "4f0c...", "charge_model": "standard", "properties": {"amount": "1"}}])},
     404, not_found("billable_metric")),
    ("plan duplicate code", "plans", {"plan": plan_body()}, 422, unprocessable({"code": ["value_already_exist"]})),
    # -- customers
    ("customer missing external_id", "customers", {"customer": {"name": "Acme"}}, 422,
     unprocessable({"external_id": ["value_is_mandatory"]})),
    ("customer empty external_id", "customers", {"customer": {"external_id": ""}}, 422,
     unprocessable({"external_id": ["value_is_mandatory"]})),
    ("customer bad fields", "customers",
     {"customer": {"external_id": "x", "email": 5, "currency": "usd", "timezone": "Mars/Olympus", "country": "fr",
                   "net_payment_term": -1, "customer_type": "robot", "billing_configuration": "stripe"}}, 422,
     unprocessable({"email": ["invalid_type"], "customer_type": ["invalid_value"], "currency": ["invalid_value"],
                    "timezone": ["invalid_timezone"], "country": ["invalid_format"], "net_payment_term": ["invalid_value"],
                    "billing_configuration": ["invalid_type"]})),
    ("customer unknown collection method", "customers",
     {"customer": {"external_id": "x", "billing_configuration": {"collection_method": "by_pigeon"}}}, 422,
     unprocessable({"billing_configuration": ["invalid_value"]})),
    ("customer unknown field", "customers", {"customer": {"external_id": "x", "vat_rate": 20}}, 422,
     unprocessable({"vat_rate": ["unknown_field"]})),
    ("customer currency change with a live subscription", "customers", {"customer": {"external_id": "globex", "currency": "EUR"}},
     422, unprocessable({"currency": ["currencies_does_not_match"]})),
    # -- subscriptions
    ("subscription missing fields", "subscriptions", {"subscription": {}}, 422,
     unprocessable({"external_customer_id": ["value_is_mandatory"], "plan_code": ["value_is_mandatory"],
                    "external_id": ["value_is_mandatory"]})),
    ("subscription bad fields", "subscriptions",
     {"subscription": sub_body(billing_time="weekly", subscription_at="yesterday", external_id=7)}, 422,
     unprocessable({"external_id": ["invalid_type"], "billing_time": ["invalid_value"], "subscription_at": ["invalid_format"]})),
    ("subscription naive datetime", "subscriptions", {"subscription": sub_body(subscription_at="2026-01-01T00:00:00")}, 422,
     unprocessable({"subscription_at": ["invalid_format"]})),
    ("subscription ends before it starts", "subscriptions",
     {"subscription": sub_body(ending_at="2025-12-31T00:00:00Z")}, 422, unprocessable({"ending_at": ["invalid_ending_at"]})),
    ("subscription fields only meterline sets", "subscriptions",
     {"subscription": sub_body(status="terminated", next_plan_code="pro")}, 422,
     unprocessable({"status": ["unknown_field"], "next_plan_code": ["unknown_field"]})),
    ("subscription unknown customer", "subscriptions", {"subscription": sub_body(external_customer_id="initech")}, 404,
     not_found("customer")),
    ("subscription unknown plan", "subscriptions", {"subscription": sub_body(plan_code="enterprise")}, 404, not_found("plan")),
    ("subscription plan in another currency", "subscriptions", {"subscription": sub_body(plan_code="euro")}, 422,
     unprocessable({"currency": ["currencies_does_not_match"]})),
    ("subscription external_id of another customer", "subscriptions",
     {"subscription": sub_body(external_customer_id="acme", external_id="globex-sub")}, 422,
     unprocessable({"external_id": ["value_already_exist"]})),
]


@pytest.mark.parametrize("name,path,body,status,expected", CASES, ids=[c[0] for c in CASES])
def test_client_mistakes_get_exact_lago_bodies_and_change_nothing(catalog, runtime, name, path, body, status, expected):
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_customer_id="globex", external_id="globex-sub")})
    before = _snapshot(runtime)
    resp = catalog.post(path, body)
    assert resp.status_code == status
    assert resp.get_json() == expected
    assert _snapshot(runtime) == before


def _snapshot(runtime):
    """Everything stored, timestamps included (a refused request must not touch updated_at)."""
    store = runtime.adapters.catalog
    return (
        [m.to_document() for m in store.list_billable_metrics()[0]],
        [p.to_document() for p in store.list_plans()[0]],
        [c.to_document() for c in store.list_customers()[0]],
        [s.to_lago() for s in store.list_subscriptions()],
    )


QUERY_CASES = [
    ("page zero and per_page too big", "get", "plans?page=0&per_page=101", 422,
     unprocessable({"page": ["invalid_value"], "per_page": ["invalid_value"]})),
    ("page not a number", "get", "customers?page=two", 422, unprocessable({"page": ["invalid_value"]})),
    ("list bad status", "get", "subscriptions?status[]=active&status[]=paused", 422, unprocessable({"status": ["invalid_value"]})),
    ("get bad status", "get", "subscriptions/sub-1?status=paused", 422, unprocessable({"status": ["invalid_value"]})),
    ("terminate terminated", "delete", "subscriptions/sub-1?status=terminated", 422, unprocessable({"status": ["invalid_value"]})),
    ("unknown metric", "get", "billable_metrics/gpu_hours", 404, not_found("billable_metric")),
    ("unknown plan", "get", "plans/enterprise", 404, not_found("plan")),
    ("unknown customer", "get", "customers/initech", 404, not_found("customer")),
    ("unknown subscription", "get", "subscriptions/sub-404", 404, not_found("subscription")),
    ("terminate unknown subscription", "delete", "subscriptions/sub-404", 404, not_found("subscription")),
    ("no pending record to cancel", "delete", "subscriptions/sub-1?status=pending", 404, not_found("subscription")),
    ("nested route", "get", "plans/starter/charges", 404, not_found("route")),
    ("unknown collection", "get", "coupons", 404, not_found("route")),
]


@pytest.mark.parametrize("name,method,path,status,expected", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_bad_queries_and_missing_objects(catalog, name, method, path, status, expected):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    resp = getattr(catalog, method)(path)
    assert resp.status_code == status
    assert resp.get_json() == expected


# Lago has PUT and DELETE on one metric, plan or subscription, DELETE (no PUT) on one customer.
@pytest.mark.parametrize("method,path", [("put", "plans"), ("delete", "plans"), ("patch", "customers"),
                                         ("patch", "plans/starter"), ("post", "customers/acme"), ("put", "customers/acme"),
                                         ("post", "subscriptions/sub-1")])
def test_wrong_method_is_405(catalog, method, path):
    resp = getattr(catalog.client, method)(f"/api/v1/{path}", headers=catalog.headers)
    assert resp.status_code == 405
    assert resp.get_json() == {"status": 405, "error": "Method Not Allowed", "code": "method_not_allowed"}


@pytest.mark.parametrize("path", ["billable_metrics", "plans", "customers", "subscriptions", "plans/starter"])
@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong-key", "Basic dXNlcjpwYXNz"])
def test_missing_or_bad_api_key_is_401(client, runtime, path, header):
    headers = {} if header is None else {"Authorization": header}
    for resp in (client.get(f"/api/v1/{path}", headers=headers),
                 client.post(f"/api/v1/{path}", data=b"{not json", headers=headers)):
        assert resp.status_code == 401
        assert resp.get_json() == {"status": 401, "error": "Unauthorized"}
    assert runtime.adapters.catalog.list_plans() == ([], 0)


def test_oversized_body_is_413(api):
    resp = api.post("customers", {"customer": {"external_id": "x", "name": "n" * 300_000}})
    assert resp.status_code == 413
    assert resp.get_json()["error_details"] == {"body": ["too_large"]}


# ---------------------------------------------------------------------------------------------
# Success bodies
# ---------------------------------------------------------------------------------------------


ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_metric_create_get_and_list_bodies(api):
    created = api.ok("post", "billable_metrics", {"billable_metric": TOKENS})
    stamp = created["billable_metric"]["created_at"]
    assert ISO_MS.match(stamp) and _near_now(stamp)
    expected = {**TOKENS, "lago_id": str(uuid.uuid5(CATALOG_NS, '["billable_metric", "tokens_consumed"]')),
                "description": None, "recurring": False, "rounding_function": None, "rounding_precision": None,
                "weighted_interval": None, "expression": None, "created_at": stamp}
    assert created == {"billable_metric": expected}
    assert api.ok("get", "billable_metrics/tokens_consumed") == {"billable_metric": expected}
    api.ok("post", "billable_metrics", {"billable_metric": SEATS})
    listed = api.ok("get", "billable_metrics?per_page=1&page=2")
    assert [m["code"] for m in listed["billable_metrics"]] == ["tokens_consumed"]
    assert listed["meta"] == {"current_page": 2, "next_page": None, "prev_page": 1, "total_pages": 2, "total_count": 2}


def test_plan_create_keeps_decimal_text_and_lists(catalog):
    plan = catalog.ok("get", "plans/starter")["plan"]
    assert plan["amount_cents"] == 4900 and plan["interval"] == "monthly"
    tokens = plan["charges"][1]
    assert tokens["properties"] == {"amount": "0.00002"}
    assert tokens["filters"] == [{"invoice_display_name": None, "properties": {"amount": "0.00006"},
                                  "values": {"token_type": ["output"]}}]
    listed = catalog.ok("get", "plans")
    assert [p["code"] for p in listed["plans"]] == ["euro", "lite", "pro", "starter"]
    assert listed["meta"]["total_count"] == 4


def test_customer_upsert_is_idempotent_and_keeps_fields_not_sent(api):
    body = {"external_id": "acme", "name": "Acme", "email": "billing@acme.test", "currency": "USD",
            "timezone": "Europe/Paris", "billing_configuration": {"payment_provider": "stripe"}}
    first = api.ok("post", "customers", {"customer": body})
    again = api.ok("post", "customers", {"customer": body})
    assert first == again
    assert first["customer"]["timezone"] == "Europe/Paris"
    updated = api.ok("post", "customers", {"customer": {"external_id": "acme", "email": "ap@acme.test"}})["customer"]
    assert updated["email"] == "ap@acme.test"
    assert updated["name"] == "Acme" and updated["timezone"] == "Europe/Paris" and updated["currency"] == "USD"
    assert api.ok("get", "customers/acme") == {"customer": updated}
    assert api.ok("get", "customers")["meta"]["total_count"] == 1


def test_customer_without_currency_takes_its_first_plans(catalog):
    catalog.ok("post", "customers", {"customer": {"external_id": "hooli"}})
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_customer_id="hooli", external_id="h-1")})
    assert catalog.ok("get", "customers/hooli")["customer"]["currency"] == "USD"


def test_subscription_create_is_idempotent(catalog):
    first = catalog.ok("post", "subscriptions", {"subscription": sub_body(name="Main")})["subscription"]
    assert _near_now(first["created_at"]) and first["current_billing_period_started_at"] is not None
    today = datetime.now(UTC)
    assert first == {
        "lago_id": str(uuid.uuid5(CATALOG_NS, '["subscription", "sub-1", "0"]')), "created_at": first["created_at"],
        "external_id": "sub-1", "external_customer_id": "acme", "plan_code": "starter", "name": "Main",
        "billing_time": "calendar", "subscription_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:00Z",
        "ending_at": None, "terminated_at": None, "canceled_at": None, "status": "active",
        "previous_plan_code": None, "next_plan_code": None, "downgrade_plan_date": None,
        "lago_customer_id": str(uuid.uuid5(CATALOG_NS, '["customer", "acme"]')),
        "plan_amount_cents": 4900, "plan_amount_currency": "USD", "subscription_date": "2026-01-01",
        "trial_ended_at": None,
        "current_billing_period_started_at": f"{today:%Y-%m}-01T00:00:00Z",
        "current_billing_period_ending_at": first["current_billing_period_ending_at"],
        "on_termination_credit_note": None, "on_termination_invoice": None, "payment_method": None,
        "applied_invoice_custom_sections": [], "consolidate_invoice": None, "billing_entity_code": None,
        "purchase_order_number": None, "cancellation_reason": None, "activated_at": None, "activation_rules": [],
    }
    again = catalog.ok("post", "subscriptions", {"subscription": sub_body(name="Main")})["subscription"]
    assert again == first
    assert len(catalog.ok("get", "subscriptions?external_customer_id=acme")["subscriptions"]) == 1


def test_subscription_in_the_future_is_pending_until_it_starts(catalog):
    later = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    sub = catalog.ok("post", "subscriptions", {"subscription": sub_body(subscription_at=later.isoformat())})["subscription"]
    assert sub["status"] == "pending" and sub["started_at"] is None
    assert catalog.get("subscriptions/sub-1").status_code == 404  # Lago's GET shows the active record
    assert catalog.ok("get", "subscriptions/sub-1?status=pending")["subscription"]["plan_code"] == "starter"
    # A plan change before the start just moves the pending record to the new plan.
    changed = catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite", subscription_at=later.isoformat())})
    assert changed["subscription"]["plan_code"] == "lite" and changed["subscription"]["status"] == "pending"
    canceled = catalog.ok("delete", "subscriptions/sub-1?status=pending")["subscription"]
    assert canceled["status"] == "canceled" and canceled["canceled_at"] is not None


def _near_now(text):
    return abs(datetime.fromisoformat(text.replace("Z", "+00:00")) - datetime.now(UTC)) < timedelta(seconds=30)


def test_upgrade_takes_effect_at_once(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    new = catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="pro")})["subscription"]
    assert new["plan_code"] == "pro" and new["status"] == "active" and new["previous_plan_code"] == "starter"
    assert _near_now(new["started_at"])
    assert new["subscription_at"] == "2026-01-01T00:00:00Z"  # the anniversary carries over
    old = catalog.ok("get", "subscriptions/sub-1?status=terminated")["subscription"]
    assert old["plan_code"] == "starter" and old["next_plan_code"] == "pro"
    assert old["terminated_at"] == new["started_at"]
    assert catalog.ok("get", "subscriptions/sub-1")["subscription"] == new
    # A retry of the same upgrade changes nothing.
    assert catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="pro")})["subscription"] == new
    listed = catalog.ok("get", "subscriptions?external_customer_id=acme&status[]=active&status[]=terminated")
    assert [(s["plan_code"], s["status"]) for s in listed["subscriptions"]] == [("starter", "terminated"), ("pro", "active")]


def test_downgrade_waits_for_the_end_of_the_period(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    current = catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite")})["subscription"]
    today = datetime.now(UTC).date()
    first_of_next_month = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    assert current["plan_code"] == "starter" and current["status"] == "active"
    assert current["next_plan_code"] == "lite"
    assert current["downgrade_plan_date"] == first_of_next_month.isoformat()
    pending = catalog.ok("get", "subscriptions/sub-1?status=pending")["subscription"]
    assert pending["plan_code"] == "lite" and pending["previous_plan_code"] == "starter" and pending["started_at"] is None
    # Retrying the downgrade is idempotent; upgrading instead cancels the scheduled downgrade.
    assert catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite")})["subscription"] == current
    upgraded = catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="pro")})["subscription"]
    assert upgraded["plan_code"] == "pro" and upgraded["status"] == "active"
    everything = catalog.ok("get", "subscriptions?status[]=active&status[]=pending&status[]=terminated&status[]=canceled")
    assert [(s["plan_code"], s["status"], s["next_plan_code"]) for s in everything["subscriptions"]] == [
        ("starter", "terminated", "pro"), ("lite", "canceled", None), ("pro", "active", None)]


def test_terminate_ends_the_subscription_and_cancels_a_scheduled_downgrade(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite")})
    ended = catalog.ok("delete", "subscriptions/sub-1")["subscription"]
    assert ended["status"] == "terminated" and _near_now(ended["terminated_at"])
    assert ended["next_plan_code"] is None and ended["downgrade_plan_date"] is None
    assert catalog.get("subscriptions/sub-1").status_code == 404
    assert catalog.ok("get", "subscriptions/sub-1?status=canceled")["subscription"]["plan_code"] == "lite"
    assert catalog.delete("subscriptions/sub-1").status_code == 404  # nothing active left to terminate
    assert catalog.ok("get", "subscriptions?external_customer_id=acme") == {
        "subscriptions": [], "meta": {"current_page": 1, "next_page": None, "prev_page": None, "total_pages": 0, "total_count": 0}}
    # The customer's currency is free again once nothing is live.
    assert catalog.ok("post", "customers", {"customer": {"external_id": "acme", "currency": "EUR"}})["customer"]["currency"] == "EUR"


def test_canceling_a_scheduled_downgrade_keeps_the_current_plan(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite")})
    canceled = catalog.ok("delete", "subscriptions/sub-1?status=pending")["subscription"]
    assert (canceled["plan_code"], canceled["status"]) == ("lite", "canceled")
    current = catalog.ok("get", "subscriptions/sub-1")["subscription"]
    assert (current["plan_code"], current["next_plan_code"], current["downgrade_plan_date"]) == ("starter", None, None)


def test_subscription_list_filters_by_customer(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_id="a-2")})
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_id="a-1")})
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_customer_id="globex", external_id="g-1")})
    assert [s["external_id"] for s in catalog.ok("get", "subscriptions?external_customer_id=acme")["subscriptions"]] == ["a-1", "a-2"]
    assert [s["external_id"] for s in catalog.ok("get", "subscriptions")["subscriptions"]] == ["a-1", "a-2", "g-1"]
    assert catalog.ok("get", "subscriptions?external_customer_id=nobody")["subscriptions"] == []


# ---------------------------------------------------------------------------------------------
# Lago ids, timestamps, nulls, updates and deletes
# ---------------------------------------------------------------------------------------------


def lago_uuid(*name):
    return str(uuid.uuid5(CATALOG_NS, orjson.dumps(list(name)).decode().replace('","', '", "')))


def test_every_answer_carries_stable_lago_ids_and_stored_timestamps(catalog):
    plan = catalog.ok("get", "plans/starter")["plan"]
    assert plan["lago_id"] == lago_uuid("plan", "starter")
    seats, tokens = plan["charges"]
    assert seats["lago_id"] == lago_uuid("charge", "starter", "seats")
    assert seats["lago_billable_metric_id"] == catalog.ok("get", "billable_metrics/seats")["billable_metric"]["lago_id"]
    assert seats["created_at"] == plan["created_at"] and seats["taxes"] == [] and "billable_metric_id" not in seats
    customer = catalog.ok("get", "customers/acme")["customer"]
    assert customer["lago_id"] == lago_uuid("customer", "acme")
    assert customer["applicable_timezone"] == "UTC" and customer["created_at"] == customer["updated_at"]
    # Read again later: the same ids and times (stored, not made at read time).
    assert catalog.ok("get", "plans/starter")["plan"] == plan
    assert catalog.ok("get", "customers")["customers"][0] == customer


def test_customer_updated_at_moves_only_on_a_change(catalog, runtime):
    first = catalog.ok("get", "customers/acme")["customer"]
    same = catalog.ok("post", "customers", {"customer": {"external_id": "acme", "currency": "USD"}})["customer"]
    assert same == first  # nothing changed: nothing written
    changed = catalog.ok("post", "customers", {"customer": {"external_id": "acme", "name": "Acme"}})["customer"]
    assert changed["created_at"] == first["created_at"] and changed["updated_at"] > first["updated_at"]
    assert runtime.adapters.catalog.get_customer("acme").to_document()["updated_at"] == changed["updated_at"]


def test_plan_charges_may_name_their_metric_by_lago_id(catalog, runtime):
    seats_id = catalog.ok("get", "billable_metrics/seats")["billable_metric"]["lago_id"]
    body = plan_body("by_id", charges=[{"billable_metric_id": seats_id, "charge_model": "standard", "properties": {"amount": "3"}}])
    created = catalog.ok("post", "plans", {"plan": body})["plan"]
    assert created["charges"][0]["billable_metric_code"] == "seats"
    assert created["charges"][0]["lago_billable_metric_id"] == seats_id
    assert runtime.adapters.catalog.get_plan("by_id").charges[0].billable_metric_code == "seats"  # stored by code
    other = catalog.ok("get", "billable_metrics/tokens_consumed")["billable_metric"]["lago_id"]
    mixed = plan_body("mixed", charges=[{"billable_metric_id": other, "billable_metric_code": "seats", "charge_model": "standard",
                                         "properties": {"amount": "3"}}])
    resp = catalog.post("plans", {"plan": mixed})
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"charges.0.billable_metric_id": ["invalid_value"]}))


def test_nulls_and_lago_neutral_options_are_accepted(catalog):
    metric = catalog.ok("post", "billable_metrics", {"billable_metric": {
        "code": "calls", "name": "Calls", "aggregation_type": "count_agg", "field_name": None, "description": None,
        "recurring": None, "filters": None, "rounding_function": None, "rounding_precision": None,
        "weighted_interval": None, "expression": None}})["billable_metric"]
    assert (metric["recurring"], metric["filters"]) == (False, [])
    plan = catalog.ok("post", "plans", {"plan": {
        **plan_body("nulls", charges=[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"},
                                       "filters": None, "min_amount_cents": None, "pay_in_advance": None, "prorated": None,
                                       "invoiceable": None, "tax_codes": None, "regroup_paid_fees": None,
                                       "accepts_target_wallet": False, "cascade_updates": None}]),
        "description": None, "trial_period": None, "pay_in_advance": None, "tax_codes": None,
        "bill_charges_monthly": None, "minimum_commitment": None, "usage_thresholds": [], "metadata": None}})["plan"]
    assert (plan["trial_period"], plan["pay_in_advance"], plan["charges"][0]["min_amount_cents"]) == (0, False, 0)
    customer = catalog.ok("post", "customers", {"customer": {
        "external_id": "nully", "timezone": None, "metadata": None, "billing_configuration": None, "logo_url": None,
        "integration_customers": None, "finalize_zero_amount_invoice": "inherit"}})["customer"]
    assert customer["timezone"] == "UTC" and customer["metadata"] == []
    sub = catalog.ok("post", "subscriptions", {"subscription": sub_body(
        external_customer_id="nully", plan_code="nulls", billing_time=None, name=None, ending_at=None,
        plan_overrides=None, consolidate_invoice=None)})["subscription"]
    assert sub["billing_time"] == "calendar"


NON_NEUTRAL_CASES = [
    ("metric with an expression", "billable_metrics",
     {"billable_metric": {**TOKENS, "code": "x", "expression": "a + b"}}, {"expression": ["unknown_field"]}),
    ("plan billed monthly on a yearly interval", "plans",
     {"plan": plan_body("x", interval="yearly", bill_charges_monthly=True)}, {"bill_charges_monthly": ["unknown_field"]}),
    ("charge regrouping paid fees", "plans",
     {"plan": plan_body("x", charges=[{"billable_metric_code": "seats", "charge_model": "standard",
                                       "properties": {"amount": "1"}, "regroup_paid_fees": "invoice"}])},
     {"charges.0.regroup_paid_fees": ["unknown_field"]}),
    ("subscription with plan overrides", "subscriptions",
     {"subscription": sub_body(plan_overrides={"amount_cents": 1})}, {"plan_overrides": ["unknown_field"]}),
    ("customer sending its own created_at", "customers",
     {"customer": {"external_id": "x", "created_at": "2026-01-01T00:00:00Z"}}, {"created_at": ["unknown_field"]}),
]


@pytest.mark.parametrize("name,path,body,details", NON_NEUTRAL_CASES, ids=[c[0] for c in NON_NEUTRAL_CASES])
def test_lago_options_meterline_lacks_are_refused_unless_neutral(catalog, name, path, body, details):
    resp = catalog.post(path, body)
    assert (resp.status_code, resp.get_json()) == (422, unprocessable(details))


def test_metric_update_and_delete(catalog, runtime):
    before = catalog.ok("get", "billable_metrics/tokens_consumed")["billable_metric"]
    updated = catalog.ok("put", "billable_metrics/tokens_consumed",
                         {"billable_metric": {"name": "LLM tokens", "description": "all models"}})["billable_metric"]
    assert (updated["name"], updated["description"], updated["field_name"]) == ("LLM tokens", "all models", "value")
    assert (updated["lago_id"], updated["created_at"]) == (before["lago_id"], before["created_at"])
    stored = runtime.adapters.catalog.get_billable_metric("tokens_consumed")
    assert stored.name == "LLM tokens" and stored.updated_at > stored.created_at
    # Used by plans: what units are computed from is fixed, and filters must keep charge filters valid.
    for body, details in [({"field_name": "tokens"}, {"field_name": ["billable_metric_in_use"]}),
                          ({"filters": [{"key": "model", "values": ["gpt-4o"]}]}, {"filters": ["billable_metric_in_use"]}),
                          ({"code": "renamed"}, {"code": ["value_is_immutable"]}),
                          ({"aggregation_type": "avg_agg"}, {"aggregation_type": ["invalid_value"]})]:
        resp = catalog.put("billable_metrics/tokens_consumed", {"billable_metric": body})
        assert (resp.status_code, resp.get_json()) == (422, unprocessable(details)), body
    wider = {"filters": [*TOKENS["filters"], {"key": "region", "values": ["eu"]}]}
    assert len(catalog.ok("put", "billable_metrics/tokens_consumed", {"billable_metric": wider})["billable_metric"]["filters"]) == 3
    resp = catalog.delete("billable_metrics/tokens_consumed")
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"base": ["billable_metric_in_use"]}))
    catalog.ok("post", "billable_metrics", {"billable_metric": {"code": "spare", "name": "Spare", "aggregation_type": "count_agg"}})
    deleted = catalog.ok("delete", "billable_metrics/spare")["billable_metric"]
    assert deleted["code"] == "spare" and deleted["lago_id"] == lago_uuid("billable_metric", "spare")
    assert catalog.get("billable_metrics/spare").get_json() == not_found("billable_metric")
    assert catalog.delete("billable_metrics/spare").get_json() == not_found("billable_metric")
    assert catalog.put("billable_metrics/spare", {"billable_metric": {"name": "x"}}).get_json() == not_found("billable_metric")


def test_plan_update_keeps_charges_named_by_lago_id_and_delete_refuses_a_plan_in_use(catalog, runtime):
    plan = catalog.ok("get", "plans/lite")["plan"]
    seats, tokens = plan["charges"]
    # As Lago's client sends it: every charge by lago id, its metric by lago id.
    charges = [{"id": seats["lago_id"], "billable_metric_id": seats["lago_billable_metric_id"], "charge_model": "standard",
                "properties": {"amount": "25"}}]
    updated = catalog.ok("put", "plans/lite", {"plan": {"amount_cents": 2900, "charges": charges}})["plan"]
    assert updated["amount_cents"] == 2900 and updated["name"] == "Lite"
    [charge] = updated["charges"]
    assert (charge["lago_id"], charge["properties"], charge["prorated"]) == (seats["lago_id"], {"amount": "25"}, True)
    assert updated["created_at"] == plan["created_at"]
    assert [c.ref for c in runtime.adapters.catalog.get_plan("lite").charges] == ["seats"]
    resp = catalog.put("plans/lite", {"plan": {"code": "lite2"}})
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"code": ["value_is_immutable"]}))
    catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="lite")})
    resp = catalog.put("plans/lite", {"plan": {"interval": "yearly", "amount_currency": "EUR"}})
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"interval": ["plan_in_use"], "amount_currency": ["plan_in_use"]}))
    resp = catalog.delete("plans/lite")
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"base": ["plan_in_use"]}))
    catalog.ok("delete", "subscriptions/sub-1")
    resp = catalog.delete("plans/lite")  # a terminated record still has a period to invoice
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"base": ["plan_in_use"]}))
    assert catalog.ok("delete", "plans/euro")["plan"]["code"] == "euro"
    assert catalog.get("plans/euro").get_json() == not_found("plan")


def test_customer_delete(catalog):
    catalog.ok("post", "subscriptions", {"subscription": sub_body()})
    resp = catalog.delete("customers/acme")
    assert (resp.status_code, resp.get_json()) == (422, unprocessable({"base": ["customer_in_use"]}))
    deleted = catalog.ok("delete", "customers/globex")["customer"]
    assert deleted["external_id"] == "globex" and deleted["lago_id"] == lago_uuid("customer", "globex")
    assert catalog.get("customers/globex").get_json() == not_found("customer")
    assert catalog.delete("customers/globex").get_json() == not_found("customer")


def test_subscription_update(catalog):
    created = catalog.ok("post", "subscriptions", {"subscription": sub_body()})["subscription"]
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    updated = catalog.ok("put", "subscriptions/sub-1", {"subscription": {"name": "Renamed", "ending_at": later.isoformat()}})
    assert (updated["subscription"]["name"], updated["subscription"]["lago_id"]) == ("Renamed", created["lago_id"])
    assert updated["subscription"]["ending_at"] == f"{later:%Y-%m-%dT%H:%M:%SZ}"
    # The client may send back the fields it created the subscription with.
    same = catalog.ok("put", "subscriptions/sub-1", {"subscription": sub_body(name="Renamed", ending_at=later.isoformat())})
    assert same == updated
    for body, details in [({"plan_code": "pro"}, {"plan_code": ["value_is_immutable"]}),
                          ({"ending_at": "2025-01-01T00:00:00Z"}, {"ending_at": ["invalid_ending_at"]}),
                          ({"subscription_at": "2026-02-01T00:00:00Z"}, {"subscription_at": ["value_is_immutable"]}),
                          ({"name": 5}, {"name": ["invalid_type"]})]:
        resp = catalog.put("subscriptions/sub-1", {"subscription": body})
        assert (resp.status_code, resp.get_json()) == (422, unprocessable(details)), body
    assert catalog.put("subscriptions/sub-404", {"subscription": {"name": "x"}}).get_json() == not_found("subscription")
    # A pending record's start may move.
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    catalog.ok("post", "subscriptions", {"subscription": sub_body(external_id="sub-2", subscription_at=start.isoformat())})
    moved = catalog.ok("put", "subscriptions/sub-2?status=pending",
                       {"subscription": {"subscription_at": (start + timedelta(days=1)).isoformat()}})["subscription"]
    assert moved["status"] == "pending" and moved["subscription_at"] == f"{start + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"


def test_each_record_of_a_plan_change_has_its_own_lago_id(catalog):
    first = catalog.ok("post", "subscriptions", {"subscription": sub_body()})["subscription"]
    upgraded = catalog.ok("post", "subscriptions", {"subscription": sub_body(plan_code="pro")})["subscription"]
    old = catalog.ok("get", "subscriptions/sub-1?status=terminated")["subscription"]
    assert upgraded["lago_id"] == lago_uuid("subscription", "sub-1", "1") != first["lago_id"] == old["lago_id"]
    assert upgraded["created_at"] >= first["created_at"]


# ---------------------------------------------------------------------------------------------
# Wiring: ingest's numeric check and `meterline serve`
# ---------------------------------------------------------------------------------------------


def test_a_new_sum_metric_makes_ingest_check_its_field_at_once(api, api_key, runtime):
    ingest = create_app("ingest", str(REPO_ROOT / "functions/ingest/main.py")).test_client()
    event = {"transaction_id": "t1", "external_subscription_id": "sub-1", "code": "tokens_consumed",
             "timestamp": 1767225600, "properties": {"value": "lots"}}

    def post_event():
        return ingest.post("/api/v1/events", data=orjson.dumps({"event": event}), headers={"Authorization": f"Bearer {api_key}"})

    assert post_event().status_code == 200  # no metric yet: nothing to check against
    api.ok("post", "billable_metrics", {"billable_metric": TOKENS})
    resp = post_event()
    assert resp.status_code == 422
    assert resp.get_json() == unprocessable({"properties": ["value_is_not_valid_number"]})


def test_meterline_serve_mounts_the_admin_routes(runtime, api_key):
    from meterline.local.app import create_app as serve_app

    client = serve_app(runtime).test_client()
    headers = {"Authorization": f"Bearer {api_key}"}
    resp = client.post("/api/v1/billable_metrics", data=orjson.dumps({"billable_metric": SEATS}), headers=headers)
    assert resp.status_code == 200
    for path in ("billable_metrics", "plans", "customers", "subscriptions"):
        assert client.get(f"/api/v1/{path}", headers=headers).status_code == 200


def test_concurrent_creates_of_one_subscription_make_one_record(catalog, runtime):
    import threading

    from meterline.services.admin import AdminService

    service = AdminService(runtime.adapters.catalog)
    barrier = threading.Barrier(4)
    results, failures = [], []

    def create():
        barrier.wait()
        try:
            results.append(service.create_subscription(sub_body()))
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            failures.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    history = runtime.adapters.catalog.get_subscription_history("sub-1")
    assert len(history.records) == 1
    assert all(r == history.records[0] for r in results)  # the losers found the winner's record


@pytest.mark.parametrize("key", ["a/b", "line\nbreak", "tab\there", "nul\x00"])
@pytest.mark.parametrize("path, body", [
    ("billable_metrics", lambda k: {"billable_metric": {"code": k, "name": "x", "aggregation_type": "count_agg"}}),
    ("plans", lambda k: {"plan": plan_body(code=k)}),
    ("customers", lambda k: {"customer": {"external_id": k}}),
])
def test_a_code_or_external_id_that_a_url_could_not_address_is_refused(api, path, body, key):
    # With "/" it would be two path segments; a control character matches no route: such an
    # object could be created and never fetched by GET /{path}/{key}.
    response = api.post(path, body(key))
    field = "external_id" if path == "customers" else "code"
    assert (response.status_code, orjson.loads(response.data)) == (422, unprocessable({field: ["invalid_format"]}))
