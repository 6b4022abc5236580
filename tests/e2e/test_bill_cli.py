"""`meterline bill` as a user runs it: alone on a data dir (it takes the warehouse itself),
then again (nothing changes)."""

from __future__ import annotations

import csv
import io

from tests.harness.billing import DEC, HOUR, Billing
from tests.support import cli


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
