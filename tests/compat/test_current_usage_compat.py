"""Lago's official Python client against the portal function: `customers.current_usage` parses
Meterline's answer into its model, and `customers.portal_url` returns a link that opens the
customer's page (and only theirs).

Two targets:
  serve     `meterline serve` (the module's own; tests/compat/conftest.py's `lago` on it)
  emulators the ingest, process and portal functions on the emulators (bench/bench_freshness.py's
            stack: the compat suite's gcp target routes /api/v1/customers/* to the admin
            function, which does not serve these two sub-paths)

The catalog is written to the target's store; events go through the client's `events.create`.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Event
from lago_python_client.models.customer_usage import CustomerUsageResponse

from meterline.services.admin import AdminService
from tests.compat.targets import serve_target, unique
from tests.support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_freshness import Stack, gcp_stack

OUTPUT = {"token_type": ["output"]}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """This module's `meterline serve` (the conftest's `lago` fixture drives it)."""
    with serve_target(tmp_path_factory.mktemp("serve")) as running:
        yield running


def seed(catalog) -> tuple[str, str, str]:
    """A filtered token metric on a graduated plan; a customer subscribed since last month."""
    admin = AdminService(catalog)
    metric, plan, customer = unique("tokens"), unique("team"), unique("cust")
    subscription = unique("sub")
    admin.create_billable_metric({"name": "Tokens", "code": metric, "aggregation_type": "sum_agg",
                                  "field_name": "tokens", "filters": [{"key": "token_type", "values": ["input", "output"]}]})
    admin.create_plan({
        "name": "Team", "code": plan, "interval": "monthly", "amount_cents": 4900, "amount_currency": "EUR",
        "pay_in_advance": False,
        "charges": [{"billable_metric_code": metric, "charge_model": "graduated", "invoice_display_name": "Tokens",
                     "properties": {"graduated_ranges": [
                         {"from_value": 0, "to_value": 1000, "per_unit_amount": "0.01", "flat_amount": "0"},
                         {"from_value": 1001, "to_value": None, "per_unit_amount": "0.005", "flat_amount": "0"}]},
                     "filters": [{"invoice_display_name": "Output", "values": OUTPUT,
                                  "properties": {"graduated_ranges": [{"from_value": 0, "to_value": None,
                                                                       "per_unit_amount": "0.03", "flat_amount": "0"}]}}]}],
    })
    admin.upsert_customer({"external_id": customer, "name": "Initech", "currency": "EUR", "timezone": "Europe/Paris"})
    admin.create_subscription({"external_id": subscription, "external_customer_id": customer, "plan_code": plan,
                               "subscription_at": (datetime.now(UTC) - timedelta(days=40)).isoformat()})
    return metric, customer, subscription


def usage_after(client: Client, customer: str, subscription: str, events: int, seconds: float = 60):
    """The client's current usage once `events` events are counted (counting is asynchronous)."""
    deadline = time.monotonic() + seconds
    while True:
        usage = client.customers.current_usage(customer, subscription)
        if sum(c.events_count for c in usage.charges_usage) >= events or time.monotonic() > deadline:
            return usage
        time.sleep(0.2)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def check(events_client: Client, portal_url: str, api_key: str, catalog) -> None:
    portal_client = Client(api_key=api_key, api_url=portal_url)
    metric, customer, subscription = seed(catalog)
    now = int(time.time())
    for tx, tokens, kind in (("a", 600, "input"), ("b", 700, "input"), ("c", 100, "output")):
        events_client.events.create(Event(transaction_id=unique(tx), external_subscription_id=subscription,
                                          code=metric, timestamp=now, properties={"tokens": tokens, "token_type": kind}))
    usage = usage_after(portal_client, customer, subscription, 3)
    assert isinstance(usage, CustomerUsageResponse)
    assert usage.currency == "EUR" and usage.lago_invoice_id is None
    # 1,300 input tokens: 1,000 at 0.01 + 300 at 0.005 = 11.50; 100 output at 0.03 = 3.00
    assert (usage.amount_cents, usage.taxes_amount_cents, usage.total_amount_cents) == (1450, 0, 1450)
    (charge,) = usage.charges_usage
    assert (charge.billable_metric.code, charge.billable_metric.aggregation_type) == (metric, "sum_agg")
    assert (charge.units, charge.events_count, charge.amount_cents, charge.amount_currency) == ("1400", 3, 1450, "EUR")
    assert charge.charge.charge_model == "graduated" and charge.charge.invoice_display_name == "Tokens"
    assert sorted((f.values == OUTPUT, f.units, f.amount_cents, f.events_count) for f in charge.filters) == [
        (False, "1300", 1150, 2), (True, "100", 300, 1)]
    # Europe/Paris: the period starts at local midnight, 22:00 or 23:00 UTC the day before
    assert usage.from_datetime.endswith(("T22:00:00Z", "T23:00:00Z"))

    link = portal_client.customers.portal_url(customer)
    assert "/portal/customers/" in link and "token=mlp1." in link
    status, page = fetch(link)
    assert status == 200 and "Initech" in page and "€14.50" in page  # the usage so far, in euros
    status, page = fetch(link[:-1] + ("A" if not link.endswith("A") else "B"))
    assert status == 401 and "€" not in page

    with pytest.raises(LagoApiError) as info:
        Client(api_key="ml_not_a_key", api_url=portal_url).customers.current_usage(customer, subscription)
    assert info.value.status_code == 401
    with pytest.raises(LagoApiError) as info:
        portal_client.customers.current_usage(customer, unique("no_such_sub"))
    assert info.value.status_code == 404


def test_current_usage_and_portal_url_through_the_official_client_on_serve(lago, target):
    check(lago, target.url, target.api_key, target.catalog)


@pytest.fixture
def emulator_stack(pubsub_emulator, firestore_emulator, bigquery_emulator) -> Iterator[Stack]:
    env = {**pubsub_emulator.env, **firestore_emulator.env, **bigquery_emulator.env}
    with gcp_stack(env) as stack:
        yield stack


def test_current_usage_and_portal_url_through_the_official_client_on_the_emulators(emulator_stack):
    stack = emulator_stack
    check(Client(api_key=stack.api_key, api_url=stack.ingest_url), stack.portal_url, stack.api_key, stack.catalog)
