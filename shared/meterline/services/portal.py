"""The customer portal: signed links, current usage, and what the usage page shows.

One customer watches their own usage live. Everything money-related comes from the usage
service (`services/usage.py`, the chain the billing run uses), so the amounts on the page and
in `current_usage` are what a billing run would invoice if the period closed at that instant.
This module adds only what a page needs beside them:

  * links: an HMAC-SHA256 token scoping one customer until an expiry
    (`services/portal_links.py`);
  * the daily chart and the live seat count: the SAME usage query (`UsageQuery`), asked for one
    window per local day of the period, with each charge's filters dropped so that a day's
    units are the metric's own aggregation (a day's max is the max, not a sum of maxes);
  * a projection to the period's end, labelled as one: the usage so far, re-rated after scaling
    the additive metrics (count, sum) by period length / time elapsed; others stay as they are
    (a max, a unique count, seats: the level reached is assumed to hold).

A page costs two warehouse queries (the usage service's, and the chart's), whatever the
number of the customer's subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
from meterline.core.clock import to_us
from meterline.core.errors import NotFound, Unavailable, Unbillable
from meterline.core.invoices import Invoice
from meterline.core.pricing.fee import Fee
from meterline.core.pricing.periods import Period, charges_window, local_midnight_utc
from meterline.core.pricing.rating import rate_subscription
from meterline.core.pricing.usage import ChargeUsage
from meterline.core.usage_query import UsageQuery, UsageWindow
from meterline.ports import CatalogStore, InvoiceStore, UsageReader
from meterline.services.portal_links import LinkSigner, PortalLink
from meterline.services.usage import RatedPeriod, UsageService, read_usage

__all__ = [
    "CurrentUsage",
    "DailySeries",
    "PortalPage",
    "PortalService",
    "SeatCount",
    "SubscriptionPage",
]

_ONE_DAY = timedelta(days=1)
# Invoices a page lists (newest first): enough for two years of monthly invoices.
_INVOICES_SHOWN = 24


# -- what the API and the page show -------------------------------------------------------------


@dataclass(frozen=True)
class CurrentUsage:
    """One subscription's records in the period containing `at`, rated with the usage so far
    (the records of an upgrade in this period are both here), and the catalog that names them."""

    customer: Customer
    external_subscription_id: str
    at: datetime
    rated: tuple[RatedPeriod, ...]
    metrics: dict[str, BillableMetric]

    @property
    def period(self) -> Period:
        return self.rated[-1].period

    @staticmethod
    def window_of(rated: RatedPeriod) -> tuple[datetime, datetime]:
        """One record's usage window: its part of the period (`charges_window`)."""
        return charges_window(rated.period, rated.subscription)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """The usage window of the subscription's records together, [start, end): from the
        first record's start to the last one's end within the period (Lago's
        charges_from_datetime / charges_to_datetime of current usage)."""
        spans = [self.window_of(r) for r in self.rated]
        return min(s for s, _ in spans), max(e for _, e in spans)

    @property
    def currency(self) -> str:
        return self.rated[-1].draft.currency

    @property
    def fees(self) -> tuple[Fee, ...]:
        return tuple(f for r in self.rated for f in r.draft.fees)

    @property
    def charge_fees(self) -> tuple[Fee, ...]:
        """Usage-based fees only: what Lago's current_usage totals (no subscription fee, no
        minimum-commitment top-up)."""
        return tuple(f for f in self.fees if f.ref.kind == "charge")


@dataclass(frozen=True)
class DailySeries:
    """One charge's units per local day of the period, up to today."""

    charge_ref: str
    label: str
    metric: BillableMetric
    points: tuple[tuple[date, Decimal], ...]


@dataclass(frozen=True)
class SeatCount:
    label: str
    active: int


@dataclass(frozen=True)
class SubscriptionPage:
    usage: CurrentUsage
    plan: Plan  # the current record's
    projected: tuple[Fee, ...]  # the projection's fees, same refs as usage.fees
    elapsed: timedelta  # of the subscription's active part of the period
    active: timedelta  # the subscription's active part of the period
    daily: tuple[DailySeries, ...]
    seats: tuple[SeatCount, ...]

    @property
    def usage_cents(self) -> int:
        return sum(f.amount_cents for f in self.usage.charge_fees)

    @property
    def invoice_cents(self) -> int:
        return sum(f.amount_cents for f in self.usage.fees)

    @property
    def projected_cents(self) -> int:
        return sum(f.amount_cents for f in self.projected)

    def projected_fee(self, fee: Fee) -> Fee | None:
        return next((p for p in self.projected if p.ref == fee.ref), None)


@dataclass(frozen=True)
class PortalPage:
    customer: Customer
    at: datetime
    subscriptions: tuple[SubscriptionPage, ...]
    invoices: tuple[Invoice, ...]
    # Prepaid credits come with a later issue: None is "not available yet", and the page keeps
    # its place for the balance.
    credits_cents: int | None = None


