"""The catalog admin service: billable metrics, plans, customers and subscriptions, with
Lago's rules and Lago's errors. No HTTP here (`meterline.entrypoints.admin` translates requests).

Inputs are the objects inside Lago's root keys (the `{...}` of `{"plan": {...}}`); every
client mistake raises a domain error from `meterline.core.errors` naming the field:
`ValidationFailed` (Lago's 422 `validation_errors`), or `NotFound` for a reference to
something that does not exist (Lago's 404 `<resource>_not_found`).

The subscription rules (create, plan change, termination) live in `meterline.core.subscriptions`;
this service reads a subscription history, applies a rule, and writes the history back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription, lago_error_details
from meterline.core.errors import NotFound, Unavailable, ValidationFailed
from meterline.core.subscriptions import SubscriptionCreate, plan_subscription, terminate_records
from meterline.core.subscriptions import SubscriptionHistory
from meterline.ports import AlreadyExists, CatalogStore, StaleWrite

__all__ = ["AdminService", "check_plan_references", "validate"]

_WRITE_ATTEMPTS = 5

M = TypeVar("M", bound=BaseModel)


# The keys that identify an object: Lago answers value_is_mandatory when they are missing OR
# empty ("param is missing or the value is empty"), where pydantic's min_length would say
# invalid_value for "".
_KEYS = {
    BillableMetric: ("code", "name"),
    Plan: ("code", "name"),
    Customer: ("external_id",),
    SubscriptionCreate: ("external_customer_id", "plan_code", "external_id"),
}


def validate(model: type[M], data: Any) -> M:
    """model_validate with pydantic's errors turned into Lago's 422."""
    keys = _KEYS.get(model, ())
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not (k in keys and v in ("", None))}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(lago_error_details(exc)) from None


def _page(items: Sequence[Any], page: int, per_page: int) -> tuple[list[Any], int]:
    start = (page - 1) * per_page
    return list(items[start : start + per_page]), len(items)


class AdminService:
    def __init__(
        self,
        store: CatalogStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_metrics_changed: Callable[[], None] | None = None,
    ):
        self._store = store
        self._clock = clock
        self._on_metrics_changed = on_metrics_changed

    # -- billable metrics ------------------------------------------------------------------

    def create_billable_metric(self, body: Any) -> BillableMetric:
        metric = validate(BillableMetric, body)
        try:
            self._store.put_billable_metric(metric, create_only=True)
        except AlreadyExists:
            raise ValidationFailed({"code": ["value_already_exist"]}) from None
        if self._on_metrics_changed is not None:
            self._on_metrics_changed()  # the ingest numeric check sees the new metric at once
        return metric

    def get_billable_metric(self, code: str) -> BillableMetric:
        metric = self._store.get_billable_metric(code)
        if metric is None:
            raise NotFound("billable_metric")
        return metric

    def list_billable_metrics(self, page: int, per_page: int) -> tuple[list[BillableMetric], int]:
        return self._store.list_billable_metrics((page - 1) * per_page, per_page)

    # -- plans -----------------------------------------------------------------------------

    def create_plan(self, body: Any) -> Plan:
        plan = validate(Plan, body)
        check_plan_references(plan, self._store.get_billable_metric)
        try:
            self._store.put_plan(plan, create_only=True)
        except AlreadyExists:
            raise ValidationFailed({"code": ["value_already_exist"]}) from None
        return plan

    def get_plan(self, code: str) -> Plan:
        plan = self._store.get_plan(code)
        if plan is None:
            raise NotFound("plan")
        return plan

    def list_plans(self, page: int, per_page: int) -> tuple[list[Plan], int]:
        return self._store.list_plans((page - 1) * per_page, per_page)

    # -- customers -------------------------------------------------------------------------

    def upsert_customer(self, body: Any) -> Customer:
        """Lago's POST /customers: create, or update the fields given (others are kept)."""
        existing = None
        if isinstance(body, dict) and isinstance(body.get("external_id"), str) and body["external_id"]:
            existing = self._store.get_customer(body["external_id"])
        data = {**existing.to_lago(), **body} if existing is not None and isinstance(body, dict) else body
        customer = validate(Customer, data)
        if existing is not None and existing.currency is not None and customer.currency != existing.currency:
            # NOTE: Lago freezes the currency once the customer is billed in it; a live
            # subscription would otherwise be invoiced in a currency its plan is not priced in.
            live = [s for s in self._store.list_subscriptions(customer.external_id) if s.status in ("active", "pending")]
            if live:
                raise ValidationFailed({"currency": ["currencies_does_not_match"]})
        if existing is None or customer.to_lago() != existing.to_lago():
            self._store.put_customer(customer)
        return customer

    def get_customer(self, external_id: str) -> Customer:
        customer = self._store.get_customer(external_id)
        if customer is None:
            raise NotFound("customer")
        return customer

    def list_customers(self, page: int, per_page: int) -> tuple[list[Customer], int]:
        return self._store.list_customers((page - 1) * per_page, per_page)

    # -- subscriptions ---------------------------------------------------------------------

    def create_subscription(self, body: Any) -> Subscription:
        """Create, change plan, or (same plan again) return the current record unchanged."""
        request = validate(SubscriptionCreate, body)
        if request.ending_at is not None and request.ending_at <= (request.subscription_at or self._clock()):
            raise ValidationFailed({"ending_at": ["invalid_ending_at"]})
        customer = self._store.get_customer(request.external_customer_id)
        if customer is None:
            raise NotFound("customer")
        plan = self._store.get_plan(request.plan_code)
        if plan is None:
            raise NotFound("plan")
        if customer.currency is not None and customer.currency != plan.amount_currency:
            raise ValidationFailed({"currency": ["currencies_does_not_match"]})

        def change(history: SubscriptionHistory) -> tuple[list[Subscription] | None, Subscription]:
            return plan_subscription(history, request, plan, customer, self._store.get_plan, self._clock())

        result = self._update_history(request.external_id, change)
        if customer.currency is None:
            # Lago: a customer without a currency takes its first plan's.
            self._store.put_customer(customer.model_copy(update={"currency": plan.amount_currency}))
        return result

    def get_subscription(self, external_id: str, status: str = "active") -> Subscription:
        """The latest record of `external_id` in `status` (Lago's default: the active one)."""
        for record in reversed(self._store.get_subscription_history(external_id).records):
            if record.status == status:
                return record
        raise NotFound("subscription")

    def list_subscriptions(
        self, external_customer_id: str | None, statuses: Sequence[str], page: int, per_page: int
    ) -> tuple[list[Subscription], int]:
        records = [s for s in self._store.list_subscriptions(external_customer_id) if s.status in statuses]
        return _page(records, page, per_page)

    def terminate_subscription(self, external_id: str, status: str = "active") -> Subscription:
        """Lago's DELETE /subscriptions/{external_id}: terminate the active record now (and
        cancel a downgrade waiting for it), or, with status=pending, cancel a record that
        has not started."""
        if status not in ("active", "pending"):
            raise ValidationFailed({"status": ["invalid_value"]})
        now = self._clock()

        def change(history: SubscriptionHistory) -> tuple[list[Subscription] | None, Subscription]:
            return terminate_records(history, status, now)

        return self._update_history(external_id, change)

    def _update_history(
        self, external_id: str, change: Callable[[SubscriptionHistory], tuple[list[Subscription] | None, Subscription]]
    ) -> Subscription:
        """Read, change, write with the version read; on a concurrent write, start again from
        a fresh read (so a retried request finds its own earlier write and is idempotent)."""
        for _ in range(_WRITE_ATTEMPTS):
            history = self._store.get_subscription_history(external_id)
            records, result = change(history)
            if records is None:
                return result  # nothing to change
            try:
                self._store.put_subscription_history(external_id, records, version=history.version)
            except StaleWrite:
                continue
            return result
        raise Unavailable()


# ---------------------------------------------------------------------------------------------
# Pure rule (no store): plan references
# ---------------------------------------------------------------------------------------------


def check_plan_references(plan: Plan, get_metric: Callable[[str], BillableMetric | None]) -> None:
    """Every charge names an existing metric (404 billable_metric_not_found), only recurring
    metrics are prorated, and every charge filter uses its metric's filter keys and values
    (422 on `charges.N.filters.M.values`): a filter that can never match would silently bill
    its usage at the default price."""
    errors: dict[str, list[str]] = {}
    for i, charge in enumerate(plan.charges):
        # NOTE: Meterline has no Lago ids, so a charge given only billable_metric_id cannot
        # be resolved and is reported as not found.
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
