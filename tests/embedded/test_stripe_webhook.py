"""The `stripe_webhook` function through functions-framework's test client, over the invoice store
and the processed event ids as in-memory fakes of their ports and as the real SQLite adapters
(every test runs on both), and a fake of the finance tables.

Deliveries are signed here with HMAC-SHA256 as Stripe documents it (`t=...,v1=hex(hmac(secret,
"{t}.{body}"))`), independently of stripe-python, which the function uses to verify them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import functions_framework
import orjson
import pytest

from meterline import logs
from meterline.config import Settings
from meterline.core.invoices import Invoice, InvoiceLine
from meterline.ports import StaleWrite
from meterline.runtime import StripeWebhookRuntime, set_function_runtime
from tests.support import REPO_ROOT

SECRET = "whsec_test_secret"
TOLERANCE = 300
AT = datetime(2026, 12, 1, 1, tzinfo=UTC)


# -- fakes of the ports ----------------------------------------------------------------------


class MemoryInvoices:
    """InvoiceStore, the parts the webhook uses: get, update with its version check,
    find_by_provider_id (and create, to set a test up)."""

    def __init__(self):
        self.rows: dict[str, Invoice] = {}

    def create(self, invoice: Invoice) -> bool:
        self.rows[invoice.id] = replace(invoice, version=1)
        return True

    def get(self, invoice_id: str) -> Invoice | None:
        return self.rows.get(invoice_id)

    def update(self, invoice: Invoice) -> Invoice:
        if self.rows[invoice.id].version != invoice.version:
            raise StaleWrite(invoice.id)
        self.rows[invoice.id] = replace(invoice, version=invoice.version + 1)
        return self.rows[invoice.id]

    def find_by_provider_id(self, provider_invoice_id: str) -> Invoice | None:
        return next((i for i in self.rows.values() if i.provider_invoice_id == provider_invoice_id), None)


class MemoryProcessed:
    def __init__(self):
        self.ids: set[str] = set()

    def seen(self, event_id: str) -> bool:
        return event_id in self.ids

    def first_time(self, event_id: str) -> bool:
        new = event_id not in self.ids
        self.ids.add(event_id)
        return new


class WithRival:
    """An invoice store where, once, another writer (a billing run) updates the invoice just
    before the webhook's own update, which then meets a stale version."""

    def __init__(self, inner):
        self._inner = inner
        self.rival_once = False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def update(self, invoice: Invoice) -> Invoice:
        if self.rival_once:
            self.rival_once = False
            self._inner.update(self._inner.get(invoice.id))
        return self._inner.update(invoice)


class WithCrash:
    """Processed event ids whose next `first_time` dies before recording (a crashed process)."""

    def __init__(self, inner):
        self._inner = inner
        self.crash_once = False

    def seen(self, event_id: str) -> bool:
        return self._inner.seen(event_id)

    def first_time(self, event_id: str) -> bool:
        if self.crash_once:
            self.crash_once = False
            raise RuntimeError("crash before the event id is recorded")
        return self._inner.first_time(event_id)


class Finance:
    """The Warehouse port's finance writes."""

    def __init__(self):
        self.invoices: list[tuple[str, int, str]] = []  # (id, version, status)
        self.payments: list = []
        self.provider: list = []  # ProviderObservation

    def record_invoice(self, invoice: Invoice, recorded_at_us: int) -> None:
        self.invoices.append((invoice.id, invoice.version, invoice.status))

    def record_payment(self, payment) -> None:
        self.payments.append(payment)

    def record_provider_invoices(self, observations) -> None:
        self.provider.extend(observations)


def invoice(id_: str = "inv_ours", status: str = "finalized", **changes) -> Invoice:
    line = InvoiceLine(ref="sub|pro|2026-11-01|2026-11-30|charge|tokens", kind="charge",
                       description="Tokens ([0–1000] 1000 × 0.01)", units=Decimal(1000),
                       precise_amount=Decimal("10"), amount_cents=1000)
    base = Invoice(
        id=id_, customer_external_id="acme", subscription_external_id="sub", currency="USD",
        period_start=date(2026, 11, 1), period_end=date(2026, 11, 30),
        from_utc=datetime(2026, 11, 1, tzinfo=UTC), to_utc=datetime(2026, 12, 1, tzinfo=UTC),
        issuing_date=date(2026, 12, 1), grace_until=AT, status=status, lines=(line,), number="ML-1-0001",  # type: ignore[arg-type]
        provider_invoice_id="in_123", provider_step="collected",
    )
    return replace(base, **changes)