class PortalService:
    def __init__(self, catalog: CatalogStore, usage: UsageService, warehouse: UsageReader, invoices: InvoiceStore,
                 signer: LinkSigner, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._catalog = catalog
        self._usage = usage
        self._warehouse = warehouse
        self._invoices = invoices
        self.signer = signer
        self.clock = clock

    # -- links --------------------------------------------------------------------------------

    def issue_link(self, customer_external_id: str) -> PortalLink:
        self._customer(customer_external_id)  # a link only for a customer that exists
        return self.signer.issue(customer_external_id, self.clock())

    def authorize(self, token: str | None, customer_external_id: str) -> str:
        return self.signer.authorize(token, customer_external_id, self.clock())

    # -- current usage ---------------------------------------------------------------------

    def current_usage(self, customer_external_id: str, external_subscription_id: str,
                      at: datetime | None = None) -> CurrentUsage:
        """Lago's current usage: the subscription's period containing `at` (now), rated."""
        customer = self._customer(customer_external_id)
        records = [r for r in self._catalog.get_subscription_history(external_subscription_id).records
                   if r.external_customer_id == customer.external_id]
        found = self._current(customer, records, at or self.clock())
        if not found:
            raise NotFound("subscription")
        return found[0]

    def _current(self, customer: Customer, records: Sequence[Subscription], at: datetime) -> list[CurrentUsage]:
        """Per subscription external_id (in first-seen order), its records billed in the period
        containing `at`: the billing run's choice (active or terminated, started, overlapping)."""
        candidates = [r for r in records if r.status in ("active", "terminated") and r.started_at is not None
                      and r.started_at <= at]
        if not candidates:
            return []
        rated = self._usage.current(candidates, at)
        if rated.failed:
            # Its own usage or catalog cannot be billed: 422 with the reason. Else the
            # warehouse failed: 503, and the client retries.
            raise next((e for e in (f.unbillable() for f in rated.failed) if e is not None), Unavailable())
        metrics = {m.code: m for m in self._catalog.list_billable_metrics()[0]}
        groups: dict[str, list[RatedPeriod]] = {}
        for r in rated:
            end = r.subscription.end
            if end is None or end > r.period.start_utc:
                groups.setdefault(r.subscription.external_id, []).append(r)
        return [CurrentUsage(customer, ext, at, tuple(rs), metrics) for ext, rs in groups.items()]

    # -- the page ----------------------------------------------------------------------------

    def page(self, customer_external_id: str, at: datetime | None = None) -> PortalPage:
        customer = self._customer(customer_external_id)
        at = at or self.clock()
        usages = self._current(customer, self._catalog.list_subscriptions(customer.external_id), at)
        invoices, _ = self._invoices.list(customer_external_id=customer.external_id,
                                          statuses=["finalized", "paid", "payment_failed", "voided"],
                                          limit=_INVOICES_SHOWN)
        return PortalPage(customer, at, tuple(self._details(usages, at)), tuple(invoices))

    def _details(self, usages: list[CurrentUsage], at: datetime) -> list[SubscriptionPage]:
        """The projection, daily series and seats of each subscription, from ONE usage query."""
        if not usages:
            return []
        metrics = usages[0].metrics
        plans = {r.plan.code: r.plan for u in usages for r in u.rated}
        chart_plans: dict[str, Plan] = {}
        windows: list[UsageWindow] = []
        days_of: list[list[date]] = []
        for u in usages:
            for i, r in enumerate(u.rated):  # each record's usage so far, raw, for the projection
                windows.append(UsageWindow(f"{u.external_subscription_id}\x00{i}", u.external_subscription_id,
                                           r.plan.code, *u.window_of(r)))
            # The chart follows the current record's plan for the whole period (events belong
            # to the external id, whichever record billed them).
            current = u.rated[-1]
            if current.plan.code not in chart_plans:
                taken = {*plans, *(p.code for p in chart_plans.values())}
                chart_plans[current.plan.code] = _without_filters(current.plan, taken)
            chart = chart_plans[current.plan.code]
            zone, period, (since, until) = current.customer.zone, current.period, u.window
            today = min(at.astimezone(zone).date(), period.end_date)
            days = [period.start_date + timedelta(days=k) for k in range((today - period.start_date).days + 1)]
            days_of.append(days)
            # Each day's window is clipped to the subscription's usage window: the days before it
            # started (or after it ended) are asked nothing and show none.
            for k, day in enumerate(days):
                start = max(local_midnight_utc(day, zone), since)
                end = min(local_midnight_utc(day + _ONE_DAY, zone), until)
                if start < end:
                    windows.append(UsageWindow(f"{u.external_subscription_id}\x00d{k}", u.external_subscription_id,
                                               chart.code, start, end))
        query = UsageQuery(metrics, [*plans.values(), *chart_plans.values()])
        raw = read_usage(self._warehouse, query, windows)
        if raw.unbillable:
            window_id, reason = next(iter(raw.unbillable.items()))
            raise Unbillable(reason, raw.failed[window_id])
        if raw.failed:
            raise Unavailable()
        pages = []
        for u, days in zip(usages, days_of, strict=True):
            current = u.rated[-1]
            projected: list[Fee] = []
            elapsed = active = timedelta(0)
            for i, r in enumerate(u.rated):
                factor, e, a = _scale(r.subscription, r.period, at)
                elapsed, active = elapsed + e, active + a
                usage = {key: _projected(cu, metrics.get(_metric_code(r.plan, key[0]) or ""), factor)
                         for key, cu in raw[f"{u.external_subscription_id}\x00{i}"].items()}
                projected += rate_subscription(r.subscription, r.plan, r.customer, r.period, usage, metrics=metrics).fees
            per_day = [raw.get(f"{u.external_subscription_id}\x00d{k}", {}) for k in range(len(days))]
            daily = _daily(chart_plans[current.plan.code], metrics, days, per_day, current.customer.zone, at)
            seats = tuple(SeatCount(d.label, int(d.points[-1][1]) if d.points else 0) for d in daily if _is_seats(d.metric))
            pages.append(SubscriptionPage(u, current.plan, tuple(projected), elapsed, active, daily, seats))
        return pages

    def _customer(self, external_id: str) -> Customer:
        customer = self._catalog.get_customer(external_id)
        if customer is None:
            raise NotFound("customer")
        return customer


# -- the chart's query and the projection --------------------------------------------------------


def _without_filters(plan: Plan, taken: set[str]) -> Plan:
    """The plan with every charge's filters dropped, under a code no plan of the query uses
    (the same query carries the real plans)."""
    code = f"{plan.code}~chart"
    while code in taken:
        code += "~"
    charges = tuple(c.model_copy(update={"filters": ()}) for c in plan.charges)
    return plan.model_copy(update={"code": code, "charges": charges})


def _metric_code(plan: Plan, charge_ref: str) -> str | None:
    return next((c.billable_metric_code for c in plan.charges if c.ref == charge_ref), None)


def _is_seats(metric: BillableMetric) -> bool:
    return metric.recurring and metric.aggregation_type == "unique_count"


def _daily(chart: Plan, metrics: dict[str, BillableMetric], days: list[date], per_day: list[dict], zone,
           at: datetime) -> tuple[DailySeries, ...]:
    """Each charge's units per day (its filters dropped); seats: those active at the day's end
    (today: now)."""
    out = []
    for charge in chart.charges:
        metric = metrics[charge.billable_metric_code or ""]
        usage = [day_usage.get((charge.ref, None)) for day_usage in per_day]
        if _is_seats(metric):
            ends = [min(local_midnight_utc(d + _ONE_DAY, zone), at) for d in days]
            points = [Decimal(_active_seats(cu, end)) for cu, end in zip(usage, ends, strict=True)]
        else:
            points = [cu.units if cu is not None else Decimal(0) for cu in usage]
        label = charge.invoice_display_name or metric.name
        out.append(DailySeries(charge.ref, label, metric, tuple(zip(days, points, strict=True))))
    return tuple(out)


def _active_seats(usage: ChargeUsage | None, at: datetime) -> int:
    """Seats whose last add/remove up to `at` is an add."""
    active: dict[str, bool] = {}
    for event in sorted((usage.seat_events or ()) if usage else (), key=lambda e: e.timestamp):
        if event.timestamp <= at:
            active[event.value] = event.operation_type == "add"
    return sum(active.values())


def _scale(subscription: Subscription, period: Period, at: datetime) -> tuple[Decimal, timedelta, timedelta]:
    """(the projection's factor, time elapsed, active time) of the record's part of the period."""
    start, end = charges_window(period, subscription)
    if end <= start:
        return Decimal(1), timedelta(0), timedelta(0)
    elapsed = min(max(at, start), end) - start
    if elapsed <= timedelta(0) or at >= end:
        return Decimal(1), elapsed, end - start
    return Decimal(to_us(end) - to_us(start)) / Decimal(to_us(at) - to_us(start)), elapsed, end - start


def _projected(usage: ChargeUsage, metric: BillableMetric | None, factor: Decimal) -> ChargeUsage:
    """The usage at the period's end if it goes on at the rate so far. Only additive metrics
    grow (count, sum); a max, a unique count, a latest value or seats keep the level reached."""
    if metric is None or metric.recurring or metric.aggregation_type not in ("count", "sum") or factor == 1:
        return usage
    if usage.event_values is not None:  # percentage charges: the same events, repeated
        values, n = usage.event_values, len(usage.event_values)
        target = int((n * factor).to_integral_value(ROUND_HALF_UP)) if n else 0
        repeated = tuple(values[i % n] for i in range(target))
        return usage._replace(event_values=repeated, units=sum(repeated, Decimal(0)), events_count=target)
    events = usage.events_count
    if events is not None:
        events = int((events * factor).to_integral_value(ROUND_HALF_UP))
    return usage._replace(units=usage.units * factor, events_count=events)

