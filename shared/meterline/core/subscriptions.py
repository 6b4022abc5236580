"""Subscription rules: create, change plan, terminate, and execute due downgrades. Pure.

Lago keeps one record per plan for each external_id (see `meterline.ports.CatalogStore` for
how the history is stored: whole, with an optimistic version check). Creating a subscription with an existing external_id and
another plan_code is a plan change:
- an upgrade (a base fee at least as high per year) applies at once: the current record is
  terminated now, keeping next_plan_code (billing prorates it as a switch), and a new active
  record starts now;
- a downgrade applies when the current billing period ends, so the customer keeps what they
  already paid for: the current record gets next_plan_code and downgrade_plan_date (the local
  date that starts the next period), and a pending record for the new plan is appended;
  `apply_due_downgrades` switches them once that date has begun.

Every function takes the records and returns the new ones (or None when nothing changes);
the caller stores them (`meterline.services.admin`, the billing run).

Each record gets its lago_id and created_at when it is created here: the id is a uuid5 of the
external_id and the record's position in the history (`record_lago_id`), so a retried or
concurrent create computes the same id, and the version check lets only one write it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from meterline.core.catalog import Customer, Plan, Subscription, SubscriptionStatus, lago_id
from meterline.core.errors import NotFound, ValidationFailed
from meterline.core.fields import Key, UtcDatetime, stamp_time
from meterline.core.lago_model import LagoModel
from meterline.core.pricing.periods import BillingSchedule, Period, local_date, local_midnight_utc, period_containing

__all__ = [
    "SUBSCRIPTION_STATUSES",
    "SubscriptionCreate",
    "SubscriptionHistory",
    "SubscriptionUpdate",
    "SubscriptionView",
    "apply_due_downgrades",
    "current_record",
    "history_customer",
    "is_next",
    "plan_subscription",
    "record_lago_id",
    "subscription_view",
    "terminate_records",
    "update_record",
    "with_lago_ids",
]

# Derived from the model's Literal, so the statuses a client may filter on are the ones a
# record can have.
SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)


# Lago options of a subscription request that Meterline does not implement, at their neutral
# values (see core.lago_model.LagoModel).
_SUBSCRIPTION_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "plan_overrides": (None,),
    "payment_method": (None,),
    "invoice_custom_section": (None,),
    "consolidate_invoice": (None, False),
    "billing_entity_code": (None,),
    "purchase_order_number": (None,),
    "activation_rules": (None, []),
}


class SubscriptionCreate(LagoModel):
    """The fields a client may send to create (or change the plan of) a subscription. Status,
    dates of termination and plan links are Meterline's to set, so they are unknown fields here."""

    LAGO_NEUTRAL = _SUBSCRIPTION_NEUTRAL

    external_customer_id: Key
    plan_code: Key
    external_id: Key
    name: str | None = None
    billing_time: Literal["calendar", "anniversary"] = "calendar"
    subscription_at: UtcDatetime | None = None
    ending_at: UtcDatetime | None = None


class SubscriptionUpdate(LagoModel):
    """Lago's PUT /subscriptions/{external_id}: a new name, end date, or (before it starts) start
    date. A null clears name or ending_at (`model_fields_set` tells a null from an absent field).

    The identifying fields are accepted when they repeat the record's values (a client may
    send back the object it created); another value is refused, because Lago changes a plan
    by a create, never by an update."""

    LAGO_NEUTRAL = _SUBSCRIPTION_NEUTRAL

    name: str | None = None
    ending_at: UtcDatetime | None = None
    subscription_at: UtcDatetime | None = None
    external_id: str | None = None
    external_customer_id: str | None = None
    plan_code: str | None = None
    billing_time: Literal["calendar", "anniversary"] | None = None


@dataclass(frozen=True)
class SubscriptionHistory:
    """Every record of one external_id, oldest first, and the version to write against.

    `version` is 0 when the external_id has never been stored.
    """

    external_id: str
    records: tuple[Subscription, ...]
    version: int

    @property
    def exists(self) -> bool:
        return bool(self.records)


def history_customer(external_id: str, records: Sequence[Subscription]) -> str:
    """The customer of a history about to be written; refuses an empty or mixed history,
    which would be a caller's bug (adapters call this before writing)."""
    if not records:
        raise ValueError("a subscription history needs at least one record")
    customers = {r.external_customer_id for r in records}
    if {r.external_id for r in records} != {external_id} or len(customers) != 1:
        raise ValueError("every record of a history must have the same external_id and customer")
    return customers.pop()


def record_lago_id(external_id: str, index: int) -> str:
    """The lago_id of the `index`-th record (0-based, oldest first) of a subscription."""
    return lago_id("subscription", external_id, str(index))