# -- the function under test -------------------------------------------------------------------


class Webhook:
    def __init__(self, backend: str, tmp_path, *invoices: Invoice):
        if backend == "sqlite":
            from meterline.adapters.embedded.sqlite import SqliteDatabase
            from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore, SqliteProcessedEvents

            db = SqliteDatabase(tmp_path / "meterline.sqlite")
            store, processed = SqliteInvoiceStore(db), SqliteProcessedEvents(db)
        else:
            store, processed = MemoryInvoices(), MemoryProcessed()
        for inv in invoices:
            assert store.create(inv)
        self.invoices = WithRival(store)
        self.processed = WithCrash(processed)
        self.finance = Finance()
        adapters = SimpleNamespace(
            settings=Settings(stripe_webhook_secret=SECRET, stripe_webhook_tolerance_seconds=TOLERANCE),
            invoices=self.invoices, processed_events=self.processed, finance_ledger=self.finance,
        )
        self.runtime = StripeWebhookRuntime(adapters)  # type: ignore[arg-type]
        self.client = functions_framework.create_app(
            "stripe_webhook", str(REPO_ROOT / "functions/stripe_webhook/main.py")).test_client()

    def deliver(self, body: bytes, signature: str | None):
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return self.client.post("/", data=body, headers=headers)

    def send(self, event: dict, *, at: int | None = None, secret: str = SECRET):
        body = orjson.dumps(event)
        return self.deliver(body, sign(body, secret, at))

    def stored(self, id_: str = "inv_ours") -> Invoice:
        found = self.invoices.get(id_)
        assert found is not None
        return found

    def status(self, id_: str = "inv_ours") -> str:
        return self.stored(id_).status


@contextlib.contextmanager
def installed(hook: Webhook) -> Iterator[Webhook]:
    set_function_runtime("stripe_webhook", hook.runtime)
    try:
        yield hook
    finally:
        set_function_runtime("stripe_webhook", None)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def webhook(backend, tmp_path) -> Iterator[Webhook]:
    with installed(Webhook(backend, tmp_path, invoice())) as hook:
        yield hook


