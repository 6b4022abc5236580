"""Reconciliation: each invoice of a month, our side against the provider's and the warehouse's.

    Reconciliation(invoices, catalog, usage, reports, finance, provider).refresh_provider(month)
    Reconciliation(invoices, catalog, usage, reports).report(month)
    services.reports.FinanceReports(warehouse, reconciliation)         # every report, this one completed

Two sources say what Stripe holds for an invoice, both kept in `provider_invoices`: every
invoice event the webhook handles (`services.payments`), and a pull (`refresh_provider`,
`meterline report reconciliation --refresh-provider`) that lists the month's invoices at Stripe
by our metadata and records their totals. So an invoice whose webhooks never arrived shows
Stripe's figures after a pull, and one Stripe has never heard of shows `provider_missing`,
never silence.

The report's query (`adapters/sql/reports/reconciliation.sql`) compares the totals and the
payments. What it cannot do alone is count what `events_deduped` holds now for each usage
line: a line names its plan, charge and filter, and only the catalog says which metric, which
aggregation and which filter values those are. `report` asks the usage query for exactly that
(the same query, and so the same rule, that billed the line), one query for the month, and
adds the `late_usage` flag where the warehouse now holds more than a line billed. Lines of a
recurring metric (seats, prorated by day) are taken as billed: their units are not a count of
events, and late seat events are billed as late usage by the billing run anyway.

Recording is append-only and idempotent: the same webhook event recorded twice is the same
row (`provider_invoices_latest` shows one), and pulling twice records the same figures at a
later time, which the latest view reads the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterline import logs
from meterline.core.clock import now_us
from meterline.core.invoices import Invoice
from meterline.core.reports import Month
from meterline.core.usage_query import UsageQuery, UsageWindow
from meterline.ports import (
    CatalogStore,
    FinanceLedger,
    InvoiceStore,
    PaymentProvider,
    ProviderObservation,
    ReportReader,
    UsageReader,
)
from meterline.services.usage import read_usage

__all__ = ["Reconciliation", "RefreshResult"]

_log = logs.get("reconcile")


# An invoice is created at Stripe by the billing run at (or after) its period's end, which for a
# customer east of UTC falls on the day before its issuing date's month begins in UTC.
_CREATED_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class RefreshResult:
    listed: int  # the provider's invoices carrying one of our ids, created in the window
    recorded: int  # of those, the month's invoices (recorded in provider_invoices)
    unknown: int  # carrying an id our invoice store does not hold (another environment's)


class Reconciliation:
    def __init__(
        self,
        invoices: InvoiceStore,
        catalog: CatalogStore,
        usage: UsageReader,
        reports: ReportReader | None = None,
        finance: FinanceLedger | None = None,
        provider: PaymentProvider | None = None,
        clock_us: Callable[[], int] = now_us,
    ):
        self._invoices = invoices
        self._catalog = catalog
        self._usage = usage
        self._reports = reports
        self._finance = finance
        self._provider = provider
        self._clock_us = clock_us

    # -- the pull --------------------------------------------------------------------------------

    def refresh_provider(self, month: Month) -> RefreshResult:
        """Record what the provider holds now for each invoice issued in the month: its
        status, total and amount paid (source `pull`)."""
        if self._provider is None or self._finance is None:
            raise ValueError("refreshing the provider's side needs the payment provider (METERLINE_STRIPE_API_KEY)")
        at_us = self._clock_us()
        now = datetime.fromtimestamp(at_us / 1_000_000, tz=UTC)
        # Invoices are created at Stripe when billed, from the month's start up to now (a
        # billing run that resumed days later); later months' invoices are listed too and left out.
        month_start, month_end = month.start, month.end
        listed = self._provider.list_invoices(month_start - _CREATED_SLACK, max(now, month_start))
        ours = self._invoices.get_many(sorted({i.invoice_id for i in listed}))
        first, last = month_start.date(), month_end.date()
        observations = []
        for remote in listed:
            invoice = ours.get(remote.invoice_id)
            if invoice is None or not first <= invoice.issuing_date < last:
                continue
            observations.append(ProviderObservation(
                invoice_id=invoice.id, customer_external_id=invoice.customer_external_id,
                issuing_date=invoice.issuing_date, provider_invoice_id=remote.provider_invoice_id,
                status=remote.status, currency=remote.currency, total_cents=remote.total_cents,
                amount_paid_cents=remote.amount_paid_cents, due_at=remote.due_at, source="pull",
                observed_at_us=at_us))
        self._finance.record_provider_invoices(observations)
        unknown = sum(1 for remote in listed if remote.invoice_id not in ours)
        logs.event(_log, "provider invoices pulled", logging.INFO, month_start=month_start.isoformat(),
                   listed=len(listed), recorded=len(observations), unknown=unknown)
        return RefreshResult(len(listed), len(observations), unknown)

    # -- the report ------------------------------------------------------------------------------

    def report(self, month: Month) -> list[dict[str, Any]]:
        """The `reconciliation` report's rows for the month: the query's, with the units the
        warehouse holds now per invoice (`warehouse_units`) and the `late_usage` flag added."""
        if self._reports is None:
            raise ValueError("the reconciliation report needs the warehouse's reports")
        rows = self._reports.report("reconciliation", month)
        invoices = self._invoices.get_many([r["invoice_id"] for r in rows])
        held = self._warehouse_units([invoices[r["invoice_id"]] for r in rows if r["invoice_id"] in invoices])
        for row in rows:
            units, late = held.get(row["invoice_id"], (row["billed_units"], False))
            row["warehouse_units"] = _plain(units)
            if late:
                row["flags"] = sorted([*row["flags"], "late_usage"])
        return rows

    def _warehouse_units(self, invoices: Sequence[Invoice]) -> dict[str, tuple[Decimal, bool]]:
        """Per invoice: the units the warehouse holds now for its usage lines, and whether any
        line's exceeds what it billed. One usage query for every line of every invoice."""
        metrics = {m.code: m for m in self._catalog.list_billable_metrics()[0]}
        plans = {}
        for code in sorted({line.plan_code for inv in invoices for line in inv.lines if line.plan_code}):
            plan = self._catalog.get_plan(code)
            if plan is not None:
                plans[code] = plan
        query = UsageQuery(metrics, plans.values())
        charges = {(c.plan_code, c.charge.ref): c for c in query.charges}
        windows: dict[tuple[str, str, datetime, datetime], UsageWindow] = {}
        compared = []  # (invoice, line, window id)
        for inv in invoices:
            for line in inv.lines:
                charge = charges.get((line.plan_code or "", line.charge_ref or ""))
                if (line.kind != "charge" or charge is None or charge.metric.recurring
                        or line.from_datetime is None or line.to_datetime is None
                        or line.from_datetime >= line.to_datetime):
                    continue  # not comparable: taken as billed (see the module's docstring)
                key = (inv.subscription_external_id, charge.plan_code, line.from_datetime, line.to_datetime)
                window = windows.setdefault(key, UsageWindow(str(len(windows)), *key))
                compared.append((inv, line, window.window_id))
        usage = read_usage(self._usage, query, list(windows.values())) if windows else None
        held: dict[str, tuple[Decimal, bool]] = {}
        for inv in invoices:
            billed = sum((line.units for line in inv.lines if line.kind == "charge"), Decimal(0))
            held[inv.id] = (billed, False)
        for inv, line, window_id in compared:
            if usage is None or window_id in usage.failed:
                continue  # unreadable now: taken as billed, and logged by read_usage
            found = usage[window_id].get((line.charge_ref or "", line.filter_key))
            now_units = found.units if found is not None else Decimal(0)
            total, late = held[inv.id]
            held[inv.id] = (total - line.units + now_units, late or now_units > line.units)
        return held


def _plain(value: Decimal) -> Decimal:
    """A decimal without the warehouse's padding (1.500000000 -> 1.5), 0 as 0."""
    return value.normalize() if value != 0 else Decimal(0)
