"""What a change to the stored catalog must respect, whoever makes it (the admin API or
`meterline catalog apply`). Pure: each rule takes the catalog as it is (or as it will be) and
the change, and raises the domain error that refuses it.

- A plan's references: every charge names an existing metric, only recurring metrics are
  prorated, and every charge filter uses its metric's filter keys and values.
- A metric in use (a plan charges for it): what its units are computed from is fixed, and its
  filters must keep every charge filter on it valid.
- A plan in use (a subscription record billing reads): its interval and currency are fixed.
- Deleting refuses what billing still reads (`check_unused`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from meterline.core.catalog.metrics import BillableMetric
from meterline.core.catalog.plans import Plan
from meterline.core.catalog.subscriptions import Subscription
from meterline.core.errors import NotFound, ValidationFailed

__all__ = [
    "METRIC_PRICING_FIELDS",
    "PLAN_SCHEDULE_FIELDS",
    "billed",
    "check_metric_update",
    "check_plan_references",
    "check_plan_update",
    "check_unused",
    "plans_using",
]

# What a metric's charges are priced on: changing it under a plan would reprice the current
# period. Lago ignores these fields once a plan uses the metric; Meterline refuses a change.
METRIC_PRICING_FIELDS = ("aggregation_type", "field_name", "recurring", "rounding_function", "rounding_precision",
                         "weighted_interval")
# What shapes a plan's periods and currency: changing it under live subscriptions would cut
# their current period differently, or bill it in another currency than its customer's.
PLAN_SCHEDULE_FIELDS = ("interval", "amount_currency")

MetricLookup = Callable[[str], BillableMetric | None]


def billed(record: Subscription) -> bool:
    """A record that billing reads: anything but one canceled before it started."""
    return record.status != "canceled"


def plans_using(plans: Iterable[Plan], metric_code: str) -> list[Plan]:
    """The plans with a charge on `metric_code`."""
    return [p for p in plans if any(c.billable_metric_code == metric_code for c in p.charges)]


def check_plan_references(plan: Plan, get_metric: MetricLookup) -> None:
    """Every charge names an existing metric (404 billable_metric_not_found), only recurring
    metrics are prorated, and every charge filter uses its metric's filter keys and values
    (422 on `charges.N.filters.M.values`): a filter that can never match would silently bill
    its usage at the default price."""
    errors: dict[str, list[str]] = {}
    for i, charge in enumerate(plan.charges):
        # NOTE: the admin service resolves a Lago id (billable_metric_id) to the metric's code
        # first; an id left unresolved names no metric.
        metric = get_metric(charge.billable_metric_code) if charge.billable_metric_code else None
        if metric is None:
            raise NotFound("billable_metric")
        if charge.prorated and not metric.recurring:
            # Lago prorates only recurring metrics (seats, storage): usage that resets every
            # period has no "days it was held" to prorate by.
            errors[f"charges.{i}.prorated"] = ["invalid_billable_metric_or_charge_model"]
        allowed = {f.key: set(f.values) for f in metric.filters}
        for j, charge_filter in enumerate(charge.filters):
            if any(key not in allowed or not set(values) <= allowed[key] for key, values in charge_filter.values.items()):
                errors[f"charges.{i}.filters.{j}.values"] = ["invalid_value"]
    if errors:
        raise ValidationFailed(errors)


def check_metric_update(existing: BillableMetric, metric: BillableMetric, plans: Iterable[Plan],
                        get_metric: MetricLookup) -> None:
    """`existing` may become `metric` unless a plan in `plans` charges for it and the change
    touches what its units are computed from, or drops a filter value a charge filter uses
    (422 `<field>: billable_metric_in_use`). `get_metric` finds the plans' other metrics."""
    if metric.to_lago() == existing.to_lago():
        return
    using = plans_using(plans, existing.code)
    if not using:
        return
    errors = {f: ["billable_metric_in_use"] for f in METRIC_PRICING_FIELDS if getattr(metric, f) != getattr(existing, f)}
    if metric.filters != existing.filters:
        try:
            for plan in using:
                check_plan_references(plan, lambda c: metric if c == existing.code else get_metric(c))
        except ValidationFailed:
            errors["filters"] = ["billable_metric_in_use"]
    if errors:
        raise ValidationFailed(errors)


def check_plan_update(existing: Plan, plan: Plan, records: Callable[[], Iterable[Subscription]]) -> None:
    """`existing` may become `plan` unless the change moves its interval or currency while a
    record billing reads is on it (422 `<field>: plan_in_use`). `records` (every subscription
    record) is read only when such a field changes."""
    changed = [f for f in PLAN_SCHEDULE_FIELDS if getattr(plan, f) != getattr(existing, f)]
    if changed and any(r.plan_code == existing.code and billed(r) for r in records()):
        raise ValidationFailed({f: ["plan_in_use"] for f in changed})


def check_unused(resource: str, used: bool) -> None:
    """A delete of something billing still reads: 422 {"base": ["<resource>_in_use"]}."""
    if used:
        raise ValidationFailed({"base": [f"{resource}_in_use"]})
