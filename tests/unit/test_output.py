"""CLI output: CSV cells a spreadsheet would run as formulas are escaped (OWASP), numbers are not."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from meterline.local import output


def _csv(rows, columns):
    return list(csv.reader(io.StringIO(output.render(rows, columns, "csv"))))


@pytest.mark.parametrize(
    "text",
    ["=HYPERLINK(\"http://x\",\"y\")", "=cmd|' /C calc'!A0", "+SUM(A1)", "-2+3", "@SUM(A1:A2)", "\tx", "\rx", "-", "=1"],
)
def test_text_that_starts_a_formula_is_escaped(text):
    [header, row] = _csv([{"name": text}], ["name"])
    assert row == ["'" + text]


@pytest.mark.parametrize("value", [-5, Decimal("-1.25"), "-1.25", "+3", "-0.5", "1e-3", 0])
def test_numbers_keep_their_sign(value):
    [header, row] = _csv([{"amount": value}], ["amount"])
    assert row == [output._cell(value)]
    assert not row[0].startswith("'")


def test_plain_text_and_the_table_format_are_unchanged():
    rows = [{"name": "acme", "note": "=not a formula in a table"}]
    assert _csv(rows, ["name", "note"])[1] == ["acme", "'=not a formula in a table"]
    table = output.render(rows, ["name", "note"], "table")
    assert "=not a formula in a table" in table and "'=" not in table


def test_a_column_name_is_escaped_too():
    assert _csv([{"=x": 1}], ["=x"])[0] == ["'=x"]
