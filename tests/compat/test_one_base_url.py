"""One `api_url` for everything: Lago's official client given a single base URL (on the
emulators, the loopback router that routes as the load balancer's URL map does, from the same
table, meterline.routes) creates the catalog, sends events one at a time and in a batch, lists
invoices, reads current usage and gets a portal link that opens, without knowing which function
serves which path. On `meterline serve` the same calls reach the same table in one process."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta

from lago_python_client.models import BatchEvent, BillableMetric, Charge, Charges, Customer, Event, Plan, Subscription
from lago_python_client.models.customer_usage import CustomerUsageResponse

from tests.compat.targets import find_event, unique


def test_one_api_url_serves_every_call_a_lago_client_makes(lago, target):
    code, plan_code, customer, subscription = unique("tokens"), unique("pro"), unique("cus"), unique("sub")
    # The catalog (admin): a metric, a plan charging 0.01 EUR a token, a customer, a subscription.
    metric = lago.billable_metrics.create(BillableMetric(name="Tokens", code=code, aggregation_type="sum_agg",
                                                         field_name="tokens", recurring=False))
    lago.plans.create(Plan(name="Pro", code=plan_code, interval="monthly", amount_cents=1000, amount_currency="EUR",
                           pay_in_advance=False, charges=Charges(__root__=[
                               Charge(billable_metric_id=metric.lago_id, charge_model="standard",
                                      properties={"amount": "0.01"})])))
    lago.customers.create(Customer(external_id=customer, name="Initech", currency="EUR"))
    started = datetime.now(UTC) - timedelta(days=40)
    lago.subscriptions.create(Subscription(external_customer_id=customer, plan_code=plan_code, external_id=subscription,
                                           subscription_at=started.isoformat()))

    # Events (ingest): one, then a batch; each found again once counted.
    now = int(time.time())
    single = Event(transaction_id=unique("tx"), external_subscription_id=subscription, code=code, timestamp=now,
                   properties={"tokens": 100})
    batch = [Event(transaction_id=unique("tx"), external_subscription_id=subscription, code=code, timestamp=now,
                   properties={"tokens": tokens}) for tokens in (200, 300)]
    lago.events.create(single)
    assert lago.events.batch_create(BatchEvent(events=batch)) is None
    for event in (single, *batch):
        assert find_event(lago, event.transaction_id, subscription).transaction_id == event.transaction_id

    # Current usage (portal): 600 tokens at 0.01 = 6.00 EUR.
    deadline = time.monotonic() + 60
    while True:
        usage = lago.customers.current_usage(customer, subscription)
        if sum(c.events_count for c in usage.charges_usage) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert isinstance(usage, CustomerUsageResponse)
    assert (usage.currency, usage.amount_cents) == ("EUR", 600)
    assert [(c.billable_metric.code, c.units, c.events_count) for c in usage.charges_usage] == [(code, "600", 3)]

    # Invoices (admin): none billed yet (no billing run), and the list answers in Lago's shape.
    assert lago.invoices.find_all({"external_customer_id": customer})["invoices"] == []

    # A portal link (portal) on the same base URL, whose page opens through it too.
    link = lago.customers.portal_url(customer)
    assert link.startswith(f"{target.url}/portal/customers/{customer}?token=")
    with urllib.request.urlopen(link, timeout=30) as page:
        assert page.status == 200 and "Initech" in page.read().decode()
