"""Tenant isolation: one customer's data or catalog never stops another's invoice.

Each scenario builds, through the HTTP API of `meterline serve`'s app (embedded: SQLite and
DuckDB), 40 bystander customers with ordinary usage and one victim whose usage or catalog is
pathological, then runs ONE billing run through `POST /api/v1/billing_runs`. In that same run
every bystander's invoice is exact (compared with Decimal arithmetic done here, ROUND_HALF_UP
once per fee), the victim is either billed exactly too (its data is odd but billable) or
flagged with its reason, and every bystander's current usage keeps answering.

The billing part on the emulators (Firestore invoice store and catalog, bqemulator warehouse)
is `test_tenant_isolation_gcp.py`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest

from meterline.core.catalog import BillableMetric
from meterline.core.clock import now_us
from meterline.core.events import parse_batch_body
from meterline.core.messages import encode_message
from meterline.local.app import create_app
from meterline.local.worker import drain_once
from tests.harness.tenants import AS_OF, BASE_CENTS, BYSTANDERS, IN_NOVEMBER, NOV, PRICE, VICTIM, cents
from tests.support import embedded_runtime, new_key


@dataclass
class World:
    """`meterline serve`'s app over an embedded runtime, with the bystanders in place."""

    runtime: object
    client: object
    auth: dict
    expected: dict[str, int] = field(default_factory=dict)  # subscription -> invoice total, cents

    # -- the API ---------------------------------------------------------------------------

    def post(self, path: str, body: dict):
        return self.client.post(path, data=orjson.dumps(body), headers={**self.auth, "Content-Type": "application/json"})

    def ok(self, path: str, body: dict) -> dict:
        response = self.post(path, body)
        assert response.status_code == 200, (path, response.status_code, response.data)
        return orjson.loads(response.data)

    def metric(self, **fields) -> None:
        self.ok("/api/v1/billable_metrics", {"billable_metric": {"name": fields["code"], **fields}})

    def plan(self, code: str, charges: list[dict], amount_cents: int = 0) -> None:
        self.ok("/api/v1/plans", {"plan": {"code": code, "name": code, "interval": "monthly",
                                           "amount_cents": amount_cents, "amount_currency": "USD", "charges": charges}})

    def subscribe(self, customer: str, subscription: str, plan: str) -> None:
        self.ok("/api/v1/customers", {"customer": {"external_id": customer, "name": customer, "currency": "USD"}})
        self.ok("/api/v1/subscriptions", {"subscription": {
            "external_customer_id": customer, "external_id": subscription, "plan_code": plan,
            "subscription_at": NOV.isoformat()}})

    def send(self, events: list[dict]) -> list[int]:
        """Each event through `POST /api/v1/events` (the door's checks); the statuses."""
        return [self.post("/api/v1/events", {"event": e}).status_code for e in events]

    def bulk(self, events: list[dict]) -> None:
        """Many events at once, as the process function receives them (for volumes the
        scenario needs, not the door: `send` covers that)."""
        parsed = [e for i in range(0, len(events), 100)
                  for e in parse_batch_body(orjson.dumps({"events": events[i:i + 100]}), now_us())]
        for i in range(0, len(parsed), 5000):
            self.runtime.process.service.handle_message(encode_message(parsed[i:i + 5000]))

    def drain(self) -> None:
        adapters = self.runtime.adapters
        while drain_once(adapters.queue, self.runtime.process.service, batch=500).messages:
            pass

    def bill(self) -> dict:
        self.drain()
        return self.ok("/api/v1/billing_runs", {"as_of": AS_OF.isoformat()})["billing_run"]

    def usage(self, subscription: str, customer: str | None = None):
        customer = customer or subscription.replace("sub_", "cus_")
        return self.client.get(f"/api/v1/customers/{customer}/current_usage?external_subscription_id={subscription}",
                               headers=self.auth)

    def invoices(self) -> dict[str, object]:
        stored, _ = self.runtime.adapters.invoices.list()
        return {i.subscription_external_id: i for i in stored}

    # -- what must hold --------------------------------------------------------------------

    def assert_isolated(self, run: dict, flagged: dict[str, str]) -> None:
        """Every bystander (and a billable victim) invoiced exactly in this run; the flagged
        ones flagged with their reason and not invoiced; nothing failed."""
        assert run["failed"] == {}, run
        assert run["flag_reasons"] == flagged, run
        invoices = self.invoices()
        for sub in flagged:
            assert sub not in invoices
        for sub, total in self.expected.items():
            invoice = invoices[sub]
            assert (invoice.status, invoice.amount_cents) == ("finalized", total), sub
            assert invoice.amount_cents == sum(line.amount_cents for line in invoice.lines)
        assert run["finalized"] == len(self.expected)

    def assert_bystanders_usage(self) -> None:
        self.drain()
        for i in range(BYSTANDERS):
            response = self.usage(f"sub_{i}")
            assert response.status_code == 200, response.data
            usage = orjson.loads(response.data)["customer_usage"]
            assert usage["amount_cents"] == self.expected[f"sub_{i}"] - BASE_CENTS


