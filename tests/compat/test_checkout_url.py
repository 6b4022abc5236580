"""`lago-python-client`'s `customers.checkout_url` against `meterline serve` with Stripe on
localstripe: Lago's answer shape, a setup-mode Stripe Checkout session for the customer's
Stripe customer, and Lago's errors."""

from __future__ import annotations

import json
import urllib.request

import pytest
import stripe
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Customer

from tests.compat.targets import serve_target, unique

pytestmark = pytest.mark.servers

STRIPE_KEY = "sk_test_meterline_checkout_compat"
SUCCESS_URL = "https://billing.example.test/card-saved"


@pytest.fixture
def stripe_target(tmp_path, stripe_server):
    stripe_server.reset()
    env = {"METERLINE_STRIPE_API_KEY": STRIPE_KEY, "STRIPE_API_BASE": stripe_server.url,
           "METERLINE_STRIPE_CHECKOUT_SUCCESS_URL": SUCCESS_URL}
    with serve_target(tmp_path / "serve", env) as running:
        yield running, stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stripe_server.url}, max_network_retries=0)


def _call(target, method: str, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{target.url}/api/v1{path}", method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {target.api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_client_gets_a_setup_mode_checkout_session_of_the_customer(stripe_target):
    target, stripe_client = stripe_target
    lago = target.client()
    external_id = unique("card")
    created = lago.customers.create(Customer(external_id=external_id, name="Card Co", email="pay@card.test",
                                             currency="USD"))
    url = lago.customers.checkout_url(external_id)
    assert url.startswith("https://checkout.stripe.com/")
    session = stripe_client.v1.checkout.sessions.retrieve(url.rsplit("/", 1)[1])
    (customer,) = [c for c in stripe_client.v1.customers.list({"limit": 100}).data
                   if (c.to_dict().get("metadata") or {}).get("meterline_customer_id") == external_id]
    assert (session.mode, session.customer, session.success_url, session.status) == (
        "setup", customer.id, SUCCESS_URL, "open")
    assert (customer.name, customer.email) == ("Card Co", "pay@card.test")

    # Lago's route is POST; GET is answered the same. Each call is a new session.
    for method in ("POST", "GET"):
        status, body = _call(target, method, f"/customers/{external_id}/checkout_url")
        assert status == 200
        assert set(body) == {"customer"} and body["customer"]["checkout_url"].startswith("https://checkout.stripe.com/")
        assert {k: v for k, v in body["customer"].items() if k != "checkout_url"} == {
            "lago_customer_id": created.lago_id, "external_customer_id": external_id, "payment_provider": "stripe",
            "payment_provider_code": None}
        assert body["customer"]["checkout_url"] != url
    assert len([c for c in stripe_client.v1.customers.list({"limit": 100}).data
                if (c.to_dict().get("metadata") or {}).get("meterline_customer_id") == external_id]) == 1

    with pytest.raises(LagoApiError) as info:
        lago.customers.checkout_url(unique("nobody"))
    assert (info.value.status_code, info.value.response) == (
        404, {"status": 404, "error": "Not Found", "code": "customer_not_found"})
    status, _ = _call(target, "DELETE", f"/customers/{external_id}/checkout_url")
    assert status == 405


def test_without_stripe_the_answer_is_lago_s_no_linked_payment_provider(tmp_path):
    with serve_target(tmp_path / "serve") as target:
        lago = target.client()
        external_id = unique("nocard")
        lago.customers.create(Customer(external_id=external_id, currency="USD"))
        with pytest.raises(LagoApiError) as info:
            lago.customers.checkout_url(external_id)
        assert (info.value.status_code, info.value.response) == (
            422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                  "error_details": {"base": ["no_linked_payment_provider"]}})
