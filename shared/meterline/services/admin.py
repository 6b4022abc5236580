"""The catalog admin service: billable metrics, plans, customers and subscriptions, with
Lago's rules and Lago's errors. No HTTP here (`meterline.entrypoints.admin` translates requests).

Inputs are the objects inside Lago's root keys (the `{...}` of `{"plan": {...}}`); every
client mistake raises a domain error from `meterline.core.errors` naming the field:
`ValidationFailed` (Lago's 422 `validation_errors`), or `NotFound` for a reference to
something that does not exist (Lago's 404 `<resource>_not_found`).

Updates (PUT) are partial, as Lago's: the fields sent replace the stored ones, the others are
kept; a plan's `charges`, when sent, is the whole new list, and a charge naming an existing one
by `id` (its lago_id, or Meterline's own id) updates that charge. Codes never change (a code is
what subscriptions, events and lago_ids refer to).

The catalog's rules (a metric or plan in use, a plan's references) are
`meterline.core.catalog.rules`, which `meterline catalog apply` calls too. Deleting refuses
what billing still reads (422, `error_details` {"base": [...]}): a metric a plan charges for,
a plan or a customer with a subscription record that is not canceled (a terminated record's
last period is still to be invoiced). Lago cascades instead; see
docs/lago-compatibility.md. The check and the delete are two steps: a plan created on a metric
between them would be refused by no one, as in a Lago race between two API calls.

The subscription rules (create, plan change, update, termination) live in
`meterline.core.subscriptions`; this service reads a subscription history, applies a rule, and
writes the history back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription, lago_error_details, lago_id
from meterline.core.catalog.rules import (
    billed,
    check_metric_update,
    check_plan_references,
    check_plan_update,
    check_unused,
    plans_using,
)
from meterline.core.errors import NotFound, Unavailable, ValidationFailed
from meterline.core.subscriptions import (
    SubscriptionCreate,
    SubscriptionHistory,
    SubscriptionUpdate,
    SubscriptionView,
    plan_subscription,
    record_lago_id,
    subscription_view,
    terminate_records,
    update_record,
    with_lago_ids,
)
from meterline.ports import AlreadyExists, CatalogStore, StaleWrite

__all__ = ["AdminService", "validate"]

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

    def _metrics_changed(self) -> None:
        if self._on_metrics_changed is not None:
            self._on_metrics_changed()  # the ingest numeric check sees the change at once

    # -- billable metrics ------------------------------------------------------------------

    def create_billable_metric(self, body: Any) -> BillableMetric:
        metric = validate(BillableMetric, body)
        try:
            stored = self._store.put_billable_metric(metric, create_only=True)
        except AlreadyExists:
            raise ValidationFailed({"code": ["value_already_exist"]}) from None
        self._metrics_changed()
        return stored

    def get_billable_metric(self, code: str) -> BillableMetric:
        metric = self._store.get_billable_metric(code)
        if metric is None:
            raise NotFound("billable_metric")
        return metric

    def list_billable_metrics(self, page: int, per_page: int) -> tuple[list[BillableMetric], int]:
        return self._store.list_billable_metrics((page - 1) * per_page, per_page)

    def update_billable_metric(self, code: str, body: dict[str, Any]) -> BillableMetric:
        """Lago's PUT /billable_metrics/{code}. Once a plan charges for the metric, what its
        units are computed from is fixed, and its filters must keep every charge filter valid."""
        existing = self.get_billable_metric(code)
        metric = validate(BillableMetric, _merged(existing, body, code))
        check_metric_update(existing, metric, self._store.list_plans()[0], self._store.get_billable_metric)
        stored = self._store.put_billable_metric(metric)
        self._metrics_changed()
        return stored

    def delete_billable_metric(self, code: str) -> BillableMetric:
        store = self._store
        deleted = self._delete_unused("billable_metric", code, store.get_billable_metric,
                                      lambda: bool(self._plans_using(code)), store.delete_billable_metric)
        self._metrics_changed()
        return deleted

    def _plans_using(self, code: str) -> list[Plan]:
        return plans_using(self._store.list_plans()[0], code)

    # -- plans -----------------------------------------------------------------------------

    def create_plan(self, body: Any) -> Plan:
        plan = validate(Plan, self._resolve_metric_ids(body))
        check_plan_references(plan, self._store.get_billable_metric)
        try:
            return self._store.put_plan(plan, create_only=True)
        except AlreadyExists:
            raise ValidationFailed({"code": ["value_already_exist"]}) from None

    def get_plan(self, code: str) -> Plan:
        plan = self._store.get_plan(code)
        if plan is None:
            raise NotFound("plan")
        return plan

    def list_plans(self, page: int, per_page: int) -> tuple[list[Plan], int]:
        return self._store.list_plans((page - 1) * per_page, per_page)

    def update_plan(self, code: str, body: dict[str, Any]) -> Plan:
        """Lago's PUT /plans/{code}; the subscriptions on the plan are billed on the new terms."""
        existing = self.get_plan(code)
        if isinstance(body.get("charges"), list):
            body = {**body, "charges": _merge_charges(existing, body["charges"])}
        plan = validate(Plan, self._resolve_metric_ids(_merged(existing, body, code)))
        check_plan_references(plan, self._store.get_billable_metric)
        # NOTE: reads every subscription history (records are not indexed by plan), and only
        # when the interval or currency changes.
        check_plan_update(existing, plan, self._store.list_subscriptions)
        return self._store.put_plan(plan)

    def delete_plan(self, code: str) -> Plan:
        return self._delete_unused("plan", code, self._store.get_plan, lambda: self._plan_in_use(code), self._store.delete_plan)

    def _plan_in_use(self, code: str) -> bool:
        # NOTE: reads every subscription history (records are not indexed by plan); admin
        # updates and deletes are rare.
        return any(r.plan_code == code and billed(r) for r in self._store.list_subscriptions())

    def _resolve_metric_ids(self, body: Any) -> Any:
        """Charges that name their metric by Lago id (`billable_metric_id`, as Lago's clients
        do) get its code instead, so a stored charge always names its metric by code. An id
        that matches no metric is left for check_plan_references to report (404)."""
        if not isinstance(body, dict) or not isinstance(body.get("charges"), list):
            return body
        charges = body["charges"]
        if not any(isinstance(c, dict) and isinstance(c.get("billable_metric_id"), str) for c in charges):
            return body
        by_id = {m.lago_id: m for m in self._store.list_billable_metrics()[0]}
        resolved, errors = [], {}
        for i, charge in enumerate(charges):
            metric_id = charge.get("billable_metric_id") if isinstance(charge, dict) else None
            metric = by_id.get(metric_id) if isinstance(metric_id, str) else None
            if metric is not None:
                code = charge.get("billable_metric_code")
                if code not in (None, metric.code):
                    errors[f"charges.{i}.billable_metric_id"] = ["invalid_value"]  # names another metric
                charge = {**charge, "billable_metric_code": metric.code, "billable_metric_id": None}
            resolved.append(charge)
        if errors:
            raise ValidationFailed(errors)
        return {**body, "charges": resolved}

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
        if existing is not None and customer.to_lago() == existing.to_lago():
            return existing
        return self._store.put_customer(customer)

    def get_customer(self, external_id: str) -> Customer:
        customer = self._store.get_customer(external_id)
        if customer is None:
            raise NotFound("customer")
        return customer

    def list_customers(self, page: int, per_page: int) -> tuple[list[Customer], int]:
        return self._store.list_customers((page - 1) * per_page, per_page)

    def delete_customer(self, external_id: str) -> Customer:
        store = self._store
        return self._delete_unused("customer", external_id, store.get_customer,
                                   lambda: any(billed(r) for r in store.list_subscriptions(external_id)),
                                   store.delete_customer)

    @staticmethod
    def _delete_unused(resource: str, key: str, get: Callable[[str], M | None], used: Callable[[], bool],
                       delete: Callable[[str], M | None]) -> M:
        """Delete `key` unless billing still reads it: 404 if absent, 422
        {"base": ["<resource>_in_use"]} if used (see the module doc)."""
        if get(key) is None:
            raise NotFound(resource)
        check_unused(resource, used())
        deleted = delete(key)
        if deleted is None:
            raise NotFound(resource)  # deleted meanwhile
        return deleted

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
        for record in reversed(with_lago_ids(self._store.get_subscription_history(external_id).records)):
            if record.status == status:
                return record
        raise NotFound("subscription")

    def list_subscriptions(
        self, external_customer_id: str | None, statuses: Sequence[str], page: int, per_page: int
    ) -> tuple[list[Subscription], int]:
        records = [s for s in with_lago_ids(self._store.list_subscriptions(external_customer_id)) if s.status in statuses]
        return _page(records, page, per_page)

    def update_subscription(self, external_id: str, status: str | None, body: Any) -> Subscription:
        """Lago's PUT /subscriptions/{external_id}: name, ending_at, or the start of a record
        that has not started (see `core.subscriptions.update_record`)."""
        update = validate(SubscriptionUpdate, body)
        now = self._clock()

        def change(history: SubscriptionHistory) -> tuple[list[Subscription] | None, Subscription]:
            return update_record(history, status, update, now)

        return self._update_history(external_id, change)

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

    def subscription_views(self, records: Sequence[Subscription]) -> list[SubscriptionView]:
        """Each record with its plan and, when active, its current billing period (the plans
        and customers are read once per call)."""
        plans: dict[str, Plan | None] = {}
        customers: dict[str, Customer | None] = {}
        now = self._clock()
        out = []
        for record in records:
            if record.plan_code not in plans:
                plans[record.plan_code] = self._store.get_plan(record.plan_code)
            if record.external_customer_id not in customers:
                customers[record.external_customer_id] = self._store.get_customer(record.external_customer_id)
            out.append(subscription_view(record, plans[record.plan_code], customers[record.external_customer_id], now))
        return out

    def _update_history(
        self, external_id: str, change: Callable[[SubscriptionHistory], tuple[list[Subscription] | None, Subscription]]
    ) -> Subscription:
        """Read, change, write with the version read; on a concurrent write, start again from
        a fresh read (so a retried request finds its own earlier write and is idempotent).
        Returns the changed record with its lago_id."""
        for _ in range(_WRITE_ATTEMPTS):
            history = self._store.get_subscription_history(external_id)
            records, result = change(history)
            if records is None:
                return _with_id(history.records, result)  # nothing to change
            try:
                self._store.put_subscription_history(external_id, records, version=history.version)
            except StaleWrite:
                continue
            return _with_id(records, result)
        raise Unavailable()