@pytest.fixture
def world(tmp_path) -> World:
    runtime = embedded_runtime(tmp_path / "data")
    runtime.portal.service.clock = lambda: IN_NOVEMBER
    w = World(runtime, create_app(runtime).test_client(), {"Authorization": f"Bearer {new_key(runtime)}"})
    w.metric(code="tokens", aggregation_type="sum_agg", field_name="value")
    w.plan("bystander", [{"billable_metric_code": "tokens", "charge_model": "standard",
                          "properties": {"amount": str(PRICE)}}], amount_cents=BASE_CENTS)
    rng = random.Random(17)
    events = []
    for i in range(BYSTANDERS):
        w.subscribe(f"cus_{i}", f"sub_{i}", "bystander")
        values = [rng.choice([rng.randint(1, 90_000), f"{rng.randint(0, 999)}.{rng.randint(0, 999_999_999):09d}"])
                  for _ in range(10)]
        events += [{"transaction_id": f"b{i}-{k}", "external_subscription_id": f"sub_{i}", "code": "tokens",
                    "timestamp": int((NOV + timedelta(days=k + 1)).timestamp()), "properties": {"value": v}}
                   for k, v in enumerate(values)]
        w.expected[f"sub_{i}"] = BASE_CENTS + cents(sum(Decimal(str(v)) for v in values) * PRICE)
    batches = [events[k:k + 100] for k in range(0, len(events), 100)]
    for batch in batches:
        w.ok("/api/v1/events/batch", {"events": batch})
    return w


def victim_event(txn: str, properties: dict, code: str = "tokens", day: int = 3) -> dict:
    return {"transaction_id": txn, "external_subscription_id": VICTIM, "code": code,
            "timestamp": int((NOV + timedelta(days=day)).timestamp()), "properties": properties}


def assert_unbillable(world: World, reason: str) -> None:
    response = world.usage(VICTIM)
    assert response.status_code == 422, response.data
    assert orjson.loads(response.data) == {"status": 422, "error": "Unprocessable Entity", "code": reason}


# -- the scenarios -----------------------------------------------------------------------------


