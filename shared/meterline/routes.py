"""Which function serves each path: the one route table of every router in front of the
functions.

    meterline serve            local/app.py dispatches with `function_for`
    the load balancer          terraform/lb.tf's URL map, one route rule per public route, in
                               this order (tests/terraform/test_front_door.py holds them equal)
    the loopback routers       `make gcp-local` (infra/router.py) and the compat suite

A pattern is a URL map path template (`path_template_match`): `*` is one path segment, `**`
(last only) any rest of the path, nothing else is special. The first pattern that matches wins,
so the specific routes come before admin's catch-all. A route that is not `public` is served
locally only: on Google Cloud `bill` is private, called by Cloud Scheduler with an OIDC token at
its own URL, and the load balancer has no route to it.

Pure: no Flask, no I/O; importable by infra/ and tests without the functions' dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def template_regex(pattern: str) -> re.Pattern:
    """The regular expression of a path template: `*` one non-empty segment, a final `**` the
    rest of the path (possibly empty)."""
    if not pattern.startswith("/"):
        raise ValueError(f"a path template starts with '/': {pattern!r}")
    segments = pattern[1:].split("/")
    parts = []
    for i, segment in enumerate(segments):
        if segment == "**":
            if i != len(segments) - 1:
                raise ValueError(f"'**' must be the last segment: {pattern!r}")
            parts.append(".*")
        elif segment == "*":
            parts.append("[^/]+")
        elif "*" in segment or not segment:
            raise ValueError(f"'*' stands for a whole segment, and segments are not empty: {pattern!r}")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts))


@dataclass(frozen=True)
class Route:
    pattern: str  # a URL map path template
    function: str  # the folder of functions/ that serves it
    public: bool = True  # reachable through the load balancer
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", template_regex(self.pattern))


ROUTES: tuple[Route, ...] = (
    # Lago's events API: one event, a batch, and reading one back.
    Route("/api/v1/events", "ingest"),
    Route("/api/v1/events/**", "ingest"),
    # A customer's sub-resources that need BigQuery, the signing key or the Stripe key: the
    # portal's (the admin function owns the rest of /api/v1/customers/... and so loads none).
    Route("/api/v1/customers/*/current_usage", "portal"),
    Route("/api/v1/customers/*/portal_url", "portal"),
    Route("/api/v1/customers/*/checkout_url", "portal"),  # and the Stripe key: a Checkout session
    Route("/portal/**", "portal"),  # the page, its data and its static files
    # Stripe's webhook: signed by Stripe, no API key.
    Route("/api/v1/stripe_webhook", "stripe_webhook"),
    Route("/api/v1/stripe_webhook/**", "stripe_webhook"),
    # A billing run on demand (an API key); on Google Cloud only the scheduler calls bill.
    Route("/api/v1/billing_runs", "bill", public=False),
    Route("/api/v1/billing_runs/**", "bill", public=False),
    # A finance report from the warehouse (an API key; `meterline report` while `meterline
    # serve` holds the data dir). On Google Cloud finance queries BigQuery's report views.
    Route("/api/v1/reports/*", "bill", public=False),
    # The catalog and invoices APIs, and a JSON 404 for any other /api/v1/ path.
    Route("/api/v1/**", "admin"),
)

# What the load balancer sends a path that no route matches (`/`, `/favicon.ico`): admin's
# JSON 404, in Lago's shape like every other answer.
DEFAULT_FUNCTION = "admin"


def route_for(path: str, public_only: bool = False) -> Route | None:
    """The first route whose pattern matches the whole path (no query string), or None."""
    for route in ROUTES:
        if (route.public or not public_only) and route.regex.fullmatch(path):
            return route
    return None


def function_for(path: str, public_only: bool = False) -> str | None:
    """The function that serves a path, or None when no route matches it."""
    route = route_for(path, public_only)
    return route.function if route else None


def functions() -> list[str]:
    """Every function a route leads to, in the table's order."""
    return list(dict.fromkeys(route.function for route in ROUTES))
