"""The finance reports as finance sees them: each one the warehouse's query (`ReportReader`), and
reconciliation completed by its service (the units the warehouse holds now per usage line, and
the `late_usage` flag, need the catalog: `services/reconcile.py`).

`meterline report`, its route in `meterline serve` (`GET /api/v1/reports/{name}`) and the demo
all read the reports through this, so they show the same rows.
"""

from __future__ import annotations

from typing import Any

from meterline.core import reports
from meterline.core.reports import Month
from meterline.ports import ReportReader
from meterline.services.reconcile import Reconciliation

__all__ = ["FinanceReports"]


class FinanceReports:
    """A `ReportReader` whose reconciliation report is the service's, not the bare query's."""

    def __init__(self, warehouse: ReportReader, reconciliation: Reconciliation):
        self._warehouse = warehouse
        self._reconciliation = reconciliation

    def report(self, name: str, month: Month | None = None) -> list[dict[str, Any]]:
        spec = reports.get(name)
        if spec.name == "reconciliation" and month is not None:
            return self._reconciliation.report(month)
        # Without a month the warehouse refuses a monthly report, naming `month`.
        return self._warehouse.report(spec.name, month if spec.monthly else None)