def with_lago_ids(records: Sequence[Subscription]) -> list[Subscription]:
    """`records` (histories, each oldest first, as the store lists them) with every record's
    lago_id filled in: records written before Meterline stored ids get the one they would
    have been given."""
    seen: dict[str, int] = {}
    out = []
    for record in records:
        index = seen.get(record.external_id, 0)
        seen[record.external_id] = index + 1
        if record.lago_id is None:
            record = record.model_copy(update={"lago_id": record_lago_id(record.external_id, index)})
        out.append(record)
    return out


@dataclass(frozen=True)
class SubscriptionView:
    """A record as the API shows it: with its plan (for the plan's amount; None if deleted
    since) and, for an active record, the billing period it is in now."""

    record: Subscription
    plan: Plan | None
    period: Period | None


def subscription_view(record: Subscription, plan: Plan | None, customer: Customer | None,
                      now: datetime) -> SubscriptionView:
    """`record` (its lago_id filled in: `with_lago_ids`) with its plan and, when it is active
    and its plan and customer still exist, its current billing period at `now`."""
    period = None
    if record.status == "active" and plan is not None and customer is not None:
        period = period_containing(BillingSchedule.of(record, plan, customer), now)
    return SubscriptionView(record, plan, period)


def current_record(records: Sequence[Subscription]) -> Subscription | None:
    """The record a create or a plan change applies to: the active one, else one that has not
    started yet (a pending record with no previous plan); None if all have ended."""
    for record in reversed(records):
        if record.status == "active":
            return record
    for record in reversed(records):
        if record.status == "pending" and record.previous_plan_code is None:
            return record
    return None


def is_next(record: Subscription, current: Subscription) -> bool:
    """`record` is the pending record a scheduled downgrade of `current` will start."""
    return (
        record.status == "pending"
        and record.previous_plan_code == current.plan_code
        and record.plan_code == current.next_plan_code
    )


def plan_subscription(
    history: SubscriptionHistory,
    request: SubscriptionCreate,
    plan: Plan,
    customer: Customer,
    get_plan: Callable[[str], Plan | None],
    now: datetime,
) -> tuple[list[Subscription] | None, Subscription]:
    """(the new history, or None if nothing changes; the record to answer with)."""
    records = list(history.records)
    if records and records[0].external_customer_id != request.external_customer_id:
        # The external_id belongs to another customer's subscription.
        raise ValidationFailed({"external_id": ["value_already_exist"]})
    current = current_record(records)

    if current is None:
        # A new subscription (or a new life for an external_id whose records all ended).
        start = request.subscription_at or now
        started = start <= now
        record = Subscription(
            lago_id=record_lago_id(request.external_id, len(records)),
            created_at=stamp_time(now),
            external_id=request.external_id,
            external_customer_id=request.external_customer_id,
            plan_code=plan.code,
            name=request.name,
            billing_time=request.billing_time,
            subscription_at=start,
            started_at=start if started else None,
            ending_at=request.ending_at,
            status="active" if started else "pending",
        )
        return [*records, record], record

    index = records.index(current)
    if plan.code in (current.plan_code, current.next_plan_code):
        return None, current  # the same request again: idempotent

    if current.status == "pending":
        # Not started yet: Lago simply puts the pending record on the new plan.
        records[index] = current.model_copy(update={"plan_code": plan.code, "name": request.name or current.name})
        return records, records[index]

    if current.next_plan_code is not None:
        # A new change replaces a scheduled downgrade: cancel the record waiting for it.
        records = [
            r.model_copy(update={"status": "canceled", "canceled_at": now}) if is_next(r, current) else r
            for r in records
        ]
        current = current.model_copy(update={"next_plan_code": None, "downgrade_plan_date": None})
        records[index] = current

    old_plan = get_plan(current.plan_code)
    following = {
        # A new record: its own id and creation time (Lago's plan change creates a record).
        "lago_id": record_lago_id(request.external_id, len(records)),
        "created_at": stamp_time(now),
        "plan_code": plan.code,
        "previous_plan_code": current.plan_code,
        "next_plan_code": None,
        "downgrade_plan_date": None,
        "terminated_at": None,
        "canceled_at": None,
        "name": request.name or current.name,
    }
    # NOTE: Lago's rule: a plan costing at least as much per year is an upgrade (equal counts,
    # so a same-price plan switch applies at once). The new record keeps subscription_at, so
    # an anniversary subscription keeps its billing day and its trial.
    if old_plan is None or plan.yearly_amount_cents >= old_plan.yearly_amount_cents:
        records[index] = current.model_copy(update={"status": "terminated", "terminated_at": now, "next_plan_code": plan.code})
        new = current.model_copy(update={**following, "status": "active", "started_at": now})
        return [*records, new], new

    # The downgrade date is the local day that starts the next period: apply_due_downgrades
    # turns it back into that period's UTC start with the same zone.
    period = period_containing(BillingSchedule.of(current, old_plan, customer), now)
    records[index] = current.model_copy(
        update={"next_plan_code": plan.code, "downgrade_plan_date": local_date(period.end_utc, customer.zone)}
    )
    pending = current.model_copy(update={**following, "status": "pending", "started_at": None})
    # Lago answers a downgrade with the current record, which now shows the scheduled change.
    return [*records, pending], records[index]