def sign(body: bytes, secret: str, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


_counter = iter(range(1, 1_000_000))


def event(kind: str, *, id_: str | None = None, invoice_id: str | None = "inv_ours", provider_id: str = "in_123",
          status: str = "paid", created: int = 1_796_000_000, **fields) -> dict:
    obj = {"object": "invoice", "id": provider_id, "status": status, "currency": "usd", "total": 1000,
           "amount_due": 1000, "amount_paid": 1000 if status == "paid" else 0,
           "metadata": {"meterline_invoice_id": invoice_id} if invoice_id else {}, **fields}
    return {"id": id_ or f"evt_{next(_counter)}", "object": "event", "type": kind, "created": created,
            "data": {"object": obj}}


def body_of(response) -> dict:
    return orjson.loads(response.data)


# -- signatures ----------------------------------------------------------------------------------


def test_a_signed_payment_succeeded_makes_the_finalized_invoice_paid(webhook):
    response = webhook.send(event("invoice.payment_succeeded", created=1_796_000_123))
    assert response.status_code == 200
    assert body_of(response) == {"received": True, "outcome": "applied", "invoice_id": "inv_ours"}
    paid = webhook.stored()
    assert paid.status == "paid" and paid.paid_at == datetime.fromtimestamp(1_796_000_123, tz=UTC)
    (payment,) = webhook.finance.payments
    assert (payment.status, payment.amount_cents, payment.currency) == ("succeeded", 1000, "USD")
    assert webhook.processed.seen(payment.provider_event_id)
    assert webhook.finance.invoices == [("inv_ours", 2, "paid")]


def test_every_invoice_event_records_what_stripe_holds_for_reconciliation(webhook):
    assert webhook.send(event("invoice.finalized", id_="evt_fin", status="open", created=1_796_000_100,
                              total=990, due_date=1_796_086_500)).status_code == 200
    assert webhook.send(event("invoice.paid", id_="evt_paid", total=990, amount_paid=990,
                              created=1_796_000_200)).status_code == 200
    assert webhook.send(event("invoice.paid", id_="evt_paid", total=990, amount_paid=990,
                              created=1_796_000_200)).status_code == 200  # a redelivery: handled once
    assert [(o.provider_event_id, o.status, o.total_cents, o.amount_paid_cents, o.source, o.observed_at_us)
            for o in webhook.finance.provider] == [
        ("evt_fin", "open", 990, 0, "webhook", 1_796_000_100_000_000),
        ("evt_paid", "paid", 990, 990, "webhook", 1_796_000_200_000_000),
    ]
    first = webhook.finance.provider[0]
    assert (first.invoice_id, first.provider_invoice_id, first.customer_external_id) == ("inv_ours", "in_123", "acme")
    assert (first.issuing_date, first.currency) == (date(2026, 12, 1), "USD")
    assert first.due_at == datetime.fromtimestamp(1_796_086_500, tz=UTC)


def _nothing_changed(webhook: Webhook, event_id: str) -> None:
    assert webhook.status() == "finalized" and webhook.stored().version == 1
    assert not webhook.processed.seen(event_id)
    assert webhook.finance.payments == [] and webhook.finance.invoices == [] and webhook.finance.provider == []


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "missing", "garbage", "no_v1"])
def test_a_bad_signature_is_a_400_and_changes_nothing(webhook, case):
    evt = event("invoice.payment_succeeded")
    body = orjson.dumps(evt)
    signature = {
        "tampered": sign(body.replace(b"1000", b"1"), SECRET),  # signed another body
        "wrong_secret": sign(body, "whsec_someone_else"),
        "stale": sign(body, SECRET, int(time.time()) - TOLERANCE - 5),
        "missing": None,
        "garbage": "not a signature",
        "no_v1": f"t={int(time.time())},v0=abc",
    }[case]
    response = webhook.deliver(body, signature)
    assert response.status_code == 400
    assert body_of(response)["code"] == "invalid_signature"
    _nothing_changed(webhook, evt["id"])


def test_a_signature_inside_the_tolerance_is_accepted(webhook):
    response = webhook.send(event("invoice.paid"), at=int(time.time()) - TOLERANCE + 30)
    assert response.status_code == 200 and webhook.status() == "paid"


def test_a_signed_body_that_is_not_an_event_is_a_400(webhook):
    body = b'["not", "an", "event"]'
    assert webhook.deliver(body, sign(body, SECRET)).status_code == 400
    assert webhook.status() == "finalized" and webhook.finance.invoices == []


def test_only_post_is_answered(webhook):
    assert webhook.client.get("/").status_code == 405


# -- idempotency and order -----------------------------------------------------------------------


def test_a_repeated_event_id_is_handled_once(webhook):
    evt = event("invoice.payment_succeeded", id_="evt_twice")
    assert body_of(webhook.send(evt))["outcome"] == "applied"
    again = webhook.send(evt)
    assert again.status_code == 200 and body_of(again)["outcome"] == "duplicate"
    assert len(webhook.finance.payments) == 1 and len(webhook.finance.invoices) == 1
    assert webhook.stored().version == 2  # written once


def test_payment_succeeded_before_finalized_stays_paid(webhook):
    webhook.send(event("invoice.payment_succeeded"))
    late = webhook.send(event("invoice.finalized", status="open", hosted_invoice_url="https://pay.example/in_123"))
    assert late.status_code == 200
    stored = webhook.stored()
    # Not a step back; but the hosted page the late event carries is kept.
    assert stored.status == "paid" and stored.hosted_invoice_url == "https://pay.example/in_123"


def test_payment_failed_after_paid_stays_paid(webhook):
    webhook.send(event("invoice.paid"))
    response = webhook.send(event("invoice.payment_failed", status="open"))
    assert response.status_code == 200 and body_of(response)["outcome"] == "unchanged"
    assert webhook.status() == "paid"


