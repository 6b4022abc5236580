"""The invoices API (Lago's shape) through `meterline serve`'s app, and the billing run
behind an API key there."""

from __future__ import annotations

import orjson
import pytest

from meterline.local.app import create_app
from meterline.services.auth import create_api_key
from meterline.core.clock import now_us
from tests.unit.test_billing_run import DEC, HOUR, JAN, Billing


@pytest.fixture
def api(tmp_path):
    billing = Billing(tmp_path)
    key = create_api_key(billing.runtime.adapters.api_keys, "finance", now_us())
    client = create_app(billing.runtime).test_client()
    return client, {"Authorization": f"Bearer {key}"}, billing


def test_a_billing_run_through_the_api_then_its_invoice_in_lago_s_shape(api):
    client, auth, billing = api
    assert client.post("/api/v1/billing_runs", json={"as_of": DEC.isoformat()}).status_code == 401
    run = client.post("/api/v1/billing_runs", json={"as_of": (DEC + 2 * HOUR).isoformat()}, headers=auth)
    assert run.status_code == 200 and orjson.loads(run.data)["billing_run"]["finalized"] == 1

    listed = orjson.loads(client.get("/api/v1/invoices?external_customer_id=acme", headers=auth).data)
    (invoice,) = listed["invoices"]
    assert listed["meta"]["total_count"] == 1
    assert (invoice["status"], invoice["payment_status"], invoice["currency"]) == ("finalized", "pending", "USD")
    assert invoice["total_amount_cents"] == invoice["fees_amount_cents"] == 26900
    assert sum(f["amount_cents"] for f in invoice["fees"]) == 26900
    assert invoice["number"].endswith("-0001") and invoice["issuing_date"] == "2026-12-01"
    one = orjson.loads(client.get(f"/api/v1/invoices/{invoice['lago_id']}", headers=auth).data)["invoice"]
    assert one == invoice


def test_filters_and_errors(api):
    client, auth, billing = api
    billing.run(JAN + 2 * HOUR)  # November and December
    def numbers(query: str) -> list[str]:
        return [i["issuing_date"] for i in orjson.loads(client.get(f"/api/v1/invoices?{query}", headers=auth).data)["invoices"]]

    assert numbers("") == ["2027-01-01", "2026-12-01"]  # newest first
    assert numbers("issuing_date_from=2026-12-15") == ["2027-01-01"]
    assert numbers("issuing_date_to=2026-12-15") == ["2026-12-01"]
    assert numbers("status=draft") == []
    assert numbers("external_customer_id=nobody") == []
    bad = client.get("/api/v1/invoices?issuing_date_from=soon&status=bogus", headers=auth)
    assert bad.status_code == 422
    assert set(orjson.loads(bad.data)["error_details"]) == {"issuing_date_from", "status"}
    missing = client.get("/api/v1/invoices/00000000-0000-0000-0000-000000000000", headers=auth)
    assert (missing.status_code, orjson.loads(missing.data)["code"]) == (404, "invoice_not_found")
    assert client.post("/api/v1/invoices", headers=auth).status_code == 405


def test_lago_s_own_client_parses_the_answers(api):
    from lago_python_client.client import Client
    from lago_python_client.models.invoice import InvoiceResponse

    client, auth, billing = api
    billing.run(JAN + 2 * HOUR)
    for invoice in orjson.loads(client.get("/api/v1/invoices", headers=auth).data)["invoices"]:
        parsed = InvoiceResponse.parse_obj(invoice)  # the client's strict response model
        assert parsed.lago_id == invoice["lago_id"] and parsed.total_amount_cents == invoice["total_amount_cents"]
        assert len(parsed.fees.__root__) == len(invoice["fees"])
    assert Client  # the full client round trip through `meterline serve` is in tests/compat


def test_the_admin_function_serves_the_invoices_api(tmp_path):
    import functions_framework

    from meterline.runtime import set_runtime
    from tests.support import REPO_ROOT

    billing = Billing(tmp_path)
    key = create_api_key(billing.runtime.adapters.api_keys, "finance", now_us())
    billing.run(DEC + 2 * HOUR)
    set_runtime(billing.runtime)
    try:
        client = functions_framework.create_app("admin", str(REPO_ROOT / "functions/admin/main.py")).test_client()
        answer = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        (invoice,) = orjson.loads(answer.data)["invoices"]
        assert invoice["total_amount_cents"] == 26900
        assert client.get("/api/v1/invoices").status_code == 401
    finally:
        set_runtime(None)
