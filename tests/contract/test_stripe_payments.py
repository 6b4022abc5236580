"""`StripePayments` against localstripe (started by the `stripe_server` fixture and extended in
infra/localstripe_launcher.py where it lacks what real Stripe does).

Every request the adapter sends is also checked against stripe-python's typed request params
(`stripe.params.*`, generated from Stripe's OpenAPI spec) with pydantic, strictly and with no
unknown field, so the production calls match Stripe's published shapes, not only what
localstripe happens to accept.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import stripe
import stripe.params
from pydantic import TypeAdapter

from meterline.adapters.stripe.payments import MAX_ITEMS_PER_INVOICE, StripePayments, stripe_units
from meterline.core.invoices import Invoice, InvoiceLine
from meterline.ports import PaymentProviderError

API_KEY = "sk_test_meterline_contract"
NOV = datetime(2026, 11, 1, tzinfo=UTC)


# -- a client that records (and can crash) every call the adapter makes ---------------------------


class Crash(Exception):
    """The process died here (not a Stripe error: nothing in the adapter catches it)."""


class Recorder:
    def __init__(self):
        self.calls: list[tuple[tuple[str, ...], typing.Callable, dict | None]] = []
        self.crash_after: dict[tuple[str, ...], int] = {}  # path -> calls allowed before the crash

    def before(self, path: tuple[str, ...], method, kwargs: dict) -> None:
        if path in self.crash_after:
            if self.crash_after[path] == 0:
                del self.crash_after[path]
                raise Crash("/".join(path))
            self.crash_after[path] -= 1
        self.calls.append((path, method, kwargs.get("params")))

    def count(self, *path: str) -> int:
        return sum(1 for p, _, _ in self.calls if p == path)


class Spy:
    """Wraps a StripeClient: services are wrapped again, method calls are recorded first."""

    def __init__(self, target, recorder: Recorder, path: tuple[str, ...] = ()):
        self._target, self._recorder, self._path = target, recorder, path

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        path = self._path + (name,)
        if not callable(attr):
            return Spy(attr, self._recorder, path)

        def call(*args, **kwargs):
            self._recorder.before(path, attr, kwargs)
            return attr(*args, **kwargs)

        return call


@functools.cache
def params_adapter(name: str) -> TypeAdapter:
    """A pydantic TypeAdapter for `stripe.params.<name>`. The TypedDicts name a few types only
    under TYPE_CHECKING; they are given here (a StripeContext is never sent; metadata's
    UntypedStripeObject[str] is a str -> str mapping)."""
    import stripe._request_options as request_options
    import stripe.params.checkout

    td = getattr(stripe.params, name, None) or getattr(stripe.params.checkout, name)
    value = typing.TypeVar("value")
    namespace = {**vars(request_options), **vars(sys.modules[td.__module__]),
                 "StripeContext": str, "UntypedStripeObject": dict[str, value]}
    adapter = TypeAdapter(td)
    adapter.rebuild(_types_namespace=namespace, raise_errors=True)
    return adapter


def assert_stripe_shapes(recorder: Recorder) -> int:
    """Every recorded call's params validate strictly against its typed params, and nothing is
    dropped (an unknown field would be). Returns how many calls carried params."""
    checked = 0
    for path, method, params in recorder.calls:
        annotation = inspect.signature(method).parameters["params"].annotation
        name = getattr(annotation, "__forward_arg__", None) or re.search(r"(\w+Params)", str(annotation)).group(1)
        if params is None:
            continue
        validated = params_adapter(name).validate_python(params, strict=True)
        assert validated == params, f"{'.'.join(path)} sends fields {name} does not have: {params}"
        checked += 1
    return checked



# -- fixtures ----------------------------------------------------------------------------------


class Harness:
    def __init__(self, server):
        self.url = server.url
        server.reset()
        self.recorder = Recorder()
        self.raw = stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, max_network_retries=0)
        self.sleeps: list[float] = []
        self.payments = StripePayments(Spy(self.raw, self.recorder), sleep=self.sleeps.append)  # type: ignore[arg-type]

    def config(self, method: str, path: str, **form) -> bytes:
        data = urllib.parse.urlencode(form).encode() if form else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def forget_idempotency_keys(self) -> None:
        """What 24 hours do at Stripe."""
        self.config("DELETE", "/_config/idempotency_keys")

    def card(self, customer_id: str, number: str | None = None) -> None:
        """Give the customer a default payment method (test setup: in production the customer
        saves a card through Stripe's own pages)."""
        if number is None:
            pm = self.raw.v1.payment_methods.attach("pm_card_visa", {"customer": customer_id})
        else:
            # Stripe refuses to attach 4000000000000002 (a card check declines it, as here), so
            # it is made the default directly: every charge on it is then declined.
            pm = self.raw.v1.payment_methods.create(
                {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
        self.raw.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": pm.id}})

    def lines_of(self, remote_id: str) -> list:
        return list(self.raw.v1.invoices.line_items.list(remote_id, {"limit": 100}).auto_paging_iter())


@pytest.fixture
def harness(stripe_server) -> Iterator[Harness]:
    harness = Harness(stripe_server)
    yield harness
    assert_stripe_shapes(harness.recorder)  # every request of every test matches Stripe's shapes


def make_invoice(id_: str = "inv_1", lines: int = 3, **changes) -> Invoice:
    amounts = [26900, 1, 99_999, 0, 1234]
    made = tuple(
        InvoiceLine(
            ref=f"sub_1|pro|2026-11-01|2026-11-30|charge|tokens|model=m{i}", kind="charge",
            description=f"Tokens m{i} ([0–1000] 1000 × 0.01; [1000–∞] {i} × 0.005)",
            units=Decimal(1000 + i), precise_amount=Decimal(amounts[i % len(amounts)]) / 100,
            amount_cents=amounts[i % len(amounts)], charge_ref="tokens", filter_key=f"model=m{i}", plan_code="pro",
            from_datetime=NOV, to_datetime=NOV + timedelta(days=30),
        )
        for i in range(lines)
    )
    base = Invoice(
        id=id_, customer_external_id="acme", subscription_external_id="sub_1", currency="USD",
        period_start=date(2026, 11, 1), period_end=date(2026, 11, 30), from_utc=NOV, to_utc=NOV + timedelta(days=30),
        issuing_date=date(2026, 12, 1), grace_until=NOV + timedelta(days=30, hours=1), status="finalized",
        lines=made, number="ML-ACME-0001",
    )
    return replace(base, **changes)


def synced(harness: Harness, invoice: Invoice, customer: str | None = None) -> tuple[Invoice, object]:
    """The billing run's first provider step, with the ids stored as the run stores them."""
    customer = customer or harness.payments.ensure_customer(invoice.customer_external_id, "Acme", "billing@acme.test")
    remote = harness.payments.ensure_invoice(invoice, customer, invoice.days_until_due)
    return replace(invoice, provider_customer_id=customer, provider_invoice_id=remote.id), remote


# -- customers ---------------------------------------------------------------------------------


def test_the_customer_is_created_once_with_our_id_in_its_metadata(harness):
    first = harness.payments.ensure_customer("acme", "Acme Inc.", "billing@acme.test")
    assert harness.payments.ensure_customer("acme", "Acme Inc.", "billing@acme.test") == first
    harness.forget_idempotency_keys()  # more than 24 h later: found by its metadata
    assert harness.payments.ensure_customer("acme", "Acme Inc.", "billing@acme.test") == first
    customer = harness.raw.v1.customers.retrieve(first)
    assert (customer.name, customer.email, customer.metadata.to_dict()) == (
        "Acme Inc.", "billing@acme.test", {"meterline_customer_id": "acme"})
    assert harness.recorder.count("v1", "customers", "create") == 1
    assert harness.payments.ensure_customer("o'brien \\ co", None, None) != first  # quotes escaped in the query
    assert harness.payments.ensure_customer("o'brien \\ co", None, None) == harness.payments.ensure_customer(
        "o'brien \\ co", None, None)
    assert assert_stripe_shapes(harness.recorder) >= 4


# -- invoices ------------------------------------------------------------------------------------


def test_each_line_is_one_item_in_minor_units_and_the_totals_agree_to_the_cent(harness):
    invoice = make_invoice(lines=5)
    invoice, remote = synced(harness, invoice)
    assert remote.status == "draft"
    assert remote.total_cents == invoice.amount_cents == 26900 + 1 + 99_999 + 0 + 1234
    stripe_invoice = harness.raw.v1.invoices.retrieve(remote.id)
    assert stripe_invoice.metadata.to_dict() == {"meterline_invoice_id": "inv_1", "number": "ML-ACME-0001"}
    assert (stripe_invoice.auto_advance, stripe_invoice.collection_method, stripe_invoice.currency) == (
        False, "charge_automatically", "usd")
    lines = harness.lines_of(remote.id)
    assert [(line.amount, line.description, line.metadata.to_dict()) for line in lines] == [
        (line.amount_cents, line.description, {"meterline_invoice_id": "inv_1", "meterline_line_ref": line.ref})
        for line in invoice.lines
    ]
    # Customer search + create, invoice search + create, one list of lines, five items.
    assert assert_stripe_shapes(harness.recorder) == 2 + 2 + 1 + 5


def test_pending_items_of_the_customer_stay_off_the_invoice(harness):
    customer = harness.payments.ensure_customer("acme", None, None)
    harness.raw.v1.invoice_items.create({"customer": customer, "amount": 777, "currency": "usd"})  # someone else's
    _, remote = synced(harness, make_invoice(lines=2), customer)
    assert remote.total_cents == 26900 + 1


def test_ensure_invoice_twice_creates_nothing_twice(harness):
    invoice, first = synced(harness, make_invoice(lines=4))
    again = harness.payments.ensure_invoice(invoice, invoice.provider_customer_id, None)
    assert again == first
    assert harness.recorder.count("v1", "invoices", "create") == 1
    assert harness.recorder.count("v1", "invoice_items", "create") == 4
    assert len(harness.lines_of(first.id)) == 4


@pytest.mark.parametrize("keys_expired", [False, True], ids=["within_24h", "after_24h"])
def test_a_crash_between_two_items_resumes_without_duplicates(harness, keys_expired):
    invoice = make_invoice(lines=6)
    customer = harness.payments.ensure_customer("acme", None, None)
    harness.recorder.crash_after[("v1", "invoice_items", "create")] = 2
    with pytest.raises(Crash):
        harness.payments.ensure_invoice(invoice, customer, None)  # the run dies after 2 of 6 items
    if keys_expired:
        harness.forget_idempotency_keys()
    # The next run never stored the Stripe invoice's id: it finds the invoice by its metadata.
    remote = harness.payments.ensure_invoice(invoice, customer, None)
    lines = harness.lines_of(remote.id)
    assert [line.metadata.to_dict()["meterline_line_ref"] for line in lines] == [line.ref for line in invoice.lines]
    assert remote.total_cents == invoice.amount_cents
    assert len(harness.raw.v1.invoices.search({"query": "metadata['meterline_invoice_id']:'inv_1'"}).data) == 1


def test_a_crash_right_after_the_invoice_is_created_resumes_on_the_same_invoice(harness):
    invoice = make_invoice(lines=2)
    customer = harness.payments.ensure_customer("acme", None, None)
    harness.recorder.crash_after[("v1", "invoice_items", "create")] = 0
    with pytest.raises(Crash):
        harness.payments.ensure_invoice(invoice, customer, None)
    harness.forget_idempotency_keys()
    remote = harness.payments.ensure_invoice(invoice, customer, None)
    assert remote.total_cents == invoice.amount_cents and harness.recorder.count("v1", "invoices", "create") == 1


def test_more_than_250_lines_are_refused_before_anything_is_sent(harness):
    invoice = make_invoice(lines=MAX_ITEMS_PER_INVOICE + 1)
    with pytest.raises(PaymentProviderError) as caught:
        harness.payments.ensure_invoice(invoice, "cus_unused", None)
    assert caught.value.code == "too_many_lines" and not caught.value.retryable
    assert harness.recorder.calls == []


# -- finalize and collect -----------------------------------------------------------------------


def test_finalize_opens_the_invoice_with_our_total(harness):
    invoice, _ = synced(harness, make_invoice())
    finalized = harness.payments.finalize_invoice(invoice)
    assert (finalized.status, finalized.total_cents) == ("open", invoice.amount_cents)
    assert finalized.hosted_invoice_url
    assert harness.payments.finalize_invoice(invoice) == finalized  # a rerun: Stripe replays the first answer
    harness.forget_idempotency_keys()
    assert harness.payments.finalize_invoice(invoice).status == "open"  # days later: "already finalized", read back
    stripe_invoice = harness.raw.v1.invoices.retrieve(invoice.provider_invoice_id)
    assert stripe_invoice.auto_advance is False
    assert assert_stripe_shapes(harness.recorder) > 0


def test_collect_charges_the_saved_card(harness):
    invoice, _ = synced(harness, make_invoice())
    harness.card(invoice.provider_customer_id)
    harness.payments.finalize_invoice(invoice)
    paid = harness.payments.collect(invoice)
    assert (paid.status, paid.total_cents, paid.failure_code) == ("paid", invoice.amount_cents, None)
    harness.forget_idempotency_keys()
    assert harness.payments.collect(invoice).status == "paid"  # "already paid", read back: no second charge
    charges = harness.raw.v1.charges.list({"customer": invoice.provider_customer_id}).data
    assert [c.amount for c in charges] == [invoice.amount_cents]


@pytest.mark.parametrize("card", ["4000000000000002", "4000000000000341"])
def test_a_declined_card_is_a_result_not_an_exception(harness, card):
    invoice, _ = synced(harness, make_invoice())
    harness.card(invoice.provider_customer_id, card)
    harness.payments.finalize_invoice(invoice)
    result = harness.payments.collect(invoice)
    assert (result.status, result.failure_code, result.total_cents) == ("payment_failed", "card_declined", invoice.amount_cents)
    assert harness.raw.v1.invoices.retrieve(invoice.provider_invoice_id).status == "open"  # Stripe keeps it open


def test_send_invoice_path(harness):
    invoice, remote = synced(harness, make_invoice(collection_method="send_invoice", days_until_due=14))
    stripe_invoice = harness.raw.v1.invoices.retrieve(remote.id)
    assert (stripe_invoice.collection_method, stripe_invoice.days_until_due) == ("send_invoice", 14)
    finalized = harness.payments.finalize_invoice(invoice)
    sent = harness.payments.collect(invoice)
    assert (finalized.status, sent.status, sent.total_cents) == ("open", "open", invoice.amount_cents)
    assert harness.recorder.count("v1", "invoices", "send_invoice") == 1
    assert harness.recorder.count("v1", "invoices", "pay") == 0
    assert assert_stripe_shapes(harness.recorder) > 0


def test_a_zero_invoice_is_paid_by_its_finalization(harness):
    zero = make_invoice(lines=1)
    zero = replace(zero, lines=(replace(zero.lines[0], amount_cents=0, precise_amount=Decimal(0)),))
    invoice, _ = synced(harness, zero)
    assert harness.payments.finalize_invoice(invoice).status == "paid"
    assert harness.payments.collect(invoice).status == "paid"  # nothing to charge


# -- a customer without a payment method --------------------------------------------------------


def test_a_customer_without_a_payment_method_is_a_result_and_nothing_is_charged(harness):
    invoice, _ = synced(harness, make_invoice())
    harness.payments.finalize_invoice(invoice)
    assert harness.payments.payment_method(invoice.provider_customer_id) is None
    result = harness.payments.collect(invoice)
    assert (result.status, result.failure_code, result.total_cents) == ("payment_failed", "no_payment_method",
                                                                        invoice.amount_cents)
    remote = harness.raw.v1.invoices.retrieve(invoice.provider_invoice_id)
    assert (remote.status, remote.attempt_count, remote.amount_paid) == ("open", 0, 0)  # Stripe keeps it open
    assert harness.raw.v1.charges.list({"customer": invoice.provider_customer_id}).data == []
    # Asked again (a later run): the same answer, still nothing charged.
    assert harness.payments.collect(invoice).failure_code == "no_payment_method"
    assert harness.raw.v1.charges.list({"customer": invoice.provider_customer_id}).data == []


def test_a_card_saved_on_checkout_is_found_and_charged_though_it_is_not_the_default(harness):
    invoice, _ = synced(harness, make_invoice())
    harness.payments.finalize_invoice(invoice)
    assert harness.payments.collect(invoice).failure_code == "no_payment_method"

    url = harness.payments.checkout_url(invoice.provider_customer_id, "https://billing.example.test/done", ["card"])
    session_id = url.rsplit("/", 1)[1]
    session = harness.raw.v1.checkout.sessions.retrieve(session_id)
    assert url.startswith("https://checkout.stripe.com/") and session.url == url
    assert (session.mode, session.customer, session.success_url, session.status, session.payment_method_types) == (
        "setup", invoice.provider_customer_id, "https://billing.example.test/done", "open", ["card"])
    harness.config("POST", f"/_config/checkout_sessions/{session_id}/complete")  # the customer saves a card there
    assert harness.raw.v1.checkout.sessions.retrieve(session_id).status == "complete"

    customer = harness.raw.v1.customers.retrieve(invoice.provider_customer_id)
    assert customer.invoice_settings.default_payment_method is None  # attached, not the default
    method = harness.payments.payment_method(invoice.provider_customer_id)
    assert method is not None and method.startswith("pm_")
    paid = harness.payments.collect(invoice, method)
    assert (paid.status, paid.failure_code) == ("paid", None)
    charges = harness.raw.v1.charges.list({"customer": invoice.provider_customer_id}).data
    assert [(c.amount, c.status, c.payment_method) for c in charges] == [(invoice.amount_cents, "succeeded", method)]
    assert harness.payments.collect(invoice, method).status == "paid"  # repeated: replayed, no second charge
    assert len(harness.raw.v1.charges.list({"customer": invoice.provider_customer_id}).data) == 1


def test_collect_without_a_method_charges_an_attached_card_that_is_not_the_default(harness):
    invoice, _ = synced(harness, make_invoice())
    harness.payments.finalize_invoice(invoice)
    harness.raw.v1.payment_methods.attach("pm_card_visa", {"customer": invoice.provider_customer_id})
    assert harness.payments.collect(invoice).status == "paid"  # pay refused (no default), then paid with it
    assert harness.recorder.count("v1", "invoices", "pay") == 2


def test_the_default_payment_method_is_preferred(harness):
    customer = harness.payments.ensure_customer("acme", None, None)
    harness.raw.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    harness.card(customer)  # another one, made the default
    default = harness.raw.v1.customers.retrieve(customer).invoice_settings.default_payment_method
    assert harness.payments.payment_method(customer) == default


# -- errors ------------------------------------------------------------------------------------


def test_a_rate_limit_is_retried_with_bounded_backoff(harness):
    harness.config("POST", "/_config/rate_limit", count=3)
    customer = harness.payments.ensure_customer("acme", None, None)
    assert customer.startswith("cus_")
    assert len(harness.sleeps) == 3 and all(0 <= s <= 8.0 for s in harness.sleeps)
    assert harness.config("GET", "/_config/rate_limit") == b'{\n  "remaining": 0\n}\n'


def test_a_rate_limit_that_does_not_end_is_a_retryable_provider_error(harness):
    payments = StripePayments(harness.raw, max_attempts=3, sleep=lambda s: None)
    harness.config("POST", "/_config/rate_limit", count=10)
    with pytest.raises(PaymentProviderError) as caught:
        payments.ensure_customer("acme", None, None)
    assert (caught.value.http_status, caught.value.retryable, caught.value.operation) == (429, True, "customers.search")
    harness.config("POST", "/_config/rate_limit", count=0)


def test_other_errors_are_typed_and_carry_no_secret(harness):
    invoice = make_invoice(provider_invoice_id="in_does_not_exist")
    with pytest.raises(PaymentProviderError) as caught:
        harness.payments.finalize_invoice(invoice)
    assert caught.value.http_status == 404 and not caught.value.retryable
    assert API_KEY not in str(caught.value)
    bad_key = StripePayments(stripe.StripeClient("sk_test_x", base_addresses={"api": "http://127.0.0.1:9"},
                                                 max_network_retries=0), max_attempts=2, sleep=lambda s: None)
    with pytest.raises(PaymentProviderError) as unreachable:
        bad_key.ensure_customer("acme", None, None)
    assert unreachable.value.retryable and "sk_test_x" not in str(unreachable.value)


# -- the harness behaves like Stripe where the adapter relies on it -----------------------------


def test_localstripe_replays_an_idempotent_request_and_refuses_a_reused_key(harness):
    def post(form: dict, key: str):
        request = urllib.request.Request(harness.url + "/v1/customers", data=urllib.parse.urlencode(form).encode(),
                                         headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Idempotent-Replayed"), response.read()
        except urllib.error.HTTPError as err:
            return err.code, None, err.read()

    first = post({"name": "A"}, "k1")
    replay = post({"name": "A"}, "k1")
    assert (first[0], replay[0], replay[1], replay[2]) == (200, 200, "true", first[2])
    assert post({"name": "B"}, "k1")[0] == 400  # same key, other parameters


def test_stripe_units_follow_stripe_s_exponents():
    assert stripe_units(26900, "USD", to_stripe=True) == 26900
    assert stripe_units(500, "JPY", to_stripe=True) == 500
    assert stripe_units(5, "ISK", to_stripe=True) == 500  # ISK: two decimals in Stripe's API
    assert stripe_units(500, "isk", to_stripe=False) == 5
    assert stripe_units(1200, "MGA", to_stripe=True) == 12  # MGA: zero-decimal at Stripe
    with pytest.raises(PaymentProviderError):
        stripe_units(1250, "MGA", to_stripe=True)  # half an ariary cannot be sent
