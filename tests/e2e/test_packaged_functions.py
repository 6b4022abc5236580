"""The six zips that `make package` builds, each installed into a clean venv (tests/packaged.py),
do their real work on the emulators, as deployed:

    client --> ingest --publish--> Pub/Sub emulator --push--> process --> Firestore (dedup)
                                                                      --> bqemulator (events)
    client --> admin: metric, plan, customer, subscription (Firestore)
    Cloud Scheduler's bare POST --> bill: rates last month's usage, invoice to localstripe, pays it
    localstripe --signed invoice.payment_succeeded--> stripe_webhook: our invoice is paid
    client --> portal: current_usage, a signed link, the customer's page

Each function runs under the `functions-framework` of its own venv, from its unzipped folder,
on a loopback port, with the settings and secrets terraform/functions.tf gives it (a secret
only where it is mounted). Nothing of this test's venv is importable there, so a module missing
from a function's requirements fails its request, and this test.

Every line each function writes is one JSON object with a severity (logs.py), and none is an
ERROR: a run that went right says so in its logs too.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe

from infra import servers
from infra.gcp_setup import setup_bigquery, setup_pubsub
from tests import packaged
from tests.support import env, poll

HOST = "127.0.0.1"
API_KEY = "sk_test_meterline_packaged"
WEBHOOK_SECRET = "whsec_meterline_packaged"
SIGNING_KEY = "packaged-test-portal-signing-key-0123456789"
HOOK_ID = "meterline-packaged"
HOOK_EVENTS = ("invoice.finalized", "invoice.payment_succeeded", "invoice.paid", "invoice.payment_failed")
# What terraform/functions.tf mounts from Secret Manager, per function.
SECRETS = {
    "bill": {"METERLINE_STRIPE_API_KEY": API_KEY},
    "stripe_webhook": {"METERLINE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
    "portal": {"METERLINE_PORTAL_SIGNING_KEY": SIGNING_KEY},
}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def _month_start(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def start_packaged(function: packaged.Installed, settings: dict[str, str]) -> servers.LocalServer:
    """`functions-framework` of the function's own venv, in its unzipped folder, on a loopback port."""
    cmd = [*function.functions_framework, "--source", str(function.folder / "main.py"),
           "--target", function.entry_point, "--signature-type", function.signature_type, "--host", HOST]

    def launch(port: int, workdir: Path, log: Path) -> servers.LocalServer:
        with open(log, "wb") as out:
            proc = servers.subprocess.Popen(
                [*cmd, "--port", str(port)], cwd=function.folder, env=packaged.clean_env(PYTHONUNBUFFERED="1", **settings),
                stdin=servers.subprocess.DEVNULL, stdout=out, stderr=servers.subprocess.STDOUT, start_new_session=True)
        server = servers.LocalServer(function.name, HOST, port, f"http://{HOST}:{port}", {}, proc.pid, log, proc, workdir)
        servers._wait_ready(server, 60, lambda: servers._http_probe(f"{server.url}/")[0] != 0)
        return server

    return servers._start_with_retry(function.name, launch)


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """(status, JSON body or None, content type)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(request, timeout=60) as response:
            raw, status, kind = response.read(), response.status, response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        raw, status, kind = err.read(), err.code, err.headers.get("Content-Type", "")
    if kind.startswith("application/json"):
        return status, json.loads(raw), kind
    return status, raw.decode(errors="replace"), kind


@dataclass
class Deployment:
    urls: dict[str, str]
    servers: dict[str, servers.LocalServer]
    api_key: str
    stripe: stripe.StripeClient

    def api(self, function: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, answer, _ = call(method, f"{self.urls[function]}/api/v1/{path}", body,
                                 {"Authorization": f"Bearer {self.api_key}"})
        return status, answer

    def ok(self, function: str, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.api(function, method, path, body)
        assert status == 200, (function, method, path, status, answer, self.servers[function].log_tail(20))
        return answer


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, pubsub_emulator, firestore_emulator, bigquery_emulator, stripe_server) -> Iterator[Deployment]:
    from meterline.adapters.gcp.clients import firestore_client
    from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
    from meterline.config import Settings
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    zips = packaged.installed(tmp_path_factory)
    project, dataset = f"pkg-{uuid.uuid4().hex[:8]}", f"pkg_{uuid.uuid4().hex[:8]}"
    emulators = {**pubsub_emulator.env, **firestore_emulator.env, **bigquery_emulator.env}
    # terraform/functions.tf's settings_env, with the emulators instead of Google's endpoints.
    common = {**emulators, "METERLINE_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": project,
              "METERLINE_BIGQUERY_DATASET": dataset, "METERLINE_EVENTS_TOPIC": "events",
              "METERLINE_DEAD_LETTER_TOPIC": "events-dead-letter", "METERLINE_DEAD_LETTER_SUBSCRIPTION": "events-dead-letter",
              # The run bills last month whatever the hour: no grace period to wait out.
              "METERLINE_INVOICE_GRACE_SECONDS": "0", "STRIPE_API_BASE": stripe_server.url, "THREADS": "4"}
    stripe_server.reset()
    running: dict[str, servers.LocalServer] = {}
    hook_url = f"{stripe_server.url}/_config/webhooks/{HOOK_ID}"
    try:
        with env(**emulators):
            settings = Settings(backend="gcp", google_cloud_project=project, bigquery_dataset=dataset,
                                events_topic="events", dead_letter_topic="events-dead-letter",
                                dead_letter_subscription="events-dead-letter")
            setup_bigquery(settings)
            api_key = create_api_key(FirestoreApiKeyStore(firestore_client(settings)), "packaged", now_us())
            for name, function in zips.items():
                running[name] = start_packaged(function, {**common, **SECRETS.get(name, {})})
            setup_pubsub(settings, push_endpoint=running["process"].url)
        form = [("url", running["stripe_webhook"].url + "/"), ("secret", WEBHOOK_SECRET),
                *[("events[]", e) for e in HOOK_EVENTS]]
        _OPENER.open(urllib.request.Request(hook_url, data=urllib.parse.urlencode(form).encode(), method="POST"), timeout=10)
        client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_server.url}, max_network_retries=0)
        yield Deployment({n: s.url for n, s in running.items()}, running, api_key, client)
    finally:
        # localstripe cannot forget a webhook: point it at an event type that never happens.
        form = [("url", "http://127.0.0.1:9/"), ("secret", WEBHOOK_SECRET), ("events[]", "meterline.none")]
        try:
            _OPENER.open(urllib.request.Request(hook_url, data=urllib.parse.urlencode(form).encode(), method="POST"), timeout=10)
        except OSError:
            pass
        for server in running.values():
            server.stop()


def test_every_packaged_function_does_its_real_work(deployed: Deployment):
    run = uuid.uuid4().hex[:6]
    customer, subscription = f"acme-{run}", f"sub-{run}"
    now = datetime.now(UTC)
    this_month = _month_start(now)
    last_month = _month_start(this_month - timedelta(days=1))

    # admin: the catalog (a metric, a $10 plan at $0.001 a token, a customer, a subscription
    # since the start of last month).
    deployed.ok("admin", "POST", "billable_metrics", {"billable_metric": {
        "code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "tokens"}})
    deployed.ok("admin", "POST", "plans", {"plan": {
        "code": "usage", "name": "Usage", "interval": "monthly", "amount_cents": 1000, "amount_currency": "USD",
        "charges": [{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.001"}}]}})
    deployed.ok("admin", "POST", "customers", {"customer": {"external_id": customer, "name": "Acme", "currency": "USD"}})
    deployed.ok("admin", "POST", "subscriptions", {"subscription": {
        "external_customer_id": customer, "plan_code": "usage", "external_id": subscription,
        "subscription_at": last_month.isoformat().replace("+00:00", "Z")}})
    assert deployed.ok("admin", "GET", f"customers/{customer}")["customer"]["external_id"] == customer

    # The customer has saved a card at Stripe (in production, on Stripe's pages): the run's
    # `ensure_customer` finds this customer by our id in its metadata.
    stripe_customer = deployed.stripe.v1.customers.create({"name": "Acme", "metadata": {"meterline_customer_id": customer}})
    card = deployed.stripe.v1.payment_methods.attach("pm_card_visa", {"customer": stripe_customer.id})
    deployed.stripe.v1.customers.update(stripe_customer.id, {"invoice_settings": {"default_payment_method": card.id}})

    # ingest: 4,000 tokens last month (one event and a batch), 700 this month.
    def event(i: int, tokens: int, at: datetime) -> dict[str, Any]:
        return {"transaction_id": f"tx-{run}-{i}", "external_subscription_id": subscription, "code": "tokens",
                "timestamp": int(at.timestamp()), "properties": {"tokens": tokens}}

    recent = max(this_month, now - timedelta(minutes=1))
    last = [event(0, 1000, last_month + timedelta(days=2)), event(1, 2500, last_month + timedelta(days=9)),
            event(2, 500, last_month + timedelta(days=20))]
    current = [event(3, 300, recent), event(4, 400, recent)]
    assert deployed.ok("ingest", "POST", "events", {"event": last[0]})["event"]["transaction_id"] == f"tx-{run}-0"
    assert len(deployed.ok("ingest", "POST", "events/batch", {"events": last[1:] + current})["events"]) == 4
    deployed.ok("ingest", "POST", "events", {"event": last[0]})  # a client's retry: counted once

    # process: Pub/Sub pushes each message to it; ingest's GET reads what it stored.
    def stored():
        answer = deployed.ok("ingest", "GET", f"events?external_subscription_id={subscription}&per_page=100")
        # The page and its count are two queries: both must have seen all five.
        return answer if answer["meta"]["total_count"] == len(answer["events"]) == 5 else None

    listed = poll(stored, "process to store the 5 events")
    assert sorted(e["transaction_id"] for e in listed["events"]) == [f"tx-{run}-{i}" for i in range(5)]

    # bill: Cloud Scheduler's bare POST bills last month: $10 + 4,000 x $0.001 = $14.00, at Stripe too.
    status, answer, kind = call("POST", deployed.urls["bill"])
    assert status == 200 and kind.startswith("application/json"), (status, answer, deployed.servers["bill"].log_tail(30))
    summary = answer["billing_run"]
    assert summary["finalized"] >= 1 and summary["failed"] == {} and summary["complete"], (
        summary, deployed.servers["bill"].log_tail(5))
    (invoice,) = deployed.ok("admin", "GET", f"invoices?external_customer_id={customer}")["invoices"]
    assert invoice["total_amount_cents"] == 1400 and invoice["status"] == "finalized", invoice
    assert {fee["item"]["code"]: (fee["units"], fee["amount_cents"]) for fee in invoice["fees"]
            if fee["item"]["type"] == "charge"} == {"tokens": ("4000", 400)}
    (remote,) = deployed.stripe.v1.invoices.list({"customer": stripe_customer.id}).data
    assert remote.total == 1400 and remote.metadata["meterline_invoice_id"] == invoice["lago_id"]

    # stripe_webhook: localstripe signs invoice.payment_succeeded; our invoice becomes paid.
    def paid():
        (found,) = deployed.ok("admin", "GET", f"invoices?external_customer_id={customer}")["invoices"]
        return found if found["payment_status"] == "succeeded" else None

    poll(paid, "stripe_webhook to apply invoice.payment_succeeded")

    # portal: this month's usage through the API, and the customer's page behind a signed link.
    usage = deployed.ok("portal", "GET", f"customers/{customer}/current_usage?external_subscription_id={subscription}")
    assert usage["customer_usage"]["amount_cents"] == 70, usage
    link = deployed.ok("portal", "POST", f"customers/{customer}/portal_url")["customer"]["portal_url"]
    page_url = deployed.urls["portal"] + link[link.index("/portal/"):]  # the link names the URL it was asked on
    status, page, kind = call("GET", page_url)
    assert status == 200 and kind.startswith("text/html"), (status, page)
    assert 'data-k="usage" data-cents="70"' in page

    time.sleep(1.5)  # the webhook's last deliveries (invoice.paid) before the logs are read
    for name, server in deployed.servers.items():
        records = log_records(server.log_path.read_text())
        assert all(r.get("severity") for r in records), (name, records)
        errors = [r for r in records if r["severity"] in ("ERROR", "CRITICAL")]
        assert not errors, (name, errors)


def log_records(text: str) -> list[dict[str, Any]]:
    """Each line of a function's log as the JSON object it must be."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        assert isinstance(record, dict), f"a log line that is not one JSON object: {line!r}"
        records.append(record)
    return records
