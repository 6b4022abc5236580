"""The finance history converges to the invoice store after a crash between a store write and
the finance flush, with real stores: SQLite + DuckDB, and Firestore + bqemulator.

  * `meterline bill` killed with SIGKILL by its own finance writer (its second chunk), with store
    writes done that the finance tables never saw; the next `meterline bill` finds the history
    behind and writes each invoice's current state again;
  * the webhook: the invoice moved to paid in the store, then a crash before its finance rows;
    Stripe's redelivery writes them (the event id is recorded only after), and a billing run
    restores the invoice's row even without one;
  * the same on Firestore and bqemulator, in process: a run whose finance flush never happens
    (what a kill leaves) and the webhook's crash, then one run and a redelivery.

"Equal" is checked in full: `invoices_latest` holds every stored invoice at its stored version,
status, number and total, `invoice_lines_latest` its lines, `payments_deduped` every payment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents
from meterline.core.invoices import Invoice
from meterline.ports import PaymentEvent
from meterline.services.billing import BillingService
from meterline.services.payments import PaymentEvents
from meterline.services.usage import UsageService
from tests.harness.backends import gcp_billing_stores
from tests.harness.billing import DEC, HOUR, JAN, Billing
from tests.support import cli, embedded_runtime

CUSTOMERS = ("acme", "bolt", "cove", "dune", "echo")  # acme is the harness's, with November's events

# `meterline bill` whose finance writer writes one invoice per chunk, and is killed (SIGKILL:
# no cleanup of any kind) in its second chunk once the run is closing its finance log: every
# store write of the run is done, and the finance tables hold the first chunk only.
KILLED_BILL = """
import os, signal, sys, threading
from meterline.adapters.sql.finance import FinanceRecords
from meterline.local.cli import main
from meterline.services import billing

billing.RECORD_CHUNK = 1
real_record, real_close = FinanceRecords.record_invoices, billing._FinanceLog.close
closing, calls = threading.Event(), []

def record(self, invoices, recorded_at_us):
    calls.append(1)
    if len(calls) == 2:
        closing.wait(60)
        os.kill(os.getpid(), signal.SIGKILL)
    real_record(self, invoices, recorded_at_us)

def close(self):
    closing.set()
    return real_close(self)

