"""The admin API over HTTP (Lago's routes and bodies); the rules live in `meterline.services.admin`.

    POST/GET /api/v1/billable_metrics     GET /api/v1/billable_metrics/{code}
    POST/GET /api/v1/plans                GET /api/v1/plans/{code}
    POST/GET /api/v1/customers            GET /api/v1/customers/{external_id}
    POST/GET /api/v1/subscriptions        GET/DELETE /api/v1/subscriptions/{external_id}

Requests and answers are wrapped in the resource's root key ({"plan": {...}}); lists answer
{"plans": [...], "meta": {...}}. Creates answer 200, as Lago does.
"""

from __future__ import annotations

from typing import Any

from flask import Request, Response

from meterline.core.subscriptions import SUBSCRIPTION_STATUSES
from meterline.services.admin import AdminService
from meterline.core.errors import MalformedInput, ValidationFailed
from meterline.core.jsonbody import read_json
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    pagination_meta,
    read_body,
    route_not_found,
)
from meterline.runtime import AdminRuntime

# Collection path segment -> the root key of one object.
ROOT_KEYS = {
    "billable_metrics": "billable_metric",
    "plans": "plan",
    "customers": "customer",
    "subscriptions": "subscription",
}
# NOTE: well under the ingest limit: a catalog document is stored as one Firestore string
# field (at most ~1 MiB), and no real plan or customer comes near this.
MAX_ADMIN_BODY = 256 * 1024


def admin_handler(runtime: AdminRuntime, request: Request) -> Response:
    resource, _, key = api_path(request).partition("/")
    if resource not in ROOT_KEYS:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    if "/" in key:
        raise route_not_found()  # no nested routes (and codes holding '/' cannot be addressed)
    service = runtime.service
    root = ROOT_KEYS[resource]

    if key == "":
        if request.method == "POST":
            data = _unwrap(read_body(request, min(MAX_ADMIN_BODY, runtime.settings.max_body_bytes)), root)
            return json_response(200, {root: _create(service, resource, data).to_lago()})
        if request.method == "GET":
            page, per_page = page_args(request)
            items, total = _list(service, resource, request, page, per_page)
            return json_response(200, {resource: [i.to_lago() for i in items], "meta": pagination_meta(page, per_page, total)})
        raise method_not_allowed()

    if request.method == "GET":
        return json_response(200, {root: _get(service, resource, key, request).to_lago()})
    if request.method == "DELETE" and resource == "subscriptions":
        status = request.args.get("status") or "active"
        return json_response(200, {root: service.terminate_subscription(key, status).to_lago()})
    raise method_not_allowed()


def _unwrap(body: bytes, root: str) -> dict[str, Any]:
    data = read_json(body)
    if not isinstance(data, dict) or data.get(root) is None:
        raise MalformedInput({root: ["value_is_mandatory"]}, f"BadRequest: param is missing or the value is empty: {root}")
    if not isinstance(data[root], dict):
        raise ValidationFailed({root: ["invalid_type"]})
    return data[root]


def _create(service: AdminService, resource: str, data: dict[str, Any]):
    if resource == "billable_metrics":
        return service.create_billable_metric(data)
    if resource == "plans":
        return service.create_plan(data)
    if resource == "customers":
        return service.upsert_customer(data)
    return service.create_subscription(data)


def _get(service: AdminService, resource: str, key: str, request: Request):
    if resource == "billable_metrics":
        return service.get_billable_metric(key)
    if resource == "plans":
        return service.get_plan(key)
    if resource == "customers":
        return service.get_customer(key)
    status = request.args.get("status") or "active"
    if status not in SUBSCRIPTION_STATUSES:
        raise ValidationFailed({"status": ["invalid_value"]})
    return service.get_subscription(key, status)


def _list(service: AdminService, resource: str, request: Request, page: int, per_page: int):
    if resource == "billable_metrics":
        return service.list_billable_metrics(page, per_page)
    if resource == "plans":
        return service.list_plans(page, per_page)
    if resource == "customers":
        return service.list_customers(page, per_page)
    # Lago's filter: status[]=active&status[]=pending (plain status= too); default active only.
    statuses = request.args.getlist("status[]") + request.args.getlist("status")
    if any(s not in SUBSCRIPTION_STATUSES for s in statuses):
        raise ValidationFailed({"status": ["invalid_value"]})
    customer = request.args.get("external_customer_id") or None
    return service.list_subscriptions(customer, statuses or ["active"], page, per_page)
