"""End to end: the billing run collects through a real localstripe, and localstripe's signed
webhooks reach the real `stripe_webhook` function.

    BillingService.run (this process; the `Billing` harness: SQLite invoice store, DuckDB
        |               warehouse, the example catalog, `acme` on the hybrid plan, November's events)
        |-- StripePayments (from Settings stripe_api_key / stripe_api_base) --HTTP--> localstripe
    localstripe --signed POST--> stripe_webhook (functions-framework on a loopback port)
                             --> the SAME SQLite invoice store (its data dir holds a symlink to
                                 the harness's SQLite file; its DuckDB is its own, because DuckDB
                                 admits one process and this one holds the harness's)

One localstripe for the whole session (`stripe_server`), reset before each test. localstripe
cannot forget a webhook, so the one registered here is pointed at an event type that never
happens when its test ends.

What localstripe cannot show: `GET /v1/invoiceitems` lists only PENDING items there (real Stripe
lists all), so an invoice's items are counted through its lines, and "no stray item" is "no
pending item".
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
import stripe

from infra.servers import LocalServer, start_function
from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents
from meterline.adapters.stripe.payments import StripePayments
from meterline.config import Settings
from meterline.core.invoices import Invoice
from tests.harness.billing import DEC, HOUR, JAN, Billing, amounts, save_card
from tests.harness.november import EXPECTED

pytestmark = pytest.mark.servers

API_KEY = "sk_test_meterline_billing_e2e"
SECRET = "whsec_billing_e2e"
HOOK_ID = "meterline-billing-e2e"
HOOK_EVENTS = ("invoice.finalized", "invoice.payment_succeeded", "invoice.paid", "invoice.payment_failed",
               "invoice.voided")
AFTER_GRACE = DEC + 2 * HOUR  # November's invoice is past its one-hour grace period
DECLINED = "4000000000000002"
NO_CARD = ""
STEPS = ("ensure_customer", "ensure_invoice", "finalize_invoice", "collect")
WAIT_SECONDS = 10.0


# -- the provider as the run sees it ---------------------------------------------------------------


class Provider:
    """The real `StripePayments`, with two test-only additions:

    * the customer "saves a card" as soon as the run has made their Stripe customer (test
      setup: in production the customer does it on Stripe's pages); `cards` maps our customer
      id to a card number (None: pm_card_visa);
    * a crash: `RuntimeError("crash")` raised `times` times (None: always) at `crash_at`, before
      or after the real call, for every customer or for `only` one."""

    def __init__(self, harness: StripeBilling, crash_at: str | None = None, when: str = "before",
                 only: str | None = None, times: int | None = 1, barrier: threading.Barrier | None = None):
        assert crash_at in (None, *STEPS) and when in ("before", "after")
        self.real = harness.payments()
        self.harness = harness
        self.crash_at, self.when, self.only, self.left = crash_at, when, only, times
        self.barrier = barrier
        self.crashes = 0

    def _crash(self, step: str, when: str, customer: str) -> None:
        if step != self.crash_at or when != self.when or (self.only is not None and customer != self.only):
            return
        if self.left is not None:
            if self.left == 0:
                return
            self.left -= 1
        self.crashes += 1
        raise RuntimeError("crash")

    def _step(self, step: str, customer: str, call):
        self._crash(step, "before", customer)
        out = call()
        self._crash(step, "after", customer)
        return out

    def ensure_customer(self, customer_external_id: str, name: str | None, email: str | None) -> str:
        if self.barrier is not None:  # two runs at once: meet at their first call, so that both call Stripe together
            barrier, self.barrier = self.barrier, None
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

        def call():
            customer_id = self.real.ensure_customer(customer_external_id, name, email)
            self.harness.give_card(customer_external_id, customer_id)
            return customer_id

        return self._step("ensure_customer", customer_external_id, call)

    def ensure_invoice(self, invoice: Invoice, provider_customer_id: str, days_until_due: int | None):
        return self._step("ensure_invoice", invoice.customer_external_id,
                          lambda: self.real.ensure_invoice(invoice, provider_customer_id, days_until_due))

    def finalize_invoice(self, invoice: Invoice):
        return self._step("finalize_invoice", invoice.customer_external_id, lambda: self.real.finalize_invoice(invoice))

    def collect(self, invoice: Invoice, payment_method: str | None = None):
        self.harness.pay_calls += 1
        return self._step("collect", invoice.customer_external_id, lambda: self.real.collect(invoice, payment_method))

    def payment_method(self, provider_customer_id: str) -> str | None:
        return self.real.payment_method(provider_customer_id)

    def checkout_url(self, provider_customer_id: str, success_url: str, payment_method_types: list[str]) -> str:
        return self.real.checkout_url(provider_customer_id, success_url, payment_method_types)


# -- the harness ------------------------------------------------------------------------------------


class StripeBilling:
    """The `Billing` harness (embedded runtime, example catalog, acme on the hybrid plan since
    2026-11-01, November's events) with a Stripe client on localstripe."""

    def __init__(self, tmp_path, server: LocalServer):
        server.reset()
        self.server = server
        self.data_dir = tmp_path
        self.billing = Billing(tmp_path)
        self.invoices = self.billing.invoices
        self.settings = Settings(backend="embedded", data_dir=tmp_path, stripe_api_key=API_KEY,
                                 stripe_api_base=server.url)
        self.stripe = stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, max_network_retries=0)
        self.cards: dict[str, str | None] = {}  # NO_CARD: the customer saves none
        self.pay_calls = 0  # collect calls of the runs' providers
        self._carded: set[str] = set()
        self._lock = threading.Lock()

    def forget_idempotency_keys(self) -> None:
        """What 24 hours do at Stripe (localstripe_launcher's harness-only route)."""
        request = urllib.request.Request(f"{self.server.url}/_config/idempotency_keys", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def payments(self) -> StripePayments:
        return StripePayments.from_settings(self.settings)

    def add_customer(self, external_id: str) -> None:
        """Another customer on the hybrid plan since November 1 (no usage: its base fee and nothing else)."""
        self.billing.admin.upsert_customer({"external_id": external_id, "name": external_id.title(), "currency": "USD",
                                            "timezone": "UTC"})
        self.billing.admin.create_subscription({"external_id": f"sub_{external_id}", "external_customer_id": external_id,
                                                "plan_code": self.billing.plan.code,
                                                "subscription_at": "2026-11-01T00:00:00Z"})

    def give_card(self, external_id: str, customer_id: str) -> None:
        with self._lock:
            if customer_id in self._carded:
                return
            number = self.cards.get(external_id)
            if number == NO_CARD:
                return
            save_card(self.stripe, customer_id, number)
            self._carded.add(customer_id)

    def run(self, provider=None, as_of=AFTER_GRACE):
        return self.billing.service(payments=provider if provider is not None else Provider(self)).run(as_of)

    def ours(self) -> list[Invoice]:
        return self.billing.all()

    def get(self, invoice_id: str) -> Invoice:
        found = self.invoices.get(invoice_id)
        assert found is not None
        return found

    # -- what Stripe holds -----------------------------------------------------------------------

    def stripe_customers(self, external_id: str) -> list:
        return [c for c in self.stripe.v1.customers.list({"limit": 100}).data
                if _meta(c).get("meterline_customer_id") == external_id]

    def stripe_invoices(self, customer_id: str) -> list:
        return self.stripe.v1.invoices.list({"customer": customer_id, "limit": 100}).data

    def stripe_lines(self, remote_id: str) -> list:
        return list(self.stripe.v1.invoices.line_items.list(remote_id, {"limit": 100}).auto_paging_iter())

    def pending_items(self, customer_id: str) -> list:
        return self.stripe.v1.invoice_items.list({"customer": customer_id, "limit": 100}).data

    def charges(self, customer_id: str) -> list:
        return self.stripe.v1.charges.list({"customer": customer_id, "limit": 100}).data

    def payment_intents(self, customer_id: str) -> list:
        return [pi for pi in self.stripe.v1.payment_intents.list({"limit": 100}).data if pi.customer == customer_id]

    def events(self, kind: str, remote_id: str) -> list[str]:
        return [e.id for e in self.stripe.v1.events.list({"type": kind, "limit": 100}).data
                if e.data.object.id == remote_id]

    def processed(self, event_id: str) -> bool:
        return SqliteProcessedEvents(self.billing.runtime.adapters.db).seen(event_id)


@pytest.fixture
def h(tmp_path, stripe_server) -> StripeBilling:
    return StripeBilling(tmp_path, stripe_server)


def _post_form(url: str, pairs: list[tuple[str, str]]) -> None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(pairs).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def webhook(h: StripeBilling, tmp_path) -> Iterator[LocalServer]:
    """The real function on a loopback port, over the harness's SQLite file, registered in
    localstripe with a signing secret for the invoice events."""
    hook_dir = tmp_path / "webhook"
    hook_dir.mkdir()
    sqlite_path = Settings(data_dir=tmp_path).sqlite_path
    assert sqlite_path.exists()  # made by the harness
    os.symlink(sqlite_path, Settings(data_dir=hook_dir).sqlite_path)
    server = start_function(
        "functions/stripe_webhook/main.py", "stripe_webhook",
        env={"METERLINE_BACKEND": "embedded", "METERLINE_DATA_DIR": str(hook_dir),
             "METERLINE_STRIPE_WEBHOOK_SECRET": SECRET, "THREADS": "4"},
    )
    hook_url = f"{h.server.url}/_config/webhooks/{HOOK_ID}"
    try:
        _post_form(hook_url, [("url", server.url + "/"), ("secret", SECRET), *[("events[]", e) for e in HOOK_EVENTS]])
        yield server
    finally:
        _post_form(hook_url, [("url", server.url + "/"), ("secret", SECRET), ("events[]", "meterline.none")])
        server.stop()


def _meta(obj) -> dict:
    """A Stripe object's metadata as a plain dict."""
    return obj.to_dict().get("metadata") or {}


def _wait(predicate, what: str, seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


# -- the checks ---------------------------------------------------------------------------------


def assert_exactly_at_stripe(h: StripeBilling, ours: Invoice) -> object:
    """Our invoice is at Stripe once: one customer with our id, one invoice with our id, its
    total ours to the cent, one item per line of ours (integer minor units, our ids in the
    metadata), and no stray pending item. Returns the Stripe invoice."""
    (customer,) = h.stripe_customers(ours.customer_external_id)
    assert ours.provider_customer_id == customer.id
    remote = [i for i in h.stripe_invoices(customer.id) if _meta(i).get("meterline_invoice_id") == ours.id]
    assert len(remote) == 1, f"{len(remote)} Stripe invoices carry {ours.id}"
    (remote,) = remote
    assert remote.id == ours.provider_invoice_id
    assert _meta(remote)["number"] == ours.number
    assert remote.currency == ours.currency.lower() == "usd"
    assert remote.total == ours.amount_cents
    lines = h.stripe_lines(remote.id)
    assert len(lines) == len(ours.lines)
    by_ref = {_meta(line)["meterline_line_ref"]: line for line in lines}
    assert set(by_ref) == {line.ref for line in ours.lines}
    for line in ours.lines:
        theirs = by_ref[line.ref]
        assert isinstance(theirs.amount, int) and theirs.amount == line.amount_cents
        assert _meta(theirs)["meterline_invoice_id"] == ours.id
        assert theirs.description == line.description
    assert sum(line.amount for line in lines) == ours.amount_cents
    assert h.pending_items(customer.id) == []
    return remote


def assert_paid_once(h: StripeBilling, ours: Invoice, remote) -> None:
    remote = h.stripe.v1.invoices.retrieve(remote.id)
    assert remote.status == "paid" and remote.amount_paid == ours.amount_cents
    charges = h.charges(ours.provider_customer_id)
    assert [(c.amount, c.status) for c in charges] == [(ours.amount_cents, "succeeded")]
    assert len(h.payment_intents(ours.provider_customer_id)) == 1
    assert ours.status == "paid" and ours.paid_at is not None


# -- 1. a month of the hybrid plan, through Stripe and back by the webhook --------------------------


def test_a_month_of_the_hybrid_plan_is_invoiced_at_stripe_to_the_cent_paid_and_confirmed_by_the_webhook(h, webhook):
    result = h.run(as_of=DEC + HOUR / 2)  # in the grace period: a draft, and nothing sent to Stripe
    assert (result.drafted, result.finalized, result.collected) == (1, 0, 0)
    assert h.stripe.v1.customers.list({"limit": 100}).data == []

    result = h.run()
    assert (result.finalized, result.collected, result.failed, result.flagged) == (1, 1, {}, [])
    (ours,) = h.ours()
    assert amounts(ours) == EXPECTED and ours.amount_cents == 26900  # prorated seats, graduated tokens
    assert ours.status == "paid" and ours.provider_step == "collected" and ours.number.endswith("-0001")
    (customer,) = h.stripe_customers("acme")
    assert customer.name == "Acme"
    remote = assert_exactly_at_stripe(h, ours)
    assert remote.collection_method == "charge_automatically" and remote.auto_advance is False
    assert_paid_once(h, ours, remote)

    # localstripe signs and delivers invoice.payment_succeeded to the function, which handles it.
    (succeeded,) = h.events("invoice.payment_succeeded", remote.id)
    _wait(lambda: h.processed(succeeded), f"the webhook handles {succeeded}")
    paid = h.get(ours.id)
    assert paid.status == "paid" and paid.amount_cents == 26900 and paid.hosted_invoice_url

    # Nothing left to do: another run sends nothing more.
    again = h.run(as_of=AFTER_GRACE + HOUR)
    assert (again.finalized, again.collected, again.failed) == (0, 0, {})
    assert_paid_once(h, h.get(ours.id), remote)


def test_when_the_run_dies_right_after_the_charge_the_webhook_alone_makes_our_invoice_paid(h, webhook):
    result = h.run(Provider(h, crash_at="collect", when="after"))
    assert result.failed == {"sub_acme": "RuntimeError"}
    (ours,) = h.ours()
    assert (ours.status, ours.provider_step) == ("finalized", "finalized")  # charged at Stripe, not here

    paid = _wait(lambda: (i := h.get(ours.id)).status == "paid" and i, "the webhook marks the invoice paid")
    assert paid.paid_at is not None and paid.number == ours.number
    remote = assert_exactly_at_stripe(h, paid)
    assert_paid_once(h, paid, remote)

    result = h.run()  # a paid invoice needs nothing more
    assert (result.collected, result.failed) == (0, {})
    assert_paid_once(h, h.get(ours.id), remote)


# -- 2. a declined card ---------------------------------------------------------------------------


def test_a_declined_card_leaves_our_invoice_payment_failed(h, webhook):
    h.cards["acme"] = DECLINED
    result = h.run()
    assert (result.collected, result.failed) == (1, {})
    (ours,) = h.ours()
    assert (ours.status, ours.provider_step, ours.paid_at) == ("payment_failed", "collected", None)
    remote = assert_exactly_at_stripe(h, ours)
    remote = h.stripe.v1.invoices.retrieve(remote.id)
    assert (remote.status, remote.amount_paid, remote.attempt_count) == ("open", 0, 1)
    assert [c.status for c in h.charges(ours.provider_customer_id)] == ["failed"]

    (failed,) = h.events("invoice.payment_failed", remote.id)
    _wait(lambda: h.processed(failed), f"the webhook handles {failed}")
    assert h.get(ours.id).status == "payment_failed"
    # A payment_failed invoice is Stripe's to retry (or the customer's): the run does not charge again.
    assert h.run(as_of=AFTER_GRACE + HOUR).collected == 0
    assert len(h.charges(ours.provider_customer_id)) == 1


# -- 3. reruns and concurrent runs ----------------------------------------------------------------


def _assert_one_invoice_per_subscription_period(h: StripeBilling, expected: set[tuple[str, str]]) -> None:
    ours = h.ours()
    keys = [(i.subscription_external_id, i.period_start.isoformat()) for i in ours]
    assert sorted(keys) == sorted(expected)  # one each, nothing else
    assert {i.status for i in ours} == {"paid"}
    by_customer: dict[str, list[Invoice]] = {}
    for invoice in ours:
        by_customer.setdefault(invoice.customer_external_id, []).append(invoice)
        remote = assert_exactly_at_stripe(h, invoice)
        assert h.stripe.v1.invoices.retrieve(remote.id).status == "paid"
    for customer, invoices in by_customer.items():
        (stripe_customer,) = h.stripe_customers(customer)
        assert len(h.stripe_invoices(stripe_customer.id)) == len(invoices)
        charges = h.charges(stripe_customer.id)
        assert sorted(c.amount for c in charges) == sorted(i.amount_cents for i in invoices)
        assert len(h.payment_intents(stripe_customer.id)) == len(invoices)


EXPECTED_KEYS = {("sub_acme", "2026-11-01"), ("sub_acme", "2026-12-01"),
                 ("sub_globex", "2026-11-01"), ("sub_globex", "2026-12-01")}


def test_three_runs_in_a_row_make_one_invoice_per_subscription_period_here_and_at_stripe(h):
    h.add_customer("globex")
    results = [h.run(as_of=JAN + 2 * HOUR) for _ in range(3)]
    assert [(r.finalized, r.collected, r.failed) for r in results] == [(4, 4, {}), (0, 0, {}), (0, 0, {})]
    _assert_one_invoice_per_subscription_period(h, EXPECTED_KEYS)
    november = {i.subscription_external_id: i for i in h.ours() if i.period_start == DEC.date() - timedelta(days=30)}
    assert november["sub_acme"].amount_cents == 26900


def test_two_runs_at_once_make_one_invoice_per_subscription_period_here_and_at_stripe(h):
    h.add_customer("globex")
    barrier = threading.Barrier(2, timeout=3)
    results, errors = [], []

    def run():
        try:
            results.append(h.run(Provider(h, barrier=barrier), as_of=JAN + 2 * HOUR))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2
    assert not barrier.broken  # both runs reached Stripe together
    # A run that lost a versioned write to the other leaves that subscription to the next run.
    assert {error for r in results for error in r.failed.values()} <= {"StaleWrite"}
    finishing = h.run(as_of=JAN + 2 * HOUR + timedelta(minutes=5))
    assert finishing.failed == {}
    assert h.run(as_of=JAN + 3 * HOUR).collected == 0
    _assert_one_invoice_per_subscription_period(h, EXPECTED_KEYS)
    numbers = sorted(i.number for i in h.ours())
    assert len(set(numbers)) == 4


# -- 4. a crash before and after each Stripe call -------------------------------------------------


@pytest.mark.parametrize("later", [False, True], ids=["next-run", "a-day-later"])
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
def test_a_crash_around_each_stripe_call_is_resumed_by_the_next_run_with_no_duplicate(h, step, when, later):
    crashing = Provider(h, crash_at=step, when=when)
    result = h.run(crashing)
    assert crashing.crashes == 1
    assert result.failed == {"sub_acme": "RuntimeError"} and result.collected == 0
    (ours,) = h.ours()
    assert ours.status == "finalized"  # finalized here before Stripe is called; never paid by a crashed run
    if later:  # Stripe has forgotten the idempotency keys: only looking before creating prevents duplicates
        h.forget_idempotency_keys()

    result = h.run(Provider(h))  # the plain provider (the card is the customer's, as before)
    assert (result.collected, result.failed, result.flagged) == (1, {}, [])
    (ours,) = h.ours()
    assert ours.provider_step == "collected"
    remote = assert_exactly_at_stripe(h, ours)
    assert ours.amount_cents == remote.total == 26900
    assert_paid_once(h, ours, remote)


# -- 5. one customer's Stripe failure does not block the others -----------------------------------


def test_a_customer_whose_stripe_step_fails_does_not_block_the_others_and_is_collected_next_run(h):
    h.add_customer("globex")
    failing = Provider(h, crash_at="ensure_invoice", when="before", only="globex", times=None)
    result = h.run(failing)
    assert result.failed == {"sub_globex": "RuntimeError"}
    assert (result.finalized, result.collected) == (2, 1)
    invoices = {i.customer_external_id: i for i in h.ours()}
    assert invoices["acme"].status == "paid"
    assert (invoices["globex"].status, invoices["globex"].provider_step) == ("finalized", None)
    assert_paid_once(h, invoices["acme"], assert_exactly_at_stripe(h, invoices["acme"]))

    result = h.run(as_of=AFTER_GRACE + HOUR)
    assert (result.collected, result.failed) == (1, {})
    invoices = {i.customer_external_id: i for i in h.ours()}
    assert {c: i.status for c, i in invoices.items()} == {"acme": "paid", "globex": "paid"}
    for invoice in invoices.values():
        assert_paid_once(h, invoice, assert_exactly_at_stripe(h, invoice))
    assert invoices["globex"].amount_cents == 4900  # the base fee alone: no usage


# -- 5. a customer without a card, and one who is sent the invoice ---------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("meterline")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_customer_without_a_card_fails_once_waits_quietly_and_is_charged_once_a_card_is_saved(h, records):
    h.cards["acme"] = NO_CARD
    result = h.run()
    assert (result.collected, result.failed, result.flagged) == (1, {}, [])
    (ours,) = h.ours()
    assert (ours.status, ours.payment_status, ours.flag, ours.provider_step) == (
        "payment_failed", "failed", "no_payment_method", "collected")
    remote = assert_exactly_at_stripe(h, ours)
    remote = h.stripe.v1.invoices.retrieve(remote.id)
    assert (remote.status, remote.amount_paid) == ("open", 0)
    assert h.charges(ours.provider_customer_id) == []
    # One WARNING line, with the invoice and the reason, and no stack trace; nothing worse.
    (warning,) = records.at(logging.WARNING)
    assert warning.levelno == logging.WARNING and not warning.exc_info
    assert warning.fields["invoice_id"] == ours.id and warning.fields["reason"] == "no_payment_method"  # type: ignore[attr-defined]

    # The next runs look (one read of the customer at Stripe) but charge nothing and log nothing.
    records.records.clear()
    calls = h.pay_calls
    for later in (HOUR, 2 * HOUR):
        again = h.run(as_of=AFTER_GRACE + later)
        assert (again.collected, again.failed) == (0, {})
    assert h.pay_calls == calls and records.at(logging.WARNING) == []
    assert h.get(ours.id).flag == "no_payment_method" and h.charges(ours.provider_customer_id) == []

    # The customer saves a card on Stripe's Checkout page (not made their default there).
    url = h.payments().checkout_url(ours.provider_customer_id, "https://billing.example.test/thanks", ["card"])
    _post_form(f"{h.server.url}/_config/checkout_sessions/{url.rsplit('/', 1)[1]}/complete", [])
    result = h.run(as_of=AFTER_GRACE + 3 * HOUR)
    assert (result.collected, result.failed) == (1, {})
    paid = h.get(ours.id)
    assert (paid.status, paid.flag, paid.paid_at) == ("paid", None, AFTER_GRACE + 3 * HOUR)
    assert_paid_once(h, paid, remote)
    assert records.at(logging.WARNING) == []
    assert h.run(as_of=AFTER_GRACE + 4 * HOUR).collected == 0  # paid: nothing more
    assert_paid_once(h, h.get(ours.id), remote)


def test_a_customer_on_send_invoice_is_sent_stripe_s_invoice_with_a_due_date_and_never_charged(h):
    h.billing.admin.upsert_customer({"external_id": "acme", "net_payment_term": 14,
                                     "billing_configuration": {"collection_method": "send_invoice"}})
    h.cards["acme"] = NO_CARD
    result = h.run()
    assert (result.collected, result.failed) == (1, {})
    (ours,) = h.ours()
    assert (ours.status, ours.collection_method, ours.days_until_due, ours.flag) == (
        "finalized", "send_invoice", 14, None)
    remote = assert_exactly_at_stripe(h, ours)
    remote = h.stripe.v1.invoices.retrieve(remote.id)
    assert (remote.collection_method, remote.days_until_due, remote.status) == ("send_invoice", 14, "open")
    assert remote.due_date == remote.status_transitions.finalized_at + 14 * 86_400
    assert remote.hosted_invoice_url and ours.hosted_invoice_url == remote.hosted_invoice_url
    assert h.events("invoice.sent", remote.id)  # Stripe emails the customer its hosted page
    assert h.charges(ours.provider_customer_id) == [] and remote.attempt_count == 0  # no pay call
    assert h.run(as_of=AFTER_GRACE + HOUR).collected == 0  # sent once
    assert len(h.events("invoice.sent", remote.id)) == 1
