"""End to end: localstripe delivers signed invoice events to the real `stripe_webhook` function.

    StripePayments --HTTP--> localstripe (extended: standalone invoices, finalize, pay)
    localstripe --signed POST--> stripe_webhook (functions-framework, gunicorn, loopback port)
                              --> SQLite invoice store + processed event ids, DuckDB `payments`

The function runs as a real server in a subprocess on the embedded backend (METERLINE_DATA_DIR
in a temp dir); this test process shares only the SQLite file with it (several processes may
open SQLite; DuckDB is opened here only after the function has stopped). Our invoice is made
and finalized in the REAL SQLite invoice store (`SqliteInvoiceStore`), as the billing run
leaves it; the Stripe calls are the billing run's own provider steps.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import stripe

from infra.servers import LocalServer, start_function
from meterline.adapters.stripe.payments import StripePayments
from meterline.config import Settings
from meterline.core.invoices import Invoice, InvoiceLine

SECRET = "whsec_e2e_secret"
API_KEY = "sk_test_meterline_e2e"
HOOK_ID = "meterline-e2e"
EVENTS = ("invoice.finalized", "invoice.payment_succeeded", "invoice.paid", "invoice.payment_failed")
NOV = datetime(2026, 11, 1, tzinfo=UTC)
WAIT_SECONDS = 20.0


def _post_form(url: str, pairs: list[tuple[str, str]]) -> None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(pairs).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def webhook(stripe_server, data_dir) -> Iterator[LocalServer]:
    """The function on a loopback port, registered with localstripe for the invoice events."""
    stripe_server.reset()
    server = start_function(
        "functions/stripe_webhook/main.py", "stripe_webhook",
        env={"METERLINE_BACKEND": "embedded", "METERLINE_DATA_DIR": str(data_dir),
             "METERLINE_STRIPE_WEBHOOK_SECRET": SECRET, "THREADS": "4"},
    )
    hook_url = f"{stripe_server.url}/_config/webhooks/{HOOK_ID}"
    try:
        _post_form(hook_url, [("url", server.url + "/"), ("secret", SECRET), *[("events[]", e) for e in EVENTS]])
        yield server
    finally:
        # localstripe cannot forget a webhook: point it at an event type that never happens.
        _post_form(hook_url, [("url", server.url + "/"), ("secret", SECRET), ("events[]", "meterline.none")])
        server.stop()


def _store(data_dir):
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore

    return SqliteInvoiceStore(SqliteDatabase(Settings(data_dir=data_dir).sqlite_path))


def _finalized_invoice(store, customer: str) -> Invoice:
    lines = (
        InvoiceLine(ref="sub_e2e|hybrid|2026-11-01|2026-11-30|subscription", kind="subscription",
                    description="Hybrid plan", units=Decimal(1), precise_amount=Decimal("49"), amount_cents=4900),
        InvoiceLine(ref="sub_e2e|hybrid|2026-11-01|2026-11-30|charge|tokens", kind="charge",
                    description="Tokens ([0–1000000] 1000000 × 0.00001; [1000000–∞] 234567 × 0.000008)",
                    units=Decimal(1_234_567), precise_amount=Decimal("11.876536"), amount_cents=1188),
    )
    draft = Invoice(
        id=f"inv_e2e_{customer}", customer_external_id=customer, subscription_external_id="sub_e2e", currency="USD",
        period_start=date(2026, 11, 1), period_end=date(2026, 11, 30), from_utc=NOV, to_utc=NOV + timedelta(days=30),
        issuing_date=date(2026, 12, 1), grace_until=NOV + timedelta(days=30, hours=1), lines=lines,
        created_at=NOV + timedelta(days=30),
    )
    assert store.create(draft)
    return store.issue(store.get(draft.id), NOV + timedelta(days=30, hours=1))


def _give_card(client: stripe.StripeClient, customer_id: str, number: str | None) -> None:
    if number is None:
        pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer_id})
    else:  # Stripe refuses to attach this card; made the default directly (test setup only)
        pm = client.v1.payment_methods.create(
            {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    client.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": pm.id}})


def _bill_through_stripe(stripe_url: str, store, invoice: Invoice, card: str | None):
    """The billing run's provider steps: customer, invoice and items, finalize, collect."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_url}, max_network_retries=0)
    payments = StripePayments(client)
    customer = payments.ensure_customer(invoice.customer_external_id, "Acme", None)
    _give_card(client, customer, card)
    remote = payments.ensure_invoice(invoice, customer, None)
    assert remote.total_cents == invoice.amount_cents == 6088
    invoice = store.update(replace(invoice, provider_customer_id=customer, provider_invoice_id=remote.id,
                                   provider_step="invoice"))
    # From here on only the webhook writes our invoice (the run would store its steps too;
    # a versioned write that loses to the webhook is read again by the next run).
    assert payments.finalize_invoice(invoice).total_cents == invoice.amount_cents
    return invoice, payments.collect(invoice), client