def test_a_failed_payment_then_a_successful_retry(webhook):
    webhook.send(event("invoice.payment_failed", status="open"))
    assert webhook.status() == "payment_failed"
    webhook.send(event("invoice.payment_succeeded"))
    assert webhook.status() == "paid"
    assert [p.status for p in webhook.finance.payments] == ["failed", "succeeded"]


def test_voided(webhook):
    webhook.send(event("invoice.voided", status="void"))
    assert webhook.status() == "voided"
    webhook.send(event("invoice.paid"))
    assert webhook.status() == "voided"  # voided is final


def test_an_event_ahead_of_a_draft_waits_for_the_billing_run(backend, tmp_path):
    """Finalization (and its number) is the billing run's: a payment event for an invoice that
    is still a draft here is answered 503, so Stripe delivers it again, and nothing is recorded."""
    with installed(Webhook(backend, tmp_path, invoice(status="draft", provider_step=None))) as hook:
        evt = event("invoice.payment_succeeded", id_="evt_early")
        response = hook.send(evt)
        assert response.status_code == 503 and response.headers["Retry-After"] == "60"
        assert hook.status() == "draft" and not hook.processed.seen("evt_early")
        # The run finalizes; Stripe's redelivery then applies.
        hook.invoices.update(replace(hook.stored(), status="finalized"))
        assert hook.send(evt).status_code == 200 and hook.status() == "paid"


def test_a_crash_before_the_event_id_is_recorded_costs_a_redelivery_never_a_loss(webhook):
    evt = event("invoice.payment_succeeded", id_="evt_crash")
    webhook.processed.crash_once = True
    first = webhook.send(evt)
    assert first.status_code == 500  # Stripe delivers it again
    assert webhook.status() == "paid"  # the state change was stored before the crash
    again = webhook.send(evt)
    assert again.status_code == 200 and body_of(again)["outcome"] == "unchanged"
    assert webhook.processed.seen("evt_crash")
    # The finance rows were written twice with the same keys (event id; invoice version): the
    # views keep one copy of each.
    assert {p.provider_event_id for p in webhook.finance.payments} == {"evt_crash"}
    assert set(webhook.finance.invoices) == {("inv_ours", 2, "paid")}


def test_a_concurrent_write_is_read_again_and_decided_again(webhook):
    webhook.invoices.rival_once = True
    assert webhook.send(event("invoice.paid")).status_code == 200
    assert webhook.status() == "paid" and webhook.stored().version == 3  # the rival's write, then ours


# -- finding the invoice, and events we do not act on ------------------------------------------


def test_without_our_metadata_the_invoice_is_found_by_the_provider_id(webhook):
    response = webhook.send(event("invoice.paid", invoice_id=None, provider_id="in_123"))
    assert body_of(response) == {"received": True, "outcome": "applied", "invoice_id": "inv_ours"}
    assert webhook.status() == "paid"


def test_an_invoice_that_is_not_ours_is_answered_200_and_changes_nothing(webhook):
    response = webhook.send(event("invoice.paid", invoice_id=None, provider_id="in_other"))
    assert response.status_code == 200 and body_of(response)["outcome"] == "unknown_invoice"
    assert webhook.status() == "finalized" and webhook.finance.payments == []


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    logs.configure()
    buffer = io.StringIO()
    previous = logs._handler.setStream(buffer)  # type: ignore[union-attr]
    try:
        yield buffer
    finally:
        logs._handler.setStream(previous)  # type: ignore[union-attr]


@pytest.mark.parametrize("kind, obj", [
    ("customer.created", {"object": "customer", "id": "cus_1"}),
    ("invoice.upcoming", {"object": "invoice", "id": "in_123", "metadata": {"meterline_invoice_id": "inv_ours"}}),
])
def test_an_unknown_type_is_logged_once_and_answered_200(webhook, kind, obj):
    with captured_logs() as out:
        response = webhook.send({"id": "evt_unknown", "object": "event", "type": kind, "created": 1_796_000_000,
                                 "data": {"object": obj}})
    assert response.status_code == 200 and body_of(response)["outcome"] == "ignored"
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    ignored = [line for line in lines if line.get("event_type") == kind]
    assert len(ignored) == 1 and ignored[0]["event_id"] == "evt_unknown"
    _nothing_changed(webhook, "evt_unknown")


