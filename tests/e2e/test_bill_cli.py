"""`meterline bill` as a user runs it: alone on a data dir (it takes the warehouse itself),
then again (nothing changes)."""

from __future__ import annotations

import csv
import io

import orjson

from tests.harness.billing import DEC, HOUR, Billing
from tests.support import cli, serve_process


def table(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_bill_on_a_data_dir_then_again_changes_nothing(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.runtime.adapters.warehouse.close()  # this test process lets go of the warehouse, as a user's would
    first = cli(tmp_path / "data", "bill", "--as-of", (DEC + 2 * HOUR).isoformat(), "--format", "csv")
    assert first.returncode == 0, first.stderr
    summary = table(first.stdout.split("\n\n")[0])[0]
    # Past its grace period when first billed: finalized at once, never a draft.
    assert (summary["drafted"], summary["finalized"], summary["failed"]) == ("0", "1", "0")
    assert "billing: 1/1" in first.stderr  # progress on stderr
    assert "ML-" in first.stdout and "269.00" in first.stdout  # the invoice it finalized
    again = cli(tmp_path / "data", "bill", "--as-of", (DEC + 3 * HOUR).isoformat(), "--format", "csv")
    assert again.returncode == 0, again.stderr
    assert table(again.stdout.split("\n\n")[0])[0]["finalized"] == "0"
    (invoice,) = billing.all()
    assert invoice.amount_cents == 26900 and invoice.sequential_id == 1


def test_bill_writes_finance_export_with_output(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.runtime.adapters.warehouse.close()
    out = tmp_path / "december.csv"
    run = cli(tmp_path / "data", "bill", "--as-of", (DEC + 2 * HOUR).isoformat(), "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert f"1 invoice(s) written to {out} and {tmp_path / 'december_lines.csv'}" in run.stderr
    (invoice,) = table(out.read_text(encoding="utf-8"))
    assert (invoice["external_customer_id"], invoice["invoice_number"], invoice["total"], invoice["total_cents"]) \
        == ("acme", billing.all()[0].number, "269.00", "26900")
    lines = table((tmp_path / "december_lines.csv").read_text(encoding="utf-8"))
    seats = next(line for line in lines if line["description"].startswith("Seats"))
    # alice the whole month, bob 15 of 30 days
    assert (seats["units"], seats["units_exact"], seats["unit_price"], seats["amount_cents"]) \
        == ("1.5 seats (prorated by day)", "1.5", "20.00", "3000")
    assert sum(int(line["amount_cents"]) for line in lines) == 26900


def test_bill_refuses_an_output_that_is_neither_csv_nor_json(tmp_path):
    run = cli(tmp_path, "bill", "--output", str(tmp_path / "invoices.xlsx"))
    assert run.returncode == 2
    assert "a .csv or a .json file" in run.stderr and "Traceback" not in run.stderr


def test_bill_through_a_running_server_exports_the_invoices_it_wrote(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.runtime.adapters.warehouse.close()
    out = tmp_path / "december.json"
    with serve_process(tmp_path / "data"):
        run = cli(tmp_path / "data", "bill", "--as-of", (DEC + 2 * HOUR).isoformat(), "--output", str(out))
        assert run.returncode == 0, run.stderr
        again = cli(tmp_path / "data", "bill", "--as-of", (DEC + 3 * HOUR).isoformat(), "--output", str(tmp_path / "again.json"))
        assert again.returncode == 0, again.stderr
    (invoice,) = orjson.loads(out.read_bytes())
    assert (invoice["invoice_number"], invoice["total"], invoice["total_cents"]) == (billing.all()[0].number, "269.00", 26900)
    assert len(orjson.loads((tmp_path / "december_lines.json").read_bytes())) == 5
    # The second run changed nothing, so it wrote no invoice.
    assert orjson.loads((tmp_path / "again.json").read_bytes()) == []


def test_the_billed_month_through_meterline_report(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.runtime.adapters.warehouse.close()
    assert cli(tmp_path / "data", "bill", "--as-of", (DEC + 2 * HOUR).isoformat()).returncode == 0
    revenue = cli(tmp_path / "data", "report", "revenue", "--month", "2026-12", "--format", "json")
    assert revenue.returncode == 0, revenue.stderr
    (row,) = orjson.loads(revenue.stdout)
    assert (row["external_customer_id"], row["base_fee_cents"], row["total_amount_cents"]) == ("acme", 4900, 26900)
    reconciliation = cli(tmp_path / "data", "report", "reconciliation", "--month", "2026-12", "--format", "json")
    assert reconciliation.returncode == 0, reconciliation.stderr
    (row,) = orjson.loads(reconciliation.stdout)
    # No Stripe on this data dir: nothing to compare our total with, and an invoice never sent to
    # a payment provider is not checked against one (nor is it overdue to one).
    assert (row["invoice_number"], row["our_total_cents"], row["provider_total_cents"]) == (billing.all()[0].number, 26900, None)
    assert row["flags"] == []
    pull = cli(tmp_path / "data", "report", "reconciliation", "--month", "2026-12", "--refresh-provider")
    assert pull.returncode == 2 and "METERLINE_STRIPE_API_KEY" in pull.stderr


def test_reconciliation_through_a_running_server_is_the_one_printed_alone(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.runtime.adapters.warehouse.close()
    assert cli(tmp_path / "data", "bill", "--as-of", (DEC + 2 * HOUR).isoformat()).returncode == 0
    args = ("report", "reconciliation", "--month", "2026-12", "--format", "json")
    alone = cli(tmp_path / "data", *args)
    assert alone.returncode == 0, alone.stderr
    with serve_process(tmp_path / "data"):
        served = cli(tmp_path / "data", *args)
        refresh = cli(tmp_path / "data", *args, "--refresh-provider")
    assert served.returncode == 0, served.stderr
    assert orjson.loads(served.stdout) == orjson.loads(alone.stdout)
    (row,) = orjson.loads(alone.stdout)
    # The warehouse's units come from the reconciliation service (the query alone leaves them empty):
    # the token lines' 17M, the seat line taken as billed (1.5).
    assert (row["billed_units"], row["warehouse_units"]) == ("17000001.5", "17000001.5")
    assert refresh.returncode == 2 and "stop it first" in refresh.stderr
