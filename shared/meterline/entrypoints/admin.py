"""The admin API over HTTP (Lago's routes and bodies); the rules live in `meterline.services.admin`.

    POST/GET /api/v1/billable_metrics     GET/PUT/DELETE /api/v1/billable_metrics/{code}
    POST/GET /api/v1/plans                GET/PUT/DELETE /api/v1/plans/{code}
    POST/GET /api/v1/customers            GET/DELETE     /api/v1/customers/{external_id}
    POST/GET /api/v1/subscriptions        GET/PUT/DELETE /api/v1/subscriptions/{external_id}

Requests and answers are wrapped in the resource's root key ({"plan": {...}}); lists answer
{"plans": [...], "meta": {...}}. Creates answer 200, as Lago does, and every answer is Lago's
object as `meterline.entrypoints.lago` renders it (lago_id, timestamps, Lago's neutral values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Request, Response

from meterline.core.errors import MalformedInput, ValidationFailed
from meterline.core.jsonbody import read_json
from meterline.core.subscriptions import SUBSCRIPTION_STATUSES
from meterline.entrypoints import lago
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    read_body,
    route_not_found,
)
from meterline.entrypoints.invoices import invoices_handler
from meterline.runtime import AdminRuntime
from meterline.services.admin import AdminService

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
    if resource == "invoices":
        return invoices_handler(runtime, request)  # the admin function also serves Lago's invoices API
    if resource not in ROOT_KEYS:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    if "/" in key:
        raise route_not_found()  # no nested routes (and codes holding '/' cannot be addressed)
    service = runtime.service
    root = ROOT_KEYS[resource]

    if key == "":
        if request.method == "POST":
            data = _body(runtime, request, root)
            return _answer(service, resource, _CREATE[resource](service, data))
        if request.method == "GET":
            page, per_page = page_args(request)
            items, total = _list(service, resource, request, page, per_page)
            return json_response(200, lago.listing(resource, _lago(service, resource, items), page, per_page, total))
        raise method_not_allowed(("GET", "POST"))

    route = _OBJECT_ROUTES.get((resource, request.method))
    if route is None:
        raise method_not_allowed([m for r, m in _OBJECT_ROUTES if r == resource])
    update = _body(runtime, request, root) if request.method == "PUT" else None
    return _answer(service, resource, route(service, key, update, request.args))


def _body(runtime: AdminRuntime, request: Request, root: str) -> dict[str, Any]:
    return _unwrap(read_body(request, min(MAX_ADMIN_BODY, runtime.settings.max_body_bytes)), root)


# Each resource's renderer in Lago's wire format.
_RENDER: dict[str, Callable[[Any], dict[str, Any]]] = {
    "billable_metrics": lago.billable_metric,
    "plans": lago.plan,
    "customers": lago.customer,
    "subscriptions": lago.subscription,
}


def _lago(service: AdminService, resource: str, items: list[Any]) -> list[dict[str, Any]]:
    """Lago's objects: subscriptions with their plans and current periods, the others by themselves."""
    if resource == "subscriptions":
        items = service.subscription_views(items)
    return [_RENDER[resource](i) for i in items]


def _answer(service: AdminService, resource: str, item: Any) -> Response:
    return json_response(200, {ROOT_KEYS[resource]: _lago(service, resource, [item])[0]})


def _unwrap(body: bytes, root: str) -> dict[str, Any]:
    data = read_json(body)
    if not isinstance(data, dict) or data.get(root) is None:
        raise MalformedInput({root: ["value_is_mandatory"]}, f"BadRequest: param is missing or the value is empty: {root}")
    if not isinstance(data[root], dict):
        raise ValidationFailed({root: ["invalid_type"]})
    return data[root]


_CREATE: dict[str, Callable[[AdminService, dict[str, Any]], Any]] = {
    "billable_metrics": AdminService.create_billable_metric,
    "plans": AdminService.create_plan,
    "customers": AdminService.upsert_customer,  # Lago's POST /customers creates or updates
    "subscriptions": AdminService.create_subscription,
}


def _status(args: Mapping[str, str], allowed: Sequence[str], default: str | None) -> str | None:
    status = args.get("status") or default
    if status is not None and status not in allowed:
        raise ValidationFailed({"status": ["invalid_value"]})
    return status


# What one object's path answers, by (resource, method): f(service, key, body, query args).
# Lago has no PUT for customers (POST /customers upserts). A subscription's `status` picks
# the record: GET the latest in any status (default active), PUT the current record (active,
# else not started) or the latest pending, DELETE terminates the active one or cancels a
# pending one (AdminService.terminate_subscription checks which).
_OBJECT_ROUTES: dict[tuple[str, str], Callable[[AdminService, str, Any, Mapping[str, str]], Any]] = {
    ("billable_metrics", "GET"): lambda s, key, _, __: s.get_billable_metric(key),
    ("billable_metrics", "PUT"): lambda s, key, data, _: s.update_billable_metric(key, data),
    ("billable_metrics", "DELETE"): lambda s, key, _, __: s.delete_billable_metric(key),
    ("plans", "GET"): lambda s, key, _, __: s.get_plan(key),
    ("plans", "PUT"): lambda s, key, data, _: s.update_plan(key, data),
    ("plans", "DELETE"): lambda s, key, _, __: s.delete_plan(key),
    ("customers", "GET"): lambda s, key, _, __: s.get_customer(key),
    ("customers", "DELETE"): lambda s, key, _, __: s.delete_customer(key),
    ("subscriptions", "GET"): lambda s, key, _, args: s.get_subscription(key, _status(args, SUBSCRIPTION_STATUSES, "active") or "active"),
    ("subscriptions", "PUT"): lambda s, key, data, args: s.update_subscription(key, _status(args, ("active", "pending"), None), data),
    ("subscriptions", "DELETE"): lambda s, key, _, args: s.terminate_subscription(key, args.get("status") or "active"),
}


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
