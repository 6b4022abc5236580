"""CLI output: CSV cells a spreadsheet would run as formulas are escaped (OWASP), numbers are not."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import orjson
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


KINDS = {"customer": "text", "currency": "text", "total_cents": "cents", "units": "decimal", "invoices": "int"}


@pytest.mark.parametrize(("cents", "currency", "shown"), [
    (123456, "USD", "1,234.56 USD"),
    (-123456, "USD", "-1,234.56 USD"),
    (5, "USD", "0.05 USD"),
    (0, "EUR", "0.00 EUR"),
    (1234567, "JPY", "1,234,567 JPY"),  # no minor unit
    (1250, "KWD", "1.250 KWD"),  # three decimals
    (123456789012345678, "USD", "1,234,567,890,123,456.78 USD"),  # exact at the 64-bit edge, no float
])
def test_a_cents_column_reads_as_money_with_its_currency(cents, currency, shown):
    (row,) = output.readable([{"customer": "acme", "currency": currency, "total_cents": cents}], KINDS)
    assert row == {"customer": "acme", "currency": currency, "total_cents": shown}


def test_decimals_are_grouped_and_other_columns_untouched():
    rows = [{"customer": "acme", "units": Decimal("12000000.000000000"), "invoices": 1200},
            {"customer": "beta", "units": Decimal("5.666666666666666667"), "invoices": None}]
    assert output.readable(rows, KINDS) == [
        {"customer": "acme", "units": "12,000,000", "invoices": 1200},
        {"customer": "beta", "units": "5.6667", "invoices": None},
    ]


def test_cents_without_a_currency_stay_cents_grouped_and_none_stays_empty():
    assert output.readable([{"total_cents": 1234567}, {"total_cents": None}], KINDS) == [
        {"total_cents": "1,234,567"}, {"total_cents": None}]


def test_the_table_aligns_money_right_and_text_left():
    rows = output.readable([{"customer": "acme", "currency": "USD", "total_cents": 123456},
                            {"customer": "b", "currency": "USD", "total_cents": 5}], KINDS)
    lines = output.render(rows, ["customer", "total_cents"], "table").splitlines()
    assert lines == ["customer  total_cents", "--------  ------------", "acme      1,234.56 USD", "b             0.05 USD"]
    # CSV and JSON are written from the typed rows: cents stay integers beside the currency.
    raw = [{"customer": "acme", "currency": "USD", "total_cents": 123456}]
    assert _csv(raw, ["customer", "currency", "total_cents"])[1] == ["acme", "USD", "123456"]
    assert output.render(raw, ["total_cents", "currency"], "json") == '[\n  {\n    "total_cents": 123456,\n    "currency": "USD"\n  }\n]'


def test_a_list_cell_shows_its_items_and_is_escaped_as_text():
    rows = [{"flags": ["late_usage", "provider_missing"], "late": []}, {"flags": ["=cmd|x"], "late": ["ML-1"]}]
    assert _csv(rows, ["flags", "late"]) == [["flags", "late"], ["late_usage, provider_missing", ""], ["'=cmd|x", "ML-1"]]
    assert "late_usage, provider_missing" in output.render(rows, ["flags", "late"], "table")
    assert orjson.loads(output.render(rows, ["flags"], "json"))[0]["flags"] == ["late_usage", "provider_missing"]
