"""The portal function over HTTP: current usage and portal links (API key), and the customer's
usage page behind a signed link.

    GET  /api/v1/customers/{external_customer_id}/current_usage?external_subscription_id=...
    POST /api/v1/customers/{external_customer_id}/portal_url   (GET too: Lago's clients send GET)
    POST /api/v1/customers/{external_customer_id}/checkout_url (GET too) a Stripe Checkout link
    GET  /portal/customers/{external_customer_id}?token=T       the page (HTML)
    GET  /portal/usage/{external_customer_id}                   its data, `Authorization: Bearer T` (JSON)
    GET  /portal/static/portal.js, portal.css                    the page's only script and style

The admin function owns the rest of /api/v1/customers/...; `is_portal_api` says which paths
are the portal's, for the router in front (`meterline serve`'s app, the load balancer).

Every portal answer carrying customer data is `Cache-Control: no-store`, and the page's
Content-Security-Policy allows nothing but this function's own script, style and JSON. A
missing, tampered or expired token gets 401, a token of another customer 403, and neither
any data: the token is checked before anything is read.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from importlib import resources
from urllib.parse import quote

from flask import Request, Response

from meterline import logs
from meterline.config import Settings
from meterline.core.errors import Forbidden, NotFound, Unauthenticated, ValidationFailed
from meterline.entrypoints import lago
from meterline.entrypoints.http import API_PREFIX, api_path, json_response, method_not_allowed, route_not_found
from meterline.entrypoints.lago import HttpError
from meterline.services.auth import bearer_token

_log = logs.get("portal")
_API = re.compile(r"customers/(?P<customer>[^/]+)/(?P<action>current_usage|portal_url|checkout_url)")
_PORTAL = "/portal/"
_STATIC = {"portal.js": "text/javascript; charset=utf-8", "portal.css": "text/css; charset=utf-8"}
REFRESH_MS = 4000  # how often an open page asks for its data (paused while the tab is hidden)

# NOTE: no 'unsafe-inline' anywhere: the page's script and style are files of this function,
# and the chart is markup. `connect-src 'self'` is the refresh's JSON; nothing else may load.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_PRIVATE = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "no-referrer",  # the token is in the page's URL: never sent onwards
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def is_portal_api(path: str) -> bool:
    """Whether a path below /api/v1/ is the portal function's (a customer's sub-resources)."""
    return _API.fullmatch(path.rstrip("/")) is not None


def portal_handler(runtime, request: Request) -> Response:
    """`runtime` has `auth` and `service` (a PortalService): the portal function's."""
    path = request.path
    if API_PREFIX in path:
        return _api(runtime, request, api_path(request))
    at = path.find(_PORTAL)
    if at < 0:
        raise route_not_found()
    return _pages(runtime, request, path[:at], path[at + len(_PORTAL):])


# -- the API (key) ------------------------------------------------------------------------------


def _api(runtime, request: Request, rest: str) -> Response:
    match = _API.fullmatch(rest)
    if match is None:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    customer, action = match["customer"], match["action"]
    service = runtime.service
    if action == "current_usage":
        if request.method != "GET":
            raise method_not_allowed(("GET",))
        subscription = request.args.get("external_subscription_id")
        if not subscription:
            raise ValidationFailed({"external_subscription_id": ["value_is_mandatory"]})
        usage = service.current_usage(customer, subscription)
        return json_response(200, {"customer_usage": lago.current_usage(usage)}, {"Cache-Control": "no-store"})
    if action == "checkout_url":
        # NOTE: Lago's route and its client are POST; GET is accepted like portal_url's. Either
        # way each call makes a new Stripe Checkout session (setup mode); nothing is stored here.
        if request.method not in ("GET", "POST"):
            raise method_not_allowed(("GET", "POST"))
        from meterline.services.checkout import MissingSuccessUrl

        try:
            found, url = runtime.checkout.checkout_url(customer)
        except MissingSuccessUrl:
            logs.event(_log, "checkout_url refused: METERLINE_STRIPE_CHECKOUT_SUCCESS_URL is unset", logging.WARNING)
            raise HttpError(503, "Service Unavailable", "checkout_success_url_not_configured",
                            {"stripe_checkout_success_url": ["value_is_mandatory"]}) from None
        return json_response(200, lago.checkout_url(found, url), {"Cache-Control": "no-store"})
    # NOTE: Lago documents GET for portal_url and its official client sends GET; POST is
    # accepted too. Either way each call signs a new link; nothing is stored.
    if request.method not in ("GET", "POST"):
        raise method_not_allowed(("GET", "POST"))
    link = service.issue_link(customer)
    base = _link_base(runtime.settings, request)
    url = f"{base}{_PORTAL}customers/{quote(customer, safe='')}?token={link.token}"
    return json_response(200, lago.portal_url(url), {"Cache-Control": "no-store"})


