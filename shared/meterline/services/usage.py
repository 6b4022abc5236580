"""The usage service: catalog -> billing period -> ONE usage query -> rating, for many
subscriptions at once. The one chain that the demo, the billing run, the current-usage API
and the customer portal share, so what a customer sees is what they will be invoiced.

A record whose usage the warehouse cannot read is not rated and does not stop the others: it
is named in the result's `failed`, for the billing run to retry (and logged by `read_usage`).
So is a record that cannot be billed for its own sake (its amounts leave the money domain, its
plan reads a property the SQL cannot), with that `reason`, for the billing run to flag.

One subscription's data never fails another's usage: the numeric domain keeps every sum far
from overflow (`meterline.core.numbers`), and if the warehouse still refuses the query,
`read_usage` isolates the windows it fails on and returns everyone else's usage
(`WindowUsage.failed`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meterline import logs
from meterline.core.catalog import Customer, Plan, Subscription
from meterline.core.errors import NotFound, Unbillable
from meterline.core.pricing.periods import BillingSchedule, Period, charges_window, period_containing
from meterline.core.pricing.rating import InvoiceDraft, rate_subscription
from meterline.core.usage_query import UNUSABLE_PROPERTY_NAME, UsageQuery, UsageWindow, WindowUsage
from meterline.ports import ArrivalProbe, CatalogStore, UsageReader

_log = logs.get("usage")

# NOTE: when the query fails, the windows are split in halves and each half asked again, down
# to single windows, so k failing windows among n cost about k*log2(n) extra queries, not n.
# Failures that look like the warehouse, not one subscription's data, end the search and
# raise: the first few windows all failed with nothing succeeding (the warehouse is down, or
# the SQL is wrong), or more than _MAX_FAILED windows failed. Then nobody is billed from a
# broken warehouse, and a down warehouse costs a handful of queries, not thousands.
_FIRST_FAILURES_TO_GIVE_UP = 3
_MAX_FAILED = 16


def read_usage(reader: UsageReader, query: UsageQuery, windows: Sequence[UsageWindow]) -> WindowUsage:
    """Usage per window id, in the shape `rate_subscription` takes, from one query; the
    windows the warehouse fails on are left out and named in `failed` (see _isolate), and so
    are those of a plan the query cannot read (`UsageQuery.unusable`, in `unbillable` too)."""
    unbillable = query.unbillable(windows)
    if unbillable:
        usage = read_usage(reader, query, [w for w in windows if w.window_id not in unbillable])
        usage.failed.update(unbillable)
        usage.unbillable.update(dict.fromkeys(unbillable, UNUSABLE_PROPERTY_NAME))
        return usage
    if not windows or not query.charges:
        return WindowUsage({w.window_id: {} for w in windows})
    query.check(windows)
    try:
        rows = reader.usage_rows(query, windows)
    except Exception as exc:  # noqa: BLE001 - any warehouse error: find the windows it comes from
        return _isolate(reader, query, windows, exc)
    return WindowUsage(query.to_usage(rows, windows))


def _isolate(reader: UsageReader, query: UsageQuery, windows: Sequence[UsageWindow], first: Exception) -> WindowUsage:
    """Ask again in halves, down to single windows: the usage of every window that can be
    read, and the error of each one that cannot (or raise `first`, see _MAX_FAILED)."""
    usage = WindowUsage()
    # Groups still to read, each with its error if it is known to fail; depth first.
    pending: list[tuple[Sequence[UsageWindow], Exception | None]] = [(windows, first)]
    while pending:
        group, error = pending.pop()
        if error is None:
            try:
                rows = reader.usage_rows(query, group)
            except Exception as exc:  # noqa: BLE001 - as in read_usage
                error = exc
            else:
                usage.update(query.to_usage(rows, group))
                continue
        if len(group) > 1:
            half = len(group) // 2
            pending += [(group[half:], None), (group[:half], None)]
            continue
        usage.failed[group[0].window_id] = _describe(error)
        nothing_read = not usage and len(usage.failed) >= _FIRST_FAILURES_TO_GIVE_UP
        if nothing_read or len(usage.failed) > _MAX_FAILED:
            raise first
    subscription_of = {w.window_id: w.external_subscription_id for w in windows}
    for window_id, described in usage.failed.items():
        logs.event(_log, "usage not read for one window", logging.ERROR, window_id=window_id,
                   external_subscription_id=subscription_of[window_id], error=described)
    return usage


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass(frozen=True)
class FailedPeriod:
    """One subscription record's period that could not be rated: the warehouse's error, or,
    when the subscription's own usage or catalog cannot be billed, that `reason` too (a
    Lago-style code: `amount_out_of_range`, `unusable_property_name`)."""

    subscription: Subscription
    period: Period
    error: str
    reason: str | None = None

    def unbillable(self) -> Unbillable | None:
        """The domain error to answer for it, when it is the subscription's own."""
        return None if self.reason is None else Unbillable(self.reason, self.error)


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
    def __init__(self, catalog: CatalogStore, reader: UsageReader):
        self._catalog = catalog
        self._reader = reader

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
        # Each record's usage counts from its start to its end within the period (Lago's
        # charges_from/to_datetime), never the whole calendar period: events timed before a
        # subscription started or after it ended are not its usage, and the two records of an
        # upgrade split the period at the switch.
        windows = [
            UsageWindow(str(i), s.external_id, s.plan_code, *charges_window(period, s))
            for i, (s, period) in enumerate(items)
        ]
        # A record not active in its period (an empty window) has no usage to read.
        usage = read_usage(self._reader, UsageQuery(metrics, plans.values()), [w for w in windows if w.start < w.end])
        for w in windows:
            if w.start >= w.end:
                usage[w.window_id] = {}
        rated, failed = [], []
        for window, (subscription, period) in zip(windows, items, strict=True):
            if window.window_id in usage.failed:
                failed.append(FailedPeriod(subscription, period, usage.failed[window.window_id],
                                           usage.unbillable.get(window.window_id)))
                continue
            plan, customer = plans[subscription.plan_code], customers[subscription.external_customer_id]
            try:
                draft = rate_subscription(subscription, plan, customer, period, usage[window.window_id], metrics=metrics)
            except Unbillable as exc:  # its amounts left the money domain: this record alone
                failed.append(FailedPeriod(subscription, period, str(exc), exc.reason))
                continue
            rated.append(RatedPeriod(subscription, customer, plan, period, draft))
        return RatedPeriods(rated, failed)

    def windows_with_arrivals(self, probes: Sequence[ArrivalProbe], carry_over_codes: Sequence[str] = ()) -> set[str]:
        """The probes' windows with events processed since (`UsageReader.windows_with_arrivals`):
        the billing run's check for late usage, before it rates those periods again."""
        return self._reader.windows_with_arrivals(probes, carry_over_codes)

    def _customers(self, records: Sequence[Subscription]) -> dict[str, Customer]:
        return {cid: self._required(self._catalog.get_customer(cid), "customer") for cid in {s.external_customer_id for s in records}}

    def _plans(self, records: Sequence[Subscription]) -> dict[str, Plan]:
        return {code: self._required(self._catalog.get_plan(code), "plan") for code in {s.plan_code for s in records}}

    @staticmethod
    def _required(found, resource: str):
        if found is None:
            raise NotFound(resource)
        return found