FinanceRecords.record_invoices = record
billing._FinanceLog.close = close
sys.exit(main(sys.argv[1:]))
"""


def _billing(data: Path) -> Billing:
    billing = Billing(data)
    for name in CUSTOMERS[1:]:
        billing.admin.upsert_customer({"external_id": name, "name": name.title(), "currency": "USD", "timezone": "UTC"})
        billing.admin.create_subscription({"external_id": f"sub_{name}", "external_customer_id": name,
                                           "plan_code": billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})
    return billing


def _all(billing: Billing) -> list[Invoice]:
    invoices, total = billing.invoices.list(limit=1000)
    assert len(invoices) == total
    return invoices


def _finance(warehouse) -> tuple[dict, dict, list]:
    heads = {r["invoice_id"]: r for r in warehouse._query("SELECT * FROM invoices_latest")}
    lines: dict[str, list] = {}
    for r in warehouse._query("SELECT * FROM invoice_lines_latest ORDER BY invoice_id, position"):
        lines.setdefault(r["invoice_id"], []).append((r["version"], r["line_ref"], r["kind"], r["amount_cents"]))
    payments = warehouse._query("SELECT * FROM payments_deduped ORDER BY provider_event_id")
    return heads, lines, payments


def _behind(store: list[Invoice], heads: dict) -> list[str]:
    return [i.id for i in store if i.id not in heads or heads[i.id]["version"] != i.version]


def assert_history_equals_store(store: list[Invoice], warehouse) -> list:
    heads, lines, payments = _finance(warehouse)
    assert set(heads) == {i.id for i in store}
    for invoice in store:
        head = heads[invoice.id]
        assert (head["version"], head["status"], head["payment_status"], head["number"], head["amount_cents"],
                head["lines_count"], head["flag"]) == (
            invoice.version, invoice.status, invoice.payment_status, invoice.number, invoice.amount_cents,
            len(invoice.lines), invoice.flag), invoice.id
        assert lines.get(invoice.id, []) == [(invoice.version, line.ref, line.kind, line.amount_cents)
                                             for line in invoice.lines], invoice.id
    return payments


def test_bill_killed_before_its_finance_flush_then_run_again_leaves_the_history_equal_to_the_store(tmp_path):
    data = tmp_path / "data"
    billing = _billing(data)
    assert billing.run(DEC + HOUR / 2).drafted == len(CUSTOMERS)  # November's drafts, recorded
    billing.runtime.adapters.warehouse.close()  # `meterline bill` takes the warehouse itself

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BILL, "bill", "--as-of", (JAN + 2 * HOUR).isoformat(), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "METERLINE_BACKEND": "embedded"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = _all(billing)
    # November finalized and December created finalized, for every customer, in the store...
    assert sorted((i.period_start, i.status) for i in store) == sorted(
        [(DEC.date() - timedelta(days=30), "finalized")] * len(CUSTOMERS) + [(DEC.date(), "finalized")] * len(CUSTOMERS))
    warehouse = DuckDbWarehouse(data / "warehouse.duckdb")
    try:
        heads, _, _ = _finance(warehouse)
        assert len(_behind(store, heads)) == len(store) - 1  # ...and one chunk of it in the history
    finally:
        warehouse.close()

    rerun = cli(data, "bill", "--as-of", (JAN + 3 * HOUR).isoformat())
    assert rerun.returncode == 0, rerun.stderr
    assert _all(billing) == store  # nothing left to bill: the store did not change
    runtime = embedded_runtime(data)
    try:
        assert assert_history_equals_store(store, runtime.adapters.warehouse) == []
        # Caught up: a further run finds nothing missing, and writes nothing again.
        again = BillingService(runtime.adapters.catalog, UsageService(runtime.adapters.catalog, runtime.adapters.warehouse),
                               billing.invoices, runtime.adapters.warehouse).run(JAN + 4 * HOUR)
        assert (again.finance_restored, again.finalized, again.failed) == (0, 0, {})
        (copies,) = runtime.adapters.warehouse._query("SELECT COUNT(*) AS n FROM invoices")
        assert copies["n"] == len(CUSTOMERS) + len(store)  # November's drafts, then one row per current state
    finally:
        runtime.adapters.warehouse.close()


class _CrashBeforeFinance:
    """The warehouse, whose finance writes crash (the process dies there: nothing is written)."""

    def __init__(self, warehouse):
        self._warehouse = warehouse

    def __getattr__(self, name):
        return getattr(self._warehouse, name)

    def record_invoice(self, invoice, recorded_at_us):
        raise RuntimeError("crash before the finance rows")


def _paid_event(invoice: Invoice) -> PaymentEvent:
    return PaymentEvent(id="evt_paid_1", type="invoice.payment_succeeded", occurred_at=DEC + 3 * HOUR,
                        moves_to="paid", provider_invoice_id="in_1", invoice_id=invoice.id,
                        amount_cents=invoice.amount_cents, currency=invoice.currency)


def _crashed_webhook(billing: Billing) -> tuple[Invoice, PaymentEvent]:
    """November finalized by the run (recorded), then paid through a webhook that crashes after
    the invoice moved to paid in the store and before its finance rows."""
    billing.run(DEC + 2 * HOUR)
    (finalized,) = _all(billing)
    event = _paid_event(finalized)
    processed = SqliteProcessedEvents(billing.runtime.adapters.db)
    crashing = PaymentEvents(billing.invoices, processed, _CrashBeforeFinance(billing.runtime.adapters.warehouse))
    with pytest.raises(RuntimeError, match="crash before the finance rows"):
        crashing.handle(event)
    (paid,) = _all(billing)
    assert paid.status == "paid" and not processed.seen(event.id)  # moved, and not recorded as handled
    heads, _, payments = _finance(billing.runtime.adapters.warehouse)
    assert heads[paid.id]["status"] == "finalized" and payments == []  # the history is behind
    return paid, event


def test_a_webhook_crash_after_the_move_to_paid_is_written_by_stripes_redelivery(tmp_path):
    billing = Billing(tmp_path)
    paid, event = _crashed_webhook(billing)
    warehouse = billing.runtime.adapters.warehouse
    # Stripe delivers again (no 2xx was answered): the move is there already; the rows are written.
    processed = SqliteProcessedEvents(billing.runtime.adapters.db)
    assert PaymentEvents(billing.invoices, processed, warehouse).handle(event).status == "paid"
    assert _all(billing) == [paid]  # the redelivery did not move it again
    (payment,) = assert_history_equals_store([paid], warehouse)
    assert (payment["invoice_id"], payment["provider_event_id"], payment["status"], payment["amount_cents"]) == (
        paid.id, event.id, "succeeded", paid.amount_cents)


def test_a_webhook_crash_after_the_move_to_paid_is_restored_by_the_next_billing_run(tmp_path):
    # Without a redelivery (Stripe gives up after three days), the invoice's state still reaches
    # the history: the next billing run finds its version missing. The payment row is the event's
    # own and comes only with a delivery of it.
    billing = Billing(tmp_path)
    paid, _ = _crashed_webhook(billing)
    result = billing.run(DEC + 4 * HOUR)
    assert result.finance_restored == 1 and _all(billing) == [paid]
    assert assert_history_equals_store([paid], billing.runtime.adapters.warehouse) == []


class _LostFlush:
    """The warehouse, whose finance writes never happen: a process killed before its flush (the
    background writer's rows die with it) leaves exactly this behind."""

    def __init__(self, warehouse):
        self._warehouse = warehouse

    def __getattr__(self, name):
        return getattr(self._warehouse, name)

    def record_invoices(self, invoices, recorded_at_us):
        pass


@pytest.mark.servers
def test_on_firestore_and_bigquery_the_history_converges_after_a_lost_flush_and_a_webhook_crash(
        firestore_emulator, bigquery_emulator, monkeypatch):
    from meterline.adapters.gcp.firestore_invoices import FirestoreProcessedEvents
    from meterline.services.admin import AdminService

    stores = gcp_billing_stores(firestore_emulator, bigquery_emulator, monkeypatch)
    firestore, catalog, invoices, warehouse = stores.firestore, stores.catalog, stores.invoices, stores.warehouse
    admin = AdminService(catalog)
    admin.create_billable_metric({"code": "calls", "name": "calls", "aggregation_type": "count_agg"})
    admin.create_plan({"code": "base", "name": "Base", "interval": "monthly", "amount_cents": 4900, "amount_currency": "USD",
                       "charges": [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"}}]})
    for name in CUSTOMERS[:3]:
        admin.upsert_customer({"external_id": name, "currency": "USD"})
        admin.create_subscription({"external_id": f"sub_{name}", "external_customer_id": name, "plan_code": "base",
                                   "subscription_at": "2026-11-01T00:00:00Z"})

    def run(ledger, as_of):
        return BillingService(catalog, UsageService(catalog, warehouse), invoices, ledger).run(as_of)

    def store() -> list[Invoice]:
        return invoices.list(limit=1000)[0]

    assert run(warehouse, DEC + HOUR / 2).drafted == 3  # the drafts, recorded
    assert run(_LostFlush(warehouse), DEC + 2 * HOUR).finalized == 3  # finalized; the flush never happens
    paid_event = _paid_event(next(i for i in store() if i.customer_external_id == "acme"))
    processed = FirestoreProcessedEvents(firestore)
    with pytest.raises(RuntimeError, match="crash before the finance rows"):
        PaymentEvents(invoices, processed, _CrashBeforeFinance(warehouse)).handle(paid_event)
    before = store()
    assert sorted(i.status for i in before) == ["finalized", "finalized", "paid"]
    heads, _, _ = _finance(warehouse)
    assert sorted(_behind(before, heads)) == sorted(i.id for i in before)  # every change missing

    result = run(warehouse, DEC + 3 * HOUR)
    assert (result.finance_restored, result.finalized, result.failed) == (3, 0, {})
    assert store() == before
    assert assert_history_equals_store(before, warehouse) == []
    # Stripe delivers the event again: its payment row, and nothing else changes.
    assert PaymentEvents(invoices, processed, warehouse).handle(paid_event).status == "paid"
    (payment,) = assert_history_equals_store(store(), warehouse)
    assert (payment["provider_event_id"], payment["status"], payment["amount_cents"]) == ("evt_paid_1", "succeeded", 4900)
    assert run(warehouse, DEC + 4 * HOUR).finance_restored == 0
