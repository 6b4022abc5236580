"""Reconciliation against a real localstripe: each discrepancy finance must see is a flagged row
of the `reconciliation` report, and a clean month flags nothing.

    BillingService.run (the `Billing` harness: SQLite invoice store, DuckDB warehouse, the
        |               example catalog, `acme` on the hybrid plan with November's events)
        |-- StripePayments --HTTP--> localstripe (one per session, reset per test)
    localstripe's events (GET /v1/events, as Stripe would deliver them) --> PaymentEvents.handle
        (the webhook's service, in this process, over the same stores; signatures are the
        webhook function's own tests)
    Reconciliation.report(December)   (invoices issued in December: November's)

An event not handed to the webhook service is a webhook that was never delivered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import datetime
from decimal import Decimal

import orjson
import pytest
import stripe

from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents
from meterline.adapters.stripe.payments import StripePayments
from meterline.adapters.stripe.webhooks import event_from_stripe
from meterline.config import Settings
from meterline.core.invoices import Invoice
from meterline.core.reports import parse_month
from meterline.services.payments import PaymentEvents
from meterline.services.reconcile import Reconciliation
from tests.harness.billing import DEC, HOUR, JAN, Billing, save_card
from tests.harness.november import EXPECTED, T, tokens

pytestmark = pytest.mark.servers

API_KEY = "sk_test_meterline_reconciliation"
DECEMBER = parse_month("2026-12")  # November's invoices are issued on December 1
JANUARY = parse_month("2027-01")
DECLINED = "4000000000000002"
NO_CARD = ""


class Cards(StripePayments):
    """The real adapter; the customer "saves a card" as soon as the run has made their Stripe
    customer (in production they do it on Stripe's pages). `cards`: our customer id -> a card
    number (absent: pm_card_visa; NO_CARD: none)."""

    def __init__(self, client: stripe.StripeClient, cards: dict[str, str]):
        super().__init__(client, max_attempts=2, base_delay_s=0.01)
        self.stripe, self.cards, self._carded = client, cards, set()

    def ensure_customer(self, customer_external_id: str, name: str | None, email: str | None) -> str:
        customer_id = super().ensure_customer(customer_external_id, name, email)
        number = self.cards.get(customer_external_id)
        if customer_id not in self._carded and number != NO_CARD:
            save_card(self.stripe, customer_id, number)
            self._carded.add(customer_id)
        return customer_id


class Harness:
    def __init__(self, tmp_path, server, cards: dict[str, str] | None = None):
        server.reset()
        self.server = server
        self.billing = Billing(tmp_path)
        self.adapters = self.billing.runtime.adapters
        self.warehouse = self.adapters.warehouse
        settings = Settings(backend="embedded", data_dir=tmp_path, stripe_api_key=API_KEY, stripe_api_base=server.url)
        self.payments = StripePayments.from_settings(settings)
        self.stripe = stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, max_network_retries=0)
        self.provider = Cards(self.stripe, cards or {})
        self.webhook = PaymentEvents(self.billing.invoices, SqliteProcessedEvents(self.adapters.db), self.warehouse)
        self.delivered: set[str] = set()

    def add_customer(self, external_id: str) -> None:
        """Another customer on the hybrid plan since November 1, without usage (its base fee)."""
        admin = self.billing.admin
        admin.upsert_customer({"external_id": external_id, "name": external_id.title(), "currency": "USD", "timezone": "UTC"})
        admin.create_subscription({"external_id": f"sub_{external_id}", "external_customer_id": external_id,
                                   "plan_code": self.billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})

    def run(self, as_of: datetime = DEC + 2 * HOUR):
        return self.billing.service(payments=self.provider).run(as_of)

    def invoice(self, customer: str, issued: datetime = DEC) -> Invoice:
        (found,) = [i for i in self.billing.all() if i.customer_external_id == customer and i.issuing_date == issued.date()]
        return found

    def deliver(self, *, skip: set[str] = frozenset()) -> int:
        """Hand every invoice event localstripe has sent (oldest first) to the webhook service,
        except those of the Stripe invoices in `skip` (never delivered); returns how many."""
        events = sorted(self.stripe.v1.events.list({"limit": 100}).data, key=lambda e: (e.created, e.id))
        handled = 0
        for e in events:
            obj = e.data.object
            if not e.type.startswith("invoice.") or obj.id in skip or e.id in self.delivered:
                continue
            self.webhook.handle(event_from_stripe(e.to_dict()))
            self.delivered.add(e.id)
            handled += 1
        return handled

    def set_stripe_total(self, provider_invoice_id: str, total: int) -> None:
        """localstripe_launcher's harness-only route: Stripe now shows another total."""
        body = urllib.parse.urlencode({"total": str(total)}).encode()
        request = urllib.request.Request(f"{self.server.url}/_config/invoices/{provider_invoice_id}/total", data=body,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def reconciliation(self, *, provider: bool = False) -> Reconciliation:
        return Reconciliation(self.billing.invoices, self.adapters.catalog, self.warehouse, self.warehouse,
                              self.warehouse, self.payments if provider else None)

    def report(self, month=DECEMBER) -> dict[str, dict]:
        return {row["external_customer_id"]: row for row in self.reconciliation().report(month)}


@pytest.fixture
def stripe_harness(tmp_path, stripe_server):
    return lambda cards=None: Harness(tmp_path, stripe_server, cards)


def test_a_clean_month_flags_nothing_and_every_figure_agrees(stripe_harness):
    h = stripe_harness()
    h.add_customer("bert")
    result = h.run()
    assert (result.finalized, result.collected) == (2, 2)
    assert h.deliver() > 0
    rows = h.report()
    assert set(rows) == {"acme", "bert"}
    acme, bert = rows["acme"], rows["bert"]
    ours = h.invoice("acme")
    assert ours.amount_cents == EXPECTED["total"] == 26900
    billed = sum((line.units for line in ours.lines if line.kind == "charge"), Decimal(0))
    assert acme == {
        "invoice_number": ours.number, "invoice_id": ours.id, "external_customer_id": "acme",
        "external_subscription_id": "sub_acme", "currency": "USD", "status": "paid",
        "provider_invoice_id": ours.provider_invoice_id, "provider_status": "paid",
        "billed_units": billed.normalize(), "warehouse_units": billed.normalize(),
        "our_total_cents": 26900, "provider_total_cents": 26900, "collected_cents": 26900,
        "flags": [], "late_usage_invoices": [],
    }
    assert billed > 0  # tokens and seats: the comparison is not of two zeros
    assert bert["flags"] == [] and bert["our_total_cents"] == bert["provider_total_cents"] == bert["collected_cents"] == 4900


def test_a_late_event_a_failed_payment_a_changed_stripe_total_and_an_unpaid_invoice_each_flag_their_row(stripe_harness):
    h = stripe_harness({"dora": DECLINED, "nora": NO_CARD})
    for customer in ("dora", "nora", "tess"):
        h.add_customer(customer)
    result = h.run()
    assert result.finalized == 4
    # Stripe's total of tess's invoice changes after it was paid (an edit at Stripe); a pull sees it.
    tess = h.invoice("tess")
    h.set_stripe_total(tess.provider_invoice_id, 4500)
    h.deliver()
    # A November event arrives after November was invoiced: the warehouse now holds more.
    h.billing.post([tokens("late-1", T + 20 * 86_400, 500_000, "input")])
    assert h.reconciliation(provider=True).refresh_provider(DECEMBER).recorded == 4

    rows = h.report()
    assert {c: r["flags"] for c, r in rows.items()} == {
        "acme": ["late_usage"],
        "dora": ["payment_failed", "unpaid_overdue"],  # the card was declined: Stripe keeps it open
        "nora": ["unpaid_overdue"],  # no card at all: nothing was charged, nothing failed, nothing paid
        "tess": ["provider_total_differs"],
    }
    acme = rows["acme"]
    assert acme["warehouse_units"] - acme["billed_units"] == 500_000
    assert acme["late_usage_invoices"] == []  # not billed on a later invoice yet
    assert rows["dora"]["collected_cents"] == 0 and rows["dora"]["provider_total_cents"] == 4900
    assert rows["tess"]["provider_total_cents"] == 4500 and rows["tess"]["our_total_cents"] == 4900

    # December's run bills the late usage on the December invoice (issued January 1), which the
    # November invoice's row then names; the warehouse still holds more than November billed.
    h.run(as_of=JAN + 2 * HOUR)
    later = h.invoice("acme", JAN)
    assert any(line.kind == "late_usage" for line in later.lines)
    acme = h.report()["acme"]
    assert acme["flags"] == ["late_usage"] and acme["late_usage_invoices"] == [later.number]


def test_the_pull_records_invoices_whose_webhooks_never_arrived(stripe_harness):
    h = stripe_harness()
    h.add_customer("mia")
    h.run()
    mia = h.invoice("mia")
    h.deliver(skip={mia.provider_invoice_id})  # mia's webhooks are lost
    rows = h.report()
    assert rows["mia"]["flags"] == ["provider_missing"] and rows["mia"]["provider_total_cents"] is None
    assert rows["acme"]["flags"] == []

    refreshed = h.reconciliation(provider=True).refresh_provider(DECEMBER)
    assert (refreshed.listed, refreshed.recorded, refreshed.unknown) == (2, 2, 0)
    rows = h.report()
    assert rows["mia"]["flags"] == [] and rows["mia"]["provider_total_cents"] == 4900
    assert rows["mia"]["collected_cents"] == 4900 and rows["mia"]["provider_status"] == "paid"
    # Pulling again records the same figures at a later time: the report does not change.
    again = h.reconciliation(provider=True).refresh_provider(DECEMBER)
    assert again.recorded == 2 and h.report() == rows
    # January has no invoice of these: a pull for it records nothing.
    assert h.reconciliation(provider=True).refresh_provider(JANUARY).recorded == 0


def test_meterline_report_reconciliation_refresh_provider_pulls_then_reports(stripe_harness, tmp_path):
    h = stripe_harness()
    h.run()  # no webhook is ever delivered
    acme = h.invoice("acme")
    h.warehouse.close()  # DuckDB admits one process: the CLI's, from here on
    env = {**os.environ, "METERLINE_BACKEND": "embedded", "METERLINE_STRIPE_API_KEY": API_KEY,
           "METERLINE_STRIPE_API_BASE": h.server.url}
    done = subprocess.run(
        [sys.executable, "-m", "meterline", "report", "reconciliation", "--month", "2026-12", "--refresh-provider",
         "--format", "json", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "pulled 1 Stripe invoices; recorded 1 of 2026-12" in done.stderr
    (row,) = orjson.loads(done.stdout)
    assert (row["invoice_number"], row["flags"], row["late_usage_invoices"]) == (acme.number, [], [])
    assert (row["our_total_cents"], row["provider_total_cents"], row["collected_cents"]) == (26900, 26900, 26900)
    assert row["billed_units"] == row["warehouse_units"] != "0"


def test_a_redelivered_webhook_changes_nothing_the_report_reads(stripe_harness):
    h = stripe_harness()
    h.run()
    h.deliver()
    before = h.report()
    # The same events once more, to a webhook whose record of handled ids was lost (a crash
    # before step 4): every finance row is written a second time.
    again = PaymentEvents(h.billing.invoices, _Forgetful(), h.warehouse)
    events = [e for e in h.stripe.v1.events.list({"limit": 100}).data if e.type.startswith("invoice.")]
    for e in events:
        again.handle(event_from_stripe(e.to_dict()))
    written = h.warehouse._query("SELECT COUNT(*) AS n FROM provider_invoices")[0]["n"]
    assert written == 2 * sum(1 for e in events if e.type != "invoice.created")  # each observation twice
    assert h.report() == before
    assert h.warehouse._query("SELECT COUNT(*) AS n FROM provider_invoices_latest")[0]["n"] == 1


class _Forgetful:
    """ProcessedEvents that remembers nothing."""

    def seen(self, event_id: str) -> bool:
        return False

    def first_time(self, event_id: str) -> bool:
        return True
