"""A finance report run and rendered for a person: `meterline report` and the demo's last step
share this, so the demo prints what the command prints.

The reports themselves are `core/reports.py` (which exist, their columns) and one query each
(`adapters/sql/reports/`); reconciliation adds what only the catalog knows
(`services/reconcile.py`).
"""

from __future__ import annotations

from typing import Any

from meterline.core import reports
from meterline.local import output

__all__ = ["report_rows", "report_text"]


def report_rows(adapters: Any, name: str, month: reports.Month | None) -> list[dict[str, Any]]:
    """The report's rows, on `adapters`' warehouse (`runtime.Adapters`: BigQuery, or DuckDB held by
    the caller); `month` is ignored by a report that is not monthly. UnknownReport if no such report."""
    spec = reports.get(name)
    month = month if spec.monthly else None
    if spec.name == "reconciliation":
        from meterline.services.reconcile import Reconciliation

        if month is None:
            raise AssertionError("reconciliation is a monthly report")
        warehouse = adapters.warehouse
        return Reconciliation(adapters.invoices, adapters.catalog, warehouse, warehouse).report(month)
    return adapters.warehouse.report(spec.name, month)


def report_text(name: str, rows: list[dict[str, Any]], fmt: str) -> str:
    """The rows as a table, CSV or JSON, in the registry's column order."""
    return output.render(rows, reports.get(name).column_names, fmt)
