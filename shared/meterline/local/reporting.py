"""A finance report run and rendered for a person: `meterline report` and the demo's last step
share this, so the demo prints what the command prints.

The reports themselves are `core/reports.py` (which exist, their columns), one query each
(`adapters/sql/reports/`), and `services/reports.py` (reconciliation completed by its service).
"""

from __future__ import annotations

from typing import Any

from meterline.core import reports
from meterline.local import output

__all__ = ["report_rows", "report_text"]


def report_rows(adapters: Any, name: str, month: reports.Month | None) -> list[dict[str, Any]]:
    """The report's rows on `adapters`' warehouse (`runtime.Adapters`: BigQuery, or DuckDB the
    caller holds), as `meterline serve` answers them (`runtime.finance_reports`); `month` is
    ignored by a report that is not monthly. UnknownReport if there is no such report."""
    from meterline.runtime import finance_reports

    spec = reports.get(name)
    return finance_reports(adapters).report(spec.name, month if spec.monthly else None)


def report_text(name: str, rows: list[dict[str, Any]], fmt: str) -> str:
    """The rows as a terminal table (amounts as money with their currency, thousands grouped), or
    as CSV or JSON (cents as integers beside the currency), in the registry's column order."""
    spec = reports.get(name)
    if fmt == "table":
        rows = output.readable(rows, {c.name: c.kind for c in spec.columns})
    return output.render(rows, spec.column_names, fmt)
