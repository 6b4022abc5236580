"""The usage service: catalog -> billing period -> ONE usage query -> rating, for many
subscriptions at once. The one chain that the demo, the billing run, the current-usage API
and the customer portal share, so what a customer sees is what they will be invoiced.

A record whose usage the warehouse cannot read is not rated and does not stop the others: it
is named in the result's `failed`, for the billing run to flag (and logged by the query).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meterline.core.catalog import Customer, Plan, Subscription
from meterline.core.errors import NotFound
from meterline.core.pricing.periods import BillingSchedule, Period, period_containing
from meterline.core.pricing.rating import InvoiceDraft, rate_subscription
from meterline.ports import CatalogStore, Warehouse
from meterline.services.usage_query import UsageQuery, UsageWindow


@dataclass(frozen=True)
class FailedPeriod:
    """One subscription record's period that could not be rated: the warehouse's error."""

    subscription: Subscription
    period: Period
    error: str


class RatedPeriods(list["RatedPeriod"]):
    """The rated periods, in the order asked, without the ones in `failed`."""

    def __init__(self, rated: Sequence[RatedPeriod] = (), failed: Sequence[FailedPeriod] = ()):
        super().__init__(rated)
        self.failed: tuple[FailedPeriod, ...] = tuple(failed)


@dataclass(frozen=True)
class RatedPeriod:
    """One subscription record's usage in one period, rated."""

    subscription: Subscription
    customer: Customer
    plan: Plan
    period: Period
    draft: InvoiceDraft


class UsageService:
    def __init__(self, catalog: CatalogStore, warehouse: Warehouse):
        self._catalog = catalog
        self._warehouse = warehouse

    def current(self, subscriptions: Sequence[Subscription], at: datetime) -> RatedPeriods:
        """Each record's period that contains `at`, rated with the usage so far."""
        customers, plans = self._customers(subscriptions), self._plans(subscriptions)
        periods = [
            period_containing(BillingSchedule.of(s, plans[s.plan_code], customers[s.external_customer_id]), at)
            for s in subscriptions
        ]
        return self.rate(list(zip(subscriptions, periods, strict=True)), customers, plans)

    def rate(
        self,
        items: Sequence[tuple[Subscription, Period]],
        customers: dict[str, Customer] | None = None,
        plans: dict[str, Plan] | None = None,
    ) -> RatedPeriods:
        """Rate each (record, period) with its usage, read in one query for all of them; a
        record whose usage cannot be read is in `failed` instead."""
        if not items:
            return RatedPeriods()
        records = [s for s, _ in items]
        customers = customers or self._customers(records)
        plans = plans or self._plans(records)
        metrics = {m.code: m for m in self._catalog.list_billable_metrics()[0]}
        windows = [
            UsageWindow(str(i), s.external_id, s.plan_code, period.start_utc, period.end_utc)
            for i, (s, period) in enumerate(items)
        ]
        usage = UsageQuery(metrics, plans.values()).run(self._warehouse, windows)
        rated, failed = [], []
        for window, (subscription, period) in zip(windows, items, strict=True):
            if window.window_id in usage.failed:
                failed.append(FailedPeriod(subscription, period, usage.failed[window.window_id]))
                continue
            plan, customer = plans[subscription.plan_code], customers[subscription.external_customer_id]
            draft = rate_subscription(subscription, plan, customer, period, usage[window.window_id], metrics=metrics)
            rated.append(RatedPeriod(subscription, customer, plan, period, draft))
        return RatedPeriods(rated, failed)

    def _customers(self, records: Sequence[Subscription]) -> dict[str, Customer]:
        return {cid: self._required(self._catalog.get_customer(cid), "customer") for cid in {s.external_customer_id for s in records}}

    def _plans(self, records: Sequence[Subscription]) -> dict[str, Plan]:
        return {code: self._required(self._catalog.get_plan(code), "plan") for code in {s.plan_code for s in records}}

    @staticmethod
    def _required(found, resource: str):
        if found is None:
            raise NotFound(resource)
        return found
