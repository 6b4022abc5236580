"""The `bill` function through functions-framework's test client, on the embedded adapters."""

from __future__ import annotations

import functions_framework
import orjson
import pytest

from meterline.runtime import set_runtime
from tests.harness.billing import DEC, HOUR, Billing
from tests.support import REPO_ROOT


@pytest.fixture
def client_and_billing(tmp_path):
    billing = Billing(tmp_path)
    set_runtime(billing.runtime)
    try:
        yield functions_framework.create_app("bill", str(REPO_ROOT / "functions/bill/main.py")).test_client(), billing
    finally:
        set_runtime(None)


def test_the_scheduler_s_post_runs_billing_as_of_the_given_instant(client_and_billing):
    client, billing = client_and_billing
    response = client.post("/", json={"as_of": (DEC + 2 * HOUR).isoformat()})
    assert response.status_code == 200
    run = orjson.loads(response.data)["billing_run"]
    # Its grace period is over at 02:00: finalized at once, never a draft.
    assert (run["drafted"], run["finalized"], run["failed"], run["complete"]) == (0, 1, {}, True)
    again = orjson.loads(client.post("/", json={"as_of": (DEC + 3 * HOUR).isoformat()}).data)["billing_run"]
    assert (again["drafted"], again["finalized"]) == (0, 0)  # a scheduler retry changes nothing
    (invoice,) = billing.all()
    assert invoice.status == "finalized" and invoice.amount_cents == 26900


@pytest.mark.parametrize("body, field", [({"as_of": "yesterday"}, "as_of"), ({"as_of": "2026-12-01T00:00:00"}, "as_of")])
def test_a_bad_instant_is_a_422_naming_the_field(client_and_billing, body, field):
    client, _ = client_and_billing
    response = client.post("/", json=body)
    assert response.status_code == 422
    assert field in orjson.loads(response.data)["error_details"]


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "9000-01-01T00:00:00Z",
                                   "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00"])
def test_an_instant_outside_the_calendar_is_a_422_and_bills_nothing(client_and_billing, as_of):
    client, billing = client_and_billing
    response = client.post("/", json={"as_of": as_of})
    assert response.status_code == 422
    assert orjson.loads(response.data)["error_details"] == {"as_of": ["value_is_out_of_range"]}
    assert billing.all() == []


def test_only_post_starts_a_run(client_and_billing):
    client, billing = client_and_billing
    assert client.get("/").status_code == 405
    assert billing.all() == []