def terminate_records(
    history: SubscriptionHistory, status: str, now: datetime
) -> tuple[list[Subscription], Subscription]:
    """Terminate the latest `status` record now: an active one ends (and a downgrade waiting
    for it is canceled); a pending one is canceled (and unscheduled on the active one)."""
    records = list(history.records)
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        if record.status != status:
            continue
        if status == "pending":
            # Canceling a scheduled downgrade's record also unschedules it on the active one.
            records = [
                r.model_copy(update={"next_plan_code": None, "downgrade_plan_date": None}) if is_next(record, r) else r
                for r in records
            ]
            records[index] = record.model_copy(update={"status": "canceled", "canceled_at": now})
            return records, records[index]
        # next_plan_code is cleared: on a terminated record it would mean "switched plans at
        # terminated_at", which billing prorates differently from a plain termination.
        ended = record.model_copy(
            update={"status": "terminated", "terminated_at": now, "next_plan_code": None, "downgrade_plan_date": None}
        )
        records = [
            r.model_copy(update={"status": "canceled", "canceled_at": now}) if is_next(r, record) else r for r in records
        ]
        records[index] = ended
        return records, ended
    raise NotFound("subscription")


def update_record(
    history: SubscriptionHistory, status: str | None, update: SubscriptionUpdate, now: datetime
) -> tuple[list[Subscription] | None, Subscription]:
    """Lago's subscription update, on the latest `status` record (None: the current record,
    active or not yet started). Refuses what would rewrite the past: a start date of a record
    that has started, an end date that is not after both its start and now."""
    records = list(history.records)
    if status is None:
        target = current_record(records)
    else:
        target = next((r for r in reversed(records) if r.status == status), None)
    if target is None:
        raise NotFound("subscription")
    index = next(i for i, r in enumerate(records) if r is target)
    given = update.model_fields_set
    errors: dict[str, list[str]] = {}
    for name in ("external_id", "external_customer_id", "plan_code", "billing_time"):
        value = getattr(update, name)
        if name in given and value is not None and value != getattr(target, name):
            errors[name] = ["value_is_immutable"]
    changes: dict[str, Any] = {}
    if "name" in given:
        changes["name"] = update.name
    if "subscription_at" in given and update.subscription_at is not None and update.subscription_at != target.subscription_at:
        if target.started_at is not None or target.previous_plan_code is not None:
            # Started (or the start of a scheduled downgrade, set by the billing period): fixed.
            errors["subscription_at"] = ["value_is_immutable"]
        else:
            start = update.subscription_at
            changes["subscription_at"] = start
            if start <= now:  # as a create with a past date: active, backdated
                changes.update(status="active", started_at=start)
    if "ending_at" in given:
        start = changes.get("subscription_at", target.subscription_at)
        if update.ending_at is not None and (update.ending_at <= start or update.ending_at <= now):
            errors["ending_at"] = ["invalid_ending_at"]
        changes["ending_at"] = update.ending_at
    if errors:
        raise ValidationFailed(errors)
    changes = {k: v for k, v in changes.items() if getattr(target, k) != v}
    if not changes:
        return None, target
    records[index] = target.model_copy(update=changes)
    return records, records[index]


def apply_due_downgrades(records: Sequence[Subscription], at: datetime, zone: ZoneInfo) -> list[Subscription] | None:
    """Execute every scheduled downgrade due at `at` (timezone-aware); None if none is due.

    A downgrade is due once its downgrade_plan_date has begun in the customer's `zone`. It
    takes effect at that local midnight, not at `at`: a billing run that comes late still
    switches at the period boundary, so the old plan is billed for its full period and the new
    one from the next. The current record is terminated then, keeping next_plan_code (billing
    prorates it as a switch, not as a plain termination), and its pending record starts then.
    Applying twice changes nothing the second time: neither record is waiting any more.
    """
    changed = list(records)
    due = False
    for index, current in enumerate(records):
        if current.status != "active" or current.next_plan_code is None or current.downgrade_plan_date is None:
            continue
        switch_at = local_midnight_utc(current.downgrade_plan_date, zone)
        if at < switch_at:
            continue
        waiting = [i for i, r in enumerate(changed) if is_next(r, current)]
        if not waiting:
            # The history is inconsistent (terminate_records unschedules a canceled downgrade);
            # terminating without a next record would silently stop billing the customer.
            raise ValueError(f"{current.external_id}: downgrade to {current.next_plan_code} has no pending record")
        due = True
        changed[index] = current.model_copy(update={"status": "terminated", "terminated_at": switch_at})
        for i in waiting:
            changed[i] = changed[i].model_copy(update={"status": "active", "started_at": switch_at})
    return changed if due else None