def test_the_function_refuses_to_start_without_a_webhook_secret():
    from meterline.config import ConfigError

    runtime = StripeWebhookRuntime(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="METERLINE_STRIPE_WEBHOOK_SECRET"):
        runtime.warm()


MALFORMED = [
    ("data is text", lambda e: {**e, "data": "x"}, "data"),
    ("object is a list", lambda e: {**e, "data": {"object": [1]}}, "data.object"),
    ("created far in the past", lambda e: {**e, "created": -10**15}, "created"),
    ("created far in the future", lambda e: {**e, "created": 10**15}, "created"),
    ("created as text", lambda e: {**e, "created": "yesterday"}, "created"),
    ("created as a float", lambda e: {**e, "created": 1.5}, "created"),
    ("empty currency", lambda e: _obj(e, currency=""), "data.object.currency"),
    ("currency as a number", lambda e: _obj(e, currency=840), "data.object.currency"),
    ("amount as text", lambda e: _obj(e, amount_paid="1000"), "data.object.amount_paid"),
    ("negative amount", lambda e: _obj(e, amount_paid=-1), "data.object.amount_paid"),
    ("amount beyond int64", lambda e: _obj(e, amount_paid=2**63), "data.object.amount_paid"),
    ("metadata as a list", lambda e: _obj(e, metadata=["x"]), "data.object.metadata"),
    ("our id as a number", lambda e: _obj(e, metadata={"meterline_invoice_id": 5}), "data.object.metadata.meterline_invoice_id"),
    ("provider id as an object", lambda e: _obj(e, id={"a": 1}), "data.object.id"),
    ("status as a number", lambda e: _obj(e, status=3), "data.object.status"),
    ("total as text", lambda e: _obj(e, total="1000"), "data.object.total"),
    ("due date as text", lambda e: _obj(e, due_date="soon"), "data.object.due_date"),
]


def _obj(evt: dict, **fields) -> dict:
    return {**evt, "data": {"object": {**evt["data"]["object"], **fields}}}


@pytest.mark.parametrize(("name", "change", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_signed_but_malformed_event_is_a_400_naming_the_field_and_changes_nothing(webhook, name, change, field):
    evt = change(event("invoice.payment_succeeded"))
    with captured_logs() as logged:
        response = webhook.send(evt)
    assert response.status_code == 400
    assert body_of(response) == {"status": 400, "error": "Bad Request", "code": "invalid_event",
                                 "error_details": {field: ["invalid_format"]}}
    _nothing_changed(webhook, evt["id"])
    (line,) = [orjson.loads(x) for x in logged.getvalue().splitlines() if "refused" in x]
    assert (line["severity"], line["event_id"], line["field"]) == ("WARNING", evt["id"], field)


def test_a_well_formed_currency_meterline_does_not_bill_in_is_not_refused(webhook):
    response = webhook.send(_obj(event("invoice.payment_succeeded"), currency="xts"))
    assert response.status_code == 200 and webhook.status() == "paid"


def test_without_a_webhook_secret_every_delivery_is_a_503_logged_once(tmp_path):
    from meterline.entrypoints import stripe_webhook
    from meterline.local.app import create_app
    from tests.support import embedded_runtime

    stripe_webhook._warned.clear()
    client = create_app(embedded_runtime(tmp_path)).test_client()  # no METERLINE_STRIPE_WEBHOOK_SECRET
    body = orjson.dumps(event("invoice.paid"))
    with captured_logs() as logged:
        answers = [client.post("/api/v1/stripe_webhook", data=body, headers={"Stripe-Signature": sign(body, SECRET)})
                   for _ in range(3)]
    for response in answers:
        assert response.status_code == 503 and response.headers["Retry-After"] == "300"
        assert body_of(response) == {"status": 503, "error": "Service Unavailable", "code": "webhook_not_configured"}
    lines = [orjson.loads(x) for x in logged.getvalue().splitlines()]
    assert [(x["severity"], x["message"]) for x in lines] == [
        ("ERROR", "stripe webhook not configured; deliveries answered 503 until it is")]
    assert "METERLINE_STRIPE_WEBHOOK_SECRET" in lines[0]["reason"]
