"""Accepted means counted, right after a catalog change: `meterline catalog apply` (another
process) adds a sum metric beside a running `meterline serve`, and in the next second the door
refuses the values that metric's sum could not count, instead of answering 200 for them."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson

from tests.support import cli, serve_process

CATALOG = """
billable_metrics:
  - code: fresh_tokens
    name: Fresh tokens
    aggregation_type: sum_agg
    field_name: value
"""


def _post(url: str, key: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _event(txn: str, code: str, value) -> dict:
    return {"event": {"transaction_id": txn, "external_subscription_id": "sub_1", "code": code,
                      "timestamp": 1767225600, "properties": {"value": value}}}


def test_values_out_of_the_domain_are_refused_in_the_second_after_catalog_apply(tmp_path):
    data = tmp_path / "data"
    key = cli(data, "api-keys", "create", "--name", "gateway").stdout.strip()
    with serve_process(data) as (_, url):
        # The server loads its catalog map now (30 s cache), before the metric exists.
        assert _post(f"{url}/api/v1/events", key, _event("warm", "fresh_tokens", "12345678901234567890"))[0] == 200
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(CATALOG)
        applied = cli(data, "catalog", "apply", str(catalog))
        assert applied.returncode == 0, applied.stderr

        for txn, value, code in (("big", "12345678901234567890", "value_is_out_of_range"),
                                 ("precise", "1.0000000001", "value_is_too_precise")):
            status, body = _post(f"{url}/api/v1/events", key, _event(txn, "fresh_tokens", value))
            assert (status, body.get("error_details")) == (422, {"properties": [code]}), body
        assert _post(f"{url}/api/v1/events", key, _event("fine", "fresh_tokens", "1.5"))[0] == 200
