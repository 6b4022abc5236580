"""`meterline demo` as `make demo` runs it (a smaller stream): it counts exactly, writes
finance's invoice export, and ends with the revenue and reconciliation reports of the months
it issued invoices in."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

from meterline.local import exports


def test_demo_ends_with_the_revenue_and_reconciliation_reports(tmp_path):
    run = subprocess.run([sys.executable, "-m", "meterline", "demo", "--events", "200", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "every event counted exactly once" in run.stdout
    titles = [line for line in run.stdout.splitlines() if " report, " in line]
    # Two months billed: their invoices are issued in the two months after the first.
    assert [t.split(" report, ")[0] for t in titles] == ["revenue", "revenue", "reconciliation", "reconciliation"]
    assert run.stdout.rstrip().splitlines()[-1] != titles[-1]  # the last report has rows
    invoices = list(csv.DictReader(io.StringIO((tmp_path / "invoices.csv").read_text(encoding="utf-8"))))
    assert len(invoices) == 6 and list(invoices[0]) == exports.INVOICE_COLUMNS
    lines = list(csv.DictReader(io.StringIO((tmp_path / "invoices_lines.csv").read_text(encoding="utf-8"))))
    for invoice in invoices:
        mine = [int(line["amount_cents"]) for line in lines if line["invoice_id"] == invoice["invoice_id"]]
        assert sum(mine) == int(invoice["total_cents"])
    # Globex removes a seat on the 21st of the second month: a prorated seat line.
    assert any(line["units"].endswith("seats (prorated by day)") for line in lines)