def _wait_for(store, invoice_id: str, status: str) -> Invoice:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = store.get(invoice_id)
        if found is not None and found.status == status:
            return found
        time.sleep(0.1)
    raise AssertionError(f"invoice {invoice_id} is {store.get(invoice_id).status}, not {status}, after {WAIT_SECONDS} s")


def _events(client: stripe.StripeClient, kind: str, provider_invoice_id: str) -> list[str]:
    return [e.id for e in client.v1.events.list({"type": kind, "limit": 100}).data
            if e.data.object.id == provider_invoice_id]


def test_a_signed_payment_succeeded_from_localstripe_makes_our_invoice_paid(stripe_server, webhook, data_dir):
    store = _store(data_dir)
    invoice = _finalized_invoice(store, "acme")
    invoice, collected, client = _bill_through_stripe(stripe_server.url, store, invoice, card=None)
    assert collected.status == "paid"

    paid = _wait_for(store, invoice.id, "paid")
    assert paid.number == invoice.number and paid.amount_cents == 6088 and paid.paid_at is not None
    # invoice.finalized arrives around payment_succeeded (localstripe sends each after 1 s, in
    # parallel): whichever comes first, the invoice ends paid, with Stripe's hosted page.
    (succeeded,) = _events(client, "invoice.payment_succeeded", invoice.provider_invoice_id)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and not (store.get(invoice.id).hosted_invoice_url and _processed(data_dir, succeeded)):
        time.sleep(0.1)
    assert store.get(invoice.id).status == "paid" and store.get(invoice.id).hosted_invoice_url
    assert _processed(data_dir, succeeded)

    time.sleep(1.5)  # let the last deliveries (invoice.paid) finish before the function stops
    webhook.stop()
    assert _payments(data_dir, invoice.id) == {("succeeded", 6088)}


def test_a_declined_card_makes_our_invoice_payment_failed(stripe_server, webhook, data_dir):
    store = _store(data_dir)
    invoice = _finalized_invoice(store, "declined")
    invoice, collected, _ = _bill_through_stripe(stripe_server.url, store, invoice, card="4000000000000002")
    assert (collected.status, collected.failure_code) == ("payment_failed", "card_declined")
    failed = _wait_for(store, invoice.id, "payment_failed")
    assert failed.paid_at is None
    time.sleep(1.5)
    webhook.stop()
    assert _payments(data_dir, invoice.id) == {("failed", 6088)}


def _processed(data_dir, event_id: str) -> bool:
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents

    return SqliteProcessedEvents(SqliteDatabase(Settings(data_dir=data_dir).sqlite_path)).seen(event_id)


def _payments(data_dir, invoice_id: str) -> set[tuple[str, int]]:
    """(status, amount_cents) of `payments_deduped` for the invoice (DuckDB, read after the
    function that wrote it has stopped)."""
    import duckdb

    conn = duckdb.connect(str(Settings(data_dir=data_dir).duckdb_path), read_only=True)
    try:
        rows = conn.execute("SELECT status, amount_cents FROM payments_deduped WHERE invoice_id = ?", [invoice_id]).fetchall()
    finally:
        conn.close()
    return {(status, int(cents)) for status, cents in rows}