def _link_base(settings: Settings, request: Request) -> str:
    """The base URL of a portal link: the configured one, else the request's own, but only when
    its Host is allowed. The Host header is the client's to write: trusting it would let anyone
    with an API key get a correctly signed link that points at their own site."""
    if settings.portal_base_url:
        return settings.portal_base_url.rstrip("/")
    host = request.host.lower()
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]  # no port
    if name in {h.lower().strip("[]") for h in settings.portal_allowed_hosts}:
        return request.host_url.rstrip("/")
    # The Host itself is not logged: it is the client's text.
    logs.event(_log, "portal_url refused: METERLINE_PORTAL_BASE_URL is unset and the request's host is not "
               "in METERLINE_PORTAL_ALLOWED_HOSTS", logging.WARNING)
    raise HttpError(503, "Service Unavailable", "portal_base_url_not_configured",
                    {"portal_base_url": ["value_is_mandatory"]})


# -- the page (signed link) -------------------------------------------------------------------------


@functools.cache
def _static_file(name: str) -> tuple[bytes, str]:
    """A static file's bytes and a short hash of them (the page's URLs carry it, so a new
    version is fetched at once while an unchanged one stays cached)."""
    data = (resources.files("meterline.entrypoints") / "portal_static" / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def static_urls(root: str) -> dict[str, str]:
    return {name: f"{root}{_PORTAL}static/{name}?v={_static_file(name)[1]}" for name in _STATIC}


def _pages(runtime, request: Request, root: str, rest: str) -> Response:
    from meterline.entrypoints import portal_page

    kind, _, key = rest.partition("/")
    if kind == "static" and key in _STATIC:
        if request.method != "GET":
            raise method_not_allowed(("GET",))
        data, _ = _static_file(key)
        return Response(data, 200, content_type=_STATIC[key],
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
    if kind not in ("customers", "usage") or not key:
        raise route_not_found()
    if request.method != "GET":
        raise method_not_allowed(("GET",))
    service = runtime.service
    static = static_urls(root)
    if kind == "usage":  # the page's refresh: JSON, errors in Lago's JSON shape
        service.authorize(bearer_token(request.headers.get("Authorization")), key)
        return json_response(200, portal_page.page_json(service.page(key)), _PRIVATE)
    try:
        service.authorize(request.args.get("token"), key)
        page = service.page(key)
    except (Unauthenticated, Forbidden, NotFound) as err:
        status, title, message = {
            Unauthenticated: (401, "This link is not valid",
                              "It has expired or was changed. Ask your provider for a new link to your usage."),
            Forbidden: (403, "This link is for another account", "Ask your provider for a link to your own usage."),
            NotFound: (404, "Not found", "There is nothing to show here."),
        }[type(err)]
        return Response(portal_page.error_page(status, title, message, static), status,
                        content_type="text/html; charset=utf-8", headers=_PRIVATE)
    usage_url = f"{root}{_PORTAL}usage/{quote(key, safe='')}"
    body = portal_page.render_page(page, root=root, usage_url=usage_url, static=static, refresh_ms=REFRESH_MS)
    return Response(body, 200, content_type="text/html; charset=utf-8", headers=_PRIVATE)