def _with_id(records: Sequence[Subscription], result: Subscription) -> Subscription:
    """`result` (one of `records`) with its lago_id, derived from its place if it has none."""
    if result.lago_id is not None:
        return result
    index = next(i for i, r in enumerate(records) if r is result)
    return result.model_copy(update={"lago_id": record_lago_id(result.external_id, index)})


def _merged(existing: BillableMetric | Plan, body: dict[str, Any], code: str) -> dict[str, Any]:
    """A partial update: the stored definition with the fields sent. The code is the path's."""
    if "code" in body and body["code"] not in (None, code):
        raise ValidationFailed({"code": ["value_is_immutable"]})
    return {**existing.to_lago(), **{k: v for k, v in body.items() if k != "code"}}


def _merge_charges(existing: Plan, charges: list[Any]) -> list[Any]:
    """A plan update's charges: one whose `id` names a stored charge (by its lago_id, as Lago's
    clients send it, or by Meterline's own id) is that charge with the fields sent; it keeps
    its Meterline id, so its invoice lines and lago_id do not change. Others are new."""
    known: dict[str, Any] = {}
    for charge in existing.charges:
        known[lago_id("charge", existing.code, charge.ref)] = charge
        if charge.id is not None:
            known.setdefault(charge.id, charge)
    out = []
    for raw in charges:
        charge_id = raw.get("id") if isinstance(raw, dict) else None
        old = known.get(charge_id) if isinstance(charge_id, str) else None
        if old is None:
            out.append(raw)
            continue
        base = old.to_lago()
        if raw.get("billable_metric_id") is not None or raw.get("billable_metric_code") is not None:
            base.pop("billable_metric_code")  # the request names the metric itself
        merged = {**base, **{k: v for k, v in raw.items() if k != "id"}}
        merged.pop("id", None)
        if old.id is not None:
            merged["id"] = old.id
        out.append(merged)
    return out
