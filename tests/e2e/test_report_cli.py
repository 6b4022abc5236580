"""`meterline report` beside a running `meterline serve`: the server holds the warehouse, so the
CLI asks it (`GET /api/v1/reports/{name}`, local only) and prints what it would print alone.

The data: the billing harness's customer, November 2026 billed on December 1 (26900 cents:
base fee 4900, seats 3000, tokens 1200 + 17500 + 300)."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson
import pytest

from tests.harness.billing import DEC, HOUR, Billing
from tests.support import cli, new_key, serve_process

REVENUE = [{
    "month": "2026-12", "external_customer_id": "acme", "plan_code": "team_monthly", "currency": "USD",
    "invoices": 1, "base_fee_cents": 4900, "recurring_charges_cents": 3000, "usage_cents": 1200 + 17500 + 300,
    "minimum_commitment_cents": 0, "late_usage_cents": 0, "credits_applied_cents": 0, "credit_notes_cents": 0,
    "total_amount_cents": 26900,
}]


def get(url: str, key: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


@pytest.fixture
def data(tmp_path):
    billing = Billing(tmp_path / "data")
    billing.run(DEC + 2 * HOUR)
    key = new_key(billing.runtime)
    billing.runtime.adapters.warehouse.close()  # this test process lets go of the warehouse, as a user's would
    return tmp_path / "data", key


def test_report_asks_the_running_server_and_prints_what_it_prints_alone(data):
    data_dir, key = data
    with serve_process(data_dir) as (_, url):
        served = cli(data_dir, "report", "revenue", "--month", "2026-12", "--format", "json")
        assert served.returncode == 0, served.stderr
        assert orjson.loads(served.stdout) == REVENUE

        # The route itself: the report's rows with the typed values as JSON, errors in Lago's shape.
        status, body = get(f"{url}/api/v1/reports/usage?month=2026-11", key)
        assert status == 200 and (body["report"], body["month"]) == ("usage", "2026-11")
        seats = [r for r in body["rows"] if r["code"] == "seats"]
        assert [(r["day"], r["external_customer_id"], r["events"], r["units"]) for r in seats] == [
            ("2026-11-16", "acme", 1, "0")]
        assert get(f"{url}/api/v1/reports/credits", key) == (200, {"report": "credits", "month": None, "rows": []})
        status, body = get(f"{url}/api/v1/reports/revenue?month=2026-13", key)
        assert status == 422 and body["error_details"] == {"month": ["invalid_format"]}
        status, body = get(f"{url}/api/v1/reports/revenue", key)
        assert status == 422 and body["error_details"] == {"month": ["value_is_mandatory"]}
        status, body = get(f"{url}/api/v1/reports/nope?month=2026-11", key)
        assert status == 404 and body["code"] == "report_not_found"
        assert get(f"{url}/api/v1/reports/revenue?month=2026-12", None)[0] == 401

        table = cli(data_dir, "report", "revenue", "--month", "2026-12")
        assert table.returncode == 0, table.stderr
        # A terminal table shows money with its currency; the JSON above kept the cents.
        assert "49.00 USD" in table.stdout and "269.00 USD" in table.stdout and "26900" not in table.stdout
    # Alone on the data dir (the server stopped): the same rows and the same table.
    alone = cli(data_dir, "report", "revenue", "--month", "2026-12", "--format", "json")
    assert alone.returncode == 0, alone.stderr
    assert orjson.loads(alone.stdout) == REVENUE
    assert cli(data_dir, "report", "revenue", "--month", "2026-12").stdout == table.stdout
