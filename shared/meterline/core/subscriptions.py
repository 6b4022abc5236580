"""Subscription rules: create, change plan, terminate, and execute due downgrades. Pure.

Lago keeps one record per plan for each external_id (see `meterline.services.numeric_fields`
for how the history is stored). Creating a subscription with an existing external_id and
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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from meterline.core.catalog import Customer, Plan, Subscription, SubscriptionStatus, UtcDatetime
from meterline.core.errors import NotFound, ValidationFailed
from meterline.core.pricing.periods import BillingSchedule, local_date, local_midnight_utc, period_containing

__all__ = [
    "SUBSCRIPTION_STATUSES",
    "SubscriptionCreate",
    "SubscriptionHistory",
    "apply_due_downgrades",
    "current_record",
    "history_customer",
    "is_next",
    "plan_subscription",
    "terminate_records",
]

# Derived from the model's Literal, so the statuses a client may filter on are the ones a
# record can have.
SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)


class SubscriptionCreate(BaseModel):
    """The fields a client may send to create (or change the plan of) a subscription. Status,
    dates of termination and plan links are Meterline's to set, so they are unknown fields here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    external_customer_id: Annotated[str, Field(min_length=1)]
    plan_code: Annotated[str, Field(min_length=1)]
    external_id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    billing_time: Literal["calendar", "anniversary"] = "calendar"
    subscription_at: UtcDatetime | None = None
    ending_at: UtcDatetime | None = None



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
