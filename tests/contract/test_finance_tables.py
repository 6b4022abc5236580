"""The finance tables (`invoices`, `invoice_lines`, `payments`) and their views, on DuckDB and on
bqemulator: the same rows in, the same current state out."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from decimal import Decimal

import pytest

from meterline.core.clock import to_us
from meterline.core.invoices import Invoice
from meterline.ports import Payment, Warehouse
from tests.harness.backends import bigquery_warehouse
from tests.harness.invoices import AT, invoice, line

US = to_us(AT)


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.servers)])
def warehouse(request, tmp_path) -> Warehouse:
    if request.param == "duckdb":
        from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse

        return DuckDbWarehouse(tmp_path / "w.duckdb")

    return bigquery_warehouse(request.getfixturevalue("bigquery_emulator"))


def query(warehouse, bigquery_sql: str, **params) -> list[dict]:
    # The port has no reads of these tables (finance queries them directly); the adapters' own
    # typed-read helper runs the same BigQuery SQL on both engines.
    return warehouse._query(bigquery_sql, params)


def history(draft: Invoice) -> list[Invoice]:
    """draft (v1) -> draft refreshed with one line fewer (v2) -> finalized (v3) -> paid (v4)."""
    refreshed = dataclasses.replace(draft, version=2, lines=draft.lines[:1])
    finalized = dataclasses.replace(
        refreshed.moved("finalized", AT, number="ML-1-0001", sequential_id=1, provider_invoice_id="in_1"), version=3
    )
    paid = dataclasses.replace(finalized.moved("paid", AT + timedelta(days=2)), version=4)
    return [draft, refreshed, finalized, paid]


@pytest.fixture
def recorded(warehouse) -> list[Invoice]:
    draft = invoice(
        version=1,
        lines=(
            line("charge|tokens", 123457, units=Decimal("123456789.123456789"), precise_amount=Decimal("1234.567890123")),
            line("subscription|base", 4900, kind="subscription", units=Decimal(1), precise_amount=Decimal("49")),
        ),
    )
    states = history(draft)
    for i, state in enumerate(states):
        warehouse.record_invoice(state, US + i)
    warehouse.record_invoice(states[-1], US + 10)  # recorded twice (a crash, a rerun): kept once
    warehouse.record_invoice(states[1], US + 11)  # an older version recorded late: not current
    return states


def test_invoices_latest_is_one_row_in_the_last_state_with_exact_totals(warehouse, recorded):
    paid = recorded[-1]
    rows = query(warehouse, "SELECT * FROM invoices_latest")
    assert len(rows) == 1
    row = rows[0]
    assert (row["invoice_id"], row["version"], row["status"], row["payment_status"]) == (paid.id, 4, "paid", "succeeded")
    assert (row["number"], row["sequential_id"], row["provider_invoice_id"]) == ("ML-1-0001", 1, "in_1")
    assert row["amount_cents"] == 123457 and row["amount"] == Decimal("1234.57")
    assert row["precise_amount"] == Decimal("1234.567890123")
    assert (row["period_start"], row["period_end"], row["issuing_date"]) == (paid.period_start, paid.period_end, paid.issuing_date)
    assert to_us(row["paid_at"]) == to_us(paid.paid_at) and to_us(row["finalized_at"]) == US
    assert to_us(row["from_utc"]) == to_us(paid.from_utc) and to_us(row["recorded_at"]) == US + 3  # the first copy of v4
    assert row["lines_count"] == 1 and row["customer_external_id"] == "cus-1"


def test_the_history_keeps_every_state(warehouse, recorded):
    rows = query(warehouse, "SELECT version, status, amount_cents FROM invoices ORDER BY version, recorded_at")
    assert [(r["version"], r["status"], r["amount_cents"]) for r in rows] == [
        (1, "draft", 128357), (2, "draft", 123457), (2, "draft", 123457), (3, "finalized", 123457),
        (4, "paid", 123457), (4, "paid", 123457),
    ]


def test_invoice_lines_latest_are_the_current_versions_lines(warehouse, recorded):
    rows = query(warehouse, "SELECT * FROM invoice_lines_latest ORDER BY position")
    (only,) = recorded[-1].lines
    assert len(rows) == 1  # the base-fee line of version 1 is gone, and the duplicate is kept once
    row = rows[0]
    assert (row["invoice_id"], row["version"], row["position"], row["line_ref"]) == (recorded[-1].id, 4, 0, only.ref)
    assert (row["kind"], row["description"], row["currency"]) == (only.kind, only.description, "USD")
    assert row["units"] == Decimal("123456789.123456789") and row["precise_amount"] == Decimal("1234.567890123")
    assert row["amount_cents"] == 123457 and row["amount"] == Decimal("1234.57")
    assert (row["charge_ref"], row["filter_key"], row["plan_code"], row["events_count"]) == ("ch_1", "model=gpt-4", "hybrid", 42)
    assert row["recurring"] is False  # usage
    assert to_us(row["from_datetime"]) == to_us(only.from_datetime) and to_us(row["to_datetime"]) == to_us(only.to_datetime)
    # The sum of the current lines is the current total.
    (total,) = query(warehouse, "SELECT SUM(amount_cents) AS cents FROM invoice_lines_latest WHERE invoice_id = @id",
                     id=recorded[-1].id)
    assert total["cents"] == 123457


def test_a_line_of_a_recurring_metric_is_recorded_as_recurring(warehouse):
    seats = line("charge|seats", 3000, recurring=True)
    warehouse.record_invoice(invoice(version=1, lines=(seats,)), US)
    rows = query(warehouse, "SELECT line_ref, recurring FROM invoice_lines_latest")
    assert rows == [{"line_ref": seats.ref, "recurring": True}]


def test_a_data_dir_made_before_the_recurring_column_gains_it(tmp_path):
    import duckdb

    from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
    from meterline.adapters.sql import duckdb_ddl

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:  # invoice_lines as it was made before the column
        ddl = duckdb_ddl("invoice_lines")
        assert '"recurring" BOOLEAN' in ddl
        conn.execute(ddl.replace(', "recurring" BOOLEAN', ""))
        assert "recurring" not in [c[0] for c in conn.execute("DESCRIBE invoice_lines").fetchall()]
    warehouse = DuckDbWarehouse(path)
    assert query(warehouse, "SELECT COUNT(*) AS n FROM invoice_lines") == [{"n": 0}]
    warehouse.record_invoice(invoice(version=1, lines=(line("charge|seats", 3000, recurring=True),)), US)
    assert query(warehouse, "SELECT recurring FROM invoice_lines") == [{"recurring": True}]


def test_a_crash_between_the_lines_and_the_invoice_row_leaves_the_last_state(warehouse, recorded, monkeypatch):
    voided = dataclasses.replace(recorded[-1], version=5, status="voided", lines=recorded[0].lines)
    insert = warehouse._insert

    def crash_on_the_invoice_row(table, rows, row_ids):
        if table == "invoices":
            raise RuntimeError("crash")
        insert(table, rows, row_ids)

    monkeypatch.setattr(warehouse, "_insert", crash_on_the_invoice_row)
    with pytest.raises(RuntimeError):
        warehouse.record_invoice(voided, US + 20)
    # Version 5's lines are written, its invoices row is not: both views still show version 4.
    assert [r["version"] for r in query(warehouse, "SELECT version FROM invoice_lines_latest")] == [4]
    assert [r["version"] for r in query(warehouse, "SELECT version FROM invoices_latest")] == [4]
    monkeypatch.undo()
    warehouse.record_invoice(voided, US + 21)  # the rerun records it again
    assert sorted(r["line_ref"] for r in query(warehouse, "SELECT line_ref FROM invoice_lines_latest WHERE version = 5")) == [
        "charge|tokens", "subscription|base"
    ]


def test_payments_are_kept_once_per_provider_event(warehouse):
    for _ in range(2):  # Stripe delivers at least once
        warehouse.record_payment(Payment("inv-1", "cus-1", "evt_1", "succeeded", 123457, "USD", US))
    warehouse.record_payment(Payment("inv-2", "cus-2", "evt_2", "failed", 1000, "JPY", US + 1))
    rows = query(warehouse, "SELECT * FROM payments_deduped ORDER BY provider_event_id")
    assert [(r["invoice_id"], r["customer_external_id"], r["status"], r["amount_cents"], r["amount"], r["currency"])
            for r in rows] == [
        ("inv-1", "cus-1", "succeeded", 123457, Decimal("1234.57"), "USD"),
        ("inv-2", "cus-2", "failed", 1000, Decimal("1000"), "JPY"),
    ]
    assert to_us(rows[0]["recorded_at"]) == US


def test_an_amount_out_of_numeric_range_is_refused_before_any_insert(warehouse):
    huge = invoice(version=1, lines=(line(units=Decimal("1e30")),))
    with pytest.raises(ValueError):
        warehouse.record_invoice(huge, US)
    assert query(warehouse, "SELECT COUNT(*) AS n FROM invoice_lines")[0]["n"] == 0


def test_more_than_nine_decimals_round_half_up_the_same_on_both_engines(warehouse):
    warehouse.record_invoice(invoice(version=1, lines=(
        line("a", units=Decimal("1234567.123456789012"), precise_amount=Decimal("0.0000000005")),
        line("b", units=Decimal("-0.0000000005"), precise_amount=Decimal("12.3400000004999")),
    )), US)
    rows = query(warehouse, "SELECT line_ref, units, precise_amount FROM invoice_lines_latest ORDER BY line_ref")
    assert [(r["units"], r["precise_amount"]) for r in rows] == [
        (Decimal("1234567.123456789"), Decimal("0.000000001")),
        (Decimal("-0.000000001"), Decimal("12.34")),
    ]
    (total,) = query(warehouse, "SELECT precise_amount FROM invoices_latest")
    assert total["precise_amount"] == Decimal("12.340000001")  # the exact sum, then rounded once


def test_a_chunk_of_invoices_is_recorded_in_one_call(warehouse):
    # Three invoices of 250 lines (Stripe's most): 750 line rows, more than one BigQuery request holds.
    invoices = [
        invoice(f"sub-{n}", f"cus-{n % 2}", version=1,
                lines=tuple(line(f"charge|{i}", n * 1000 + i) for i in range(250)))
        for n in range(3)
    ]
    warehouse.record_invoices(invoices, US)
    heads = query(warehouse, "SELECT invoice_id, amount_cents, lines_count FROM invoices_latest ORDER BY invoice_id")
    assert [(r["invoice_id"], r["amount_cents"], r["lines_count"]) for r in heads] == sorted(
        (i.id, i.amount_cents, 250) for i in invoices
    )
    (lines,) = query(warehouse, "SELECT COUNT(*) AS n, SUM(amount_cents) AS cents FROM invoice_lines_latest")
    assert (lines["n"], lines["cents"]) == (750, sum(i.amount_cents for i in invoices))
    warehouse.record_invoices([], US)  # nothing to write: no request


def test_recorded_versions_are_the_highest_version_of_each_invoice_asked(warehouse, recorded, monkeypatch):
    paid = recorded[-1]
    february = invoice("sub-2", start=date(2026, 2, 1), version=3)
    march = invoice("sub-3", start=date(2026, 3, 1), version=1)
    warehouse.record_invoices([february, march], US)
    never = invoice("sub-4").id
    since = paid.issuing_date
    assert warehouse.recorded_versions([paid.id, february.id, never], since) == {paid.id: 4, february.id: 3}
    assert warehouse.recorded_versions([], since) == {}
    # Issued before `since`: outside the partitions read.
    assert warehouse.recorded_versions([paid.id, march.id], march.issuing_date) == {march.id: 1}
    # More ids than one statement takes: asked in several, answered as one.
    monkeypatch.setattr("meterline.adapters.sql.finance.VERSIONS_PER_QUERY", 2)
    assert warehouse.recorded_versions([never, march.id, paid.id, february.id, paid.id], since) == {
        paid.id: 4, february.id: 3, march.id: 1}
