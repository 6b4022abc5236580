"""The subscription record: a customer on a plan (the rules that create and change records
are `meterline.core.subscriptions`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from meterline.core.fields import Key, Stamp, UtcDatetime
from meterline.core.lago_model import LagoModel

__all__ = ["Subscription", "SubscriptionStatus"]

# The one list of a subscription record's statuses (`core.subscriptions.SUBSCRIPTION_STATUSES`
# is derived from it).
SubscriptionStatus = Literal["active", "pending", "terminated", "canceled"]


class Subscription(LagoModel):
    """A customer on a plan. Lago keeps one record per plan: an upgrade terminates this record
    and starts a new one with the same external_id (`previous_plan_code` links them).

    `lago_id` and `created_at` are stored with the record when `core.subscriptions` creates
    it: Lago gives each record of a plan change its own id. (None only on records written
    before Meterline kept them; `core.subscriptions.record_lago_id` answers for those.)"""

    lago_id: str | None = None
    created_at: Stamp | None = None
    external_id: Key
    external_customer_id: Key
    plan_code: Key
    name: str | None = None
    billing_time: Literal["calendar", "anniversary"] = "calendar"
    subscription_at: UtcDatetime
    started_at: UtcDatetime | None = None
    ending_at: UtcDatetime | None = None
    terminated_at: UtcDatetime | None = None
    canceled_at: UtcDatetime | None = None
    status: SubscriptionStatus = "active"
    previous_plan_code: str | None = None
    next_plan_code: str | None = None
    downgrade_plan_date: date | None = None

    @model_validator(mode="after")
    def _check_dates(self) -> Subscription:
        if self.status == "terminated" and self.terminated_at is None:
            raise PydanticCustomError("value_is_mandatory", "a terminated subscription needs terminated_at")
        if self.ending_at is not None and self.ending_at <= self.subscription_at:
            raise PydanticCustomError("invalid_ending_at", "ending_at must be after subscription_at")
        return self

    @property
    def start(self) -> datetime:
        """When billing starts: started_at, or subscription_at for a not-yet-started record."""
        return self.started_at or self.subscription_at

    @property
    def end(self) -> datetime | None:
        """When billing stops (exclusive): termination, else the scheduled ending_at."""
        if self.terminated_at is not None:
            return self.terminated_at
        return self.ending_at
