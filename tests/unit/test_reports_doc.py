"""docs/reports.md is what finance reads: its column tables are the code's, in the code's order
(each report's registry entry, the invoice exports' columns), so they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meterline.core import reports
from meterline.local import exports

DOC = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text()


def section(title: str) -> str:
    return DOC.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def columns(text: str, table: int = 0) -> list[str]:
    """The column names in the first cell of each row of the section's `table`-th table."""
    tables = re.findall(r"\| column \| meaning \|\n\|---\|---\|\n((?:\|.*\n?)+)", text)
    return [name for row in tables[table].splitlines() for name in re.findall(r"`([^`]+)`", row.split("|")[1])]


@pytest.mark.parametrize("name", list(reports.REPORTS))
def test_each_report_is_documented_with_its_columns(name):
    text = section(name)
    assert columns(text) == list(reports.REPORTS[name].column_names)
    assert "```sql" in text and "PROJECT.DATASET" in text  # a query to paste into the console


def test_the_exports_are_documented_with_their_columns():
    text = section("Invoice exports")
    assert columns(text, 0) == exports.INVOICE_COLUMNS
    assert columns(text, 1) == exports.LINE_COLUMNS


def test_a_renamed_column_is_caught():
    assert columns("| column | meaning |\n|---|---|\n| `a`, `b` | x |\n| `c` | y |\n") == ["a", "b", "c"]