def test_one_event_inside_the_domain_whose_fee_overflows_flags_only_its_subscription(world):
    world.plan("unit", [{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"}}])
    world.subscribe("cus_victim", VICTIM, "unit")
    assert world.send([victim_event("huge", {"value": 999999999999999999})]) == [200]
    world.drain()
    assert_unbillable(world, "amount_out_of_range")
    world.assert_bystanders_usage()
    run = world.bill()
    world.assert_isolated(run, {VICTIM: "amount_out_of_range"})
    assert world.bill()["flag_reasons"] == {VICTIM: "amount_out_of_range"}  # every rerun: flagged, not failed


def test_a_huge_price_is_refused_at_save_and_a_product_that_overflows_is_flagged(world):
    too_big = {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "92233720368547758.08"}}
    for charges in ([too_big],
                    [{"billable_metric_code": "tokens", "charge_model": "graduated", "properties": {"graduated_ranges": [
                        {"from_value": 0, "to_value": None, "per_unit_amount": "0", "flat_amount": "1e17"}]}}]):
        response = world.post("/api/v1/plans", {"plan": {"code": "huge", "name": "h", "interval": "monthly",
                                                         "amount_cents": 0, "amount_currency": "USD", "charges": charges}})
        assert response.status_code == 422, response.data
        body = orjson.loads(response.data)
        assert body["code"] == "validation_errors" and body["error_details"] == {"charges": ["value_is_out_of_range"]}
    # The largest price one unit may be charged, and two units of it.
    world.plan("dear", [{"billable_metric_code": "tokens", "charge_model": "standard",
                         "properties": {"amount": "92233720368547758.07"}}])
    world.subscribe("cus_victim", VICTIM, "dear")
    assert world.send([victim_event("two", {"value": 2})]) == [200]
    world.drain()
    assert_unbillable(world, "amount_out_of_range")
    world.assert_isolated(world.bill(), {VICTIM: "amount_out_of_range"})


def test_extreme_values_in_the_domain_are_billed_exactly_and_the_rest_refused_at_the_door(world):
    world.plan("tiny", [{"billable_metric_code": "tokens", "charge_model": "standard",
                         "properties": {"amount": "0.0000000001"}}])
    world.subscribe("cus_victim", VICTIM, "tiny")
    accepted = ["999999999999999999.999999999", "-999999999999999999", 999999999999999999, "0.000000001",
                "0", "-0.000000001", "000000000000000000000123.5"]
    accepted += ["999999999999999999"] * 20
    refused = ["1e5", "12345678901234567890", "1.0000000001", "NaN", "Infinity", 10**18, "0x10", " 1"]
    statuses = world.send([victim_event(f"ok{i}", {"value": v}) for i, v in enumerate(accepted)])
    assert statuses == [200] * len(accepted)
    statuses = world.send([victim_event(f"no{i}", {"value": v}) for i, v in enumerate(refused)])
    assert statuses == [422] * len(refused)
    units = sum(Decimal(str(v)) for v in accepted)
    world.expected[VICTIM] = cents(units * Decimal("0.0000000001"))
    world.drain()
    world.assert_bystanders_usage()
    world.assert_isolated(world.bill(), {})


def test_thousands_of_distinct_filter_values_are_billed_exactly(world):
    models = [f"model-{k}" for k in range(3000)]
    world.metric(code="calls", aggregation_type="count_agg", filters=[{"key": "model", "values": models}])
    premium = models[:1500]
    world.plan("filtered", [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"},
                             "filters": [{"values": {"model": premium}, "properties": {"amount": "0.05"}}]}])
    world.subscribe("cus_victim", VICTIM, "filtered")
    # Every model once, and 2,000 more values no filter names: the charge's own price.
    world.bulk([victim_event(f"m{k}", {"model": m}, "calls") for k, m in enumerate(models)]
               + [victim_event(f"x{k}", {"model": f"other-{k}"}, "calls") for k in range(2000)])
    world.expected[VICTIM] = cents(1500 * Decimal("0.05")) + cents(3500 * Decimal("0.01"))
    world.assert_bystanders_usage()
    world.assert_isolated(world.bill(), {})


def test_odd_property_types_are_refused_or_count_as_nothing(world):
    world.metric(code="calls", aggregation_type="count_agg")
    world.plan("mixed", [
        {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"}},
        {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.5"}},
    ])
    world.subscribe("cus_victim", VICTIM, "mixed")
    odd = [{"a": 1}, [1, 2], True, False, None, "abc", "", "１２", {"value": 5}, 1.5]
    statuses = world.send([victim_event(f"t{i}", {"value": v}) for i, v in enumerate(odd)])
    # Not a number to a sum: refused at the door (422), or counted as nothing. A JSON number is
    # read exactly (1.5 is one and a half, not a binary fraction).
    assert statuses == [422] * 9 + [200]
    statuses = world.send([victim_event(f"c{i}", {"value": v}, "calls") for i, v in enumerate(odd)])
    assert statuses == [200] * len(odd)  # a count counts any event
    assert world.send([victim_event("t-ok", {"value": "7.25"})]) == [200]
    world.expected[VICTIM] = cents(Decimal("8.75")) + cents(len(odd) * Decimal("0.5"))
    world.drain()
    assert world.usage(VICTIM).status_code == 200
    world.assert_isolated(world.bill(), {})


def test_fifty_thousand_distinct_ids_are_counted_exactly(world):
    world.metric(code="users", aggregation_type="unique_count_agg", field_name="user_id")
    world.plan("per_user", [{"billable_metric_code": "users", "charge_model": "standard", "properties": {"amount": "0.01"}}])
    world.subscribe("cus_victim", VICTIM, "per_user")
    world.bulk([victim_event(f"u{k}", {"user_id": f"user-{k}"}, "users", day=1 + k % 28) for k in range(50_000)])
    world.expected[VICTIM] = cents(50_000 * Decimal("0.01"))
    world.assert_bystanders_usage()
    world.assert_isolated(world.bill(), {})


def test_a_name_the_api_refuses_is_refused_and_one_stored_before_is_flagged(world):
    for body in ({"code": "dotted", "aggregation_type": "sum_agg", "field_name": "usage.tokens"},
                 {"code": "spaced", "aggregation_type": "count_agg", "filters": [{"key": "model name", "values": ["a"]}]}):
        response = world.post("/api/v1/billable_metrics", {"billable_metric": {"name": body["code"], **body}})
        assert response.status_code == 422, response.data
        details = orjson.loads(response.data)["error_details"]
        assert details in ({"field_name": ["invalid_format"]}, {"filters.0.key": ["invalid_format"]})
    # A catalog stored before the rule existed (written to the store, not through the API).
    stored = BillableMetric.model_validate({"code": "dotted", "name": "D", "aggregation_type": "sum",
                                            "field_name": "usage.tokens"}, context={"stored": True})
    world.runtime.adapters.catalog.put_billable_metric(stored)
    assert world.client.get("/api/v1/billable_metrics", headers=world.auth).status_code == 200
    world.plan("dotted", [{"billable_metric_code": "dotted", "charge_model": "standard", "properties": {"amount": "1"}}])
    world.subscribe("cus_victim", VICTIM, "dotted")
    world.bulk([victim_event("d1", {"usage.tokens": 5}, "dotted")])
    assert_unbillable(world, "unusable_property_name")
    world.assert_bystanders_usage()
    world.assert_isolated(world.bill(), {VICTIM: "unusable_property_name"})


def test_filter_values_are_quoted_not_trusted(world):
    nasty = ["it's", 'say "hi"', "back\\slash", "$.value", "a.b", "line\nbreak", "'; DROP TABLE events; --", "\\'"]
    world.metric(code="calls", aggregation_type="count_agg", filters=[{"key": "model", "values": nasty}])
    world.plan("nasty", [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0"},
                          "filters": [{"values": {"model": [v]}, "properties": {"amount": str(k + 1)}}
                                      for k, v in enumerate(nasty)]}])
    world.subscribe("cus_victim", VICTIM, "nasty")
    world.bulk([victim_event(f"n{k}-{r}", {"model": v}, "calls") for k, v in enumerate(nasty) for r in range(k + 1)])
    # Each value matched its own filter only: k+1 events at k+1 dollars.
    world.expected[VICTIM] = sum(cents(Decimal((k + 1) * (k + 1))) for k in range(len(nasty)))
    world.assert_isolated(world.bill(), {})
    lines = {line.filter_key: line.units for line in world.invoices()[VICTIM].lines if line.filter_key}
    assert len(lines) == len(nasty) and all(units > 0 for units in lines.values())
