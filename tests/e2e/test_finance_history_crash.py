"""The finance history converges to the invoice store after a crash between a store write and
the finance flush (SQLite invoice store, DuckDB warehouse; real processes where it matters).

  * `meterline bill` killed with SIGKILL by its own finance writer (its second chunk), with store
    writes done that the finance tables never saw; the next `meterline bill` finds the history
    behind and writes each invoice's current state again;
  * the webhook: the invoice moved to paid in the store, then a crash before its finance rows;
    Stripe's redelivery writes them (the event id is recorded only after), and a billing run
    restores the invoice's row even without one.

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

from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents
from meterline.core.invoices import Invoice
from meterline.ports import PaymentEvent
from meterline.services.billing import BillingService
from meterline.services.payments import PaymentEvents
from meterline.services.usage import UsageService
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
