"""The customer's usage page as HTML: rendered on the server, small, accessible, no external loads.

Everything a customer can see is escaped here (`_e`); the page has no inline script or style
(its Content-Security-Policy allows only the function's own /portal/static/ files), and the
chart is inline SVG with a `<title>` per day. The part that changes (`live_fragment`) is also
what the page's script swaps in on each refresh, so the refreshed numbers are rendered by the
same code as the first ones.
"""

from __future__ import annotations

import hashlib
import html
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from meterline.core.invoices import Invoice
from meterline.core.money import from_minor_units
from meterline.core.pricing.fee import Fee
from meterline.entrypoints.formatting import format_money, format_units
from meterline.services.portal import DailySeries, PortalPage, SubscriptionPage

# Each state as a customer reads it.
_INVOICE_STATUS = {
    "finalized": "Open",
    "paid": "Paid",
    "payment_failed": "Payment failed",
    "voided": "Voided",
    "draft": "Draft",
}
_CHART_WIDTH_PER_DAY = 10
_CHART_HEIGHT = 100


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _day(d: date) -> str:
    return f"{d:%b} {d.day}"


def _long_day(d: date) -> str:
    return f"{d:%b} {d.day}, {d.year}"


def _row(kind: str, label: str, units: Decimal, cents: int, projected: int | None, currency: str, attrs: str) -> str:
    projected_text = format_money(projected, currency) if projected is not None else "–"
    return (
        f'<tr class="{kind}" {attrs}><th scope="row">{_e(label)}</th>'
        f'<td class="num" data-k="units">{_e(format_units(units))}</td>'
        f'<td class="num" data-k="amount" data-cents="{cents}">{_e(format_money(cents, currency))}</td>'
        f'<td class="num" data-k="projected">{_e(projected_text)}</td></tr>'
    )


def _charge_rows(sub: SubscriptionPage, currency: str) -> list[str]:
    """One row per charge (its totals, as the API's charges_usage) and, below a filtered
    charge, one per filter; the events that match none of its filters are "other"."""
    by_charge: dict[tuple[str | None, str | None], list[Fee]] = {}
    for fee in sub.usage.charge_fees:
        by_charge.setdefault((fee.ref.plan_code, fee.ref.charge_ref), []).append(fee)
    rows = []
    for (_, ref), fees in by_charge.items():
        projected = [sub.projected_fee(f) for f in fees]
        projected_cents = None if None in projected else sum(p.amount_cents for p in projected if p)
        filtered = any(f.ref.filter_key for f in fees)
        name = next((f.display_name for f in fees if not f.ref.filter_key), None) or ref or ""
        rows.append(_row("charge", name, sum((f.units for f in fees), Decimal(0)), sum(f.amount_cents for f in fees),
                         projected_cents, currency, f'data-charge="{_e(ref)}" data-filter=""'))
        if not filtered:
            continue
        for fee, p in zip(fees, projected, strict=True):
            label = fee.display_name if fee.ref.filter_key else f"{name}: other"
            rows.append(_row("filter", label, fee.units, fee.amount_cents, p.amount_cents if p else None, currency,
                             f'data-charge="{_e(ref)}" data-filter="{_e(fee.ref.filter_key or "-")}"'))
    return rows


def _other_rows(sub: SubscriptionPage, currency: str) -> list[str]:
    """The subscription fee and minimum-commitment top-ups: on the invoice, not usage."""
    rows = []
    for fee in sub.usage.fees:
        if fee.ref.kind == "charge":
            continue
        projected = sub.projected_fee(fee)
        label = "Subscription fee" if fee.ref.kind == "subscription" else fee.display_name
        if fee.ref.kind == "subscription" and fee.from_datetime >= sub.usage.period.end_utc:
            label += " (next period, in advance)"
        rows.append(
            f'<tr class="other" data-kind="{_e(fee.ref.kind)}"><th scope="row">{_e(label)}</th><td class="num"></td>'
            f'<td class="num" data-cents="{fee.amount_cents}">{_e(format_money(fee.amount_cents, currency))}</td>'
            f'<td class="num">{_e(format_money(projected.amount_cents, currency) if projected else "–")}</td></tr>'
        )
    return rows


def _chart(series: DailySeries, index: str, period_days: int) -> str:
    """Bars for the days so far, on an axis spanning the whole period (the rest is to come)."""
    peak = max((units for _, units in series.points), default=Decimal(0))
    width = period_days * _CHART_WIDTH_PER_DAY
    bars = []
    for k, (day, units) in enumerate(series.points):
        height = 0.0 if peak <= 0 else float(units / peak) * (_CHART_HEIGHT - 5)
        x = k * _CHART_WIDTH_PER_DAY + 1
        bars.append(
            f'<rect class="bar" data-day="{day.isoformat()}" data-units="{_e(format(units.normalize(), "f"))}" '
            f'x="{x}" y="{_CHART_HEIGHT - height:.2f}" width="{_CHART_WIDTH_PER_DAY - 2}" height="{height:.2f}">'
            f"<title>{_e(_day(day))}: {_e(format_units(units))}</title></rect>"
        )
    title_id = f"chart-{index}-t"
    first = series.points[0][0] if series.points else None
    metric = series.metric
    if metric.recurring and metric.aggregation_type == "unique_count":
        summary = "seats active each day"
    elif metric.aggregation_type in ("count", "sum"):
        summary = f"{format_units(sum((u for _, u in series.points), Decimal(0)))} so far"
    else:
        summary = f"{metric.aggregation_type.replace('_', ' ')} of each day"
    return (
        f'<figure class="chart" data-charge="{_e(series.charge_ref)}">'
        f'<figcaption id="{title_id}">{_e(series.label)} per day <span class="muted">({_e(summary)})</span></figcaption>'
        f'<svg role="img" aria-labelledby="{title_id}" viewBox="0 0 {width} {_CHART_HEIGHT}" preserveAspectRatio="none" '
        f'width="100%" height="120" focusable="false">'
        f'<line class="axis" x1="0" y1="{_CHART_HEIGHT}" x2="{width}" y2="{_CHART_HEIGHT}"></line>'
        f"{''.join(bars)}</svg>"
        f'<div class="chart-axis"><span>{_e(_day(first)) if first else ""}</span>'
        f"<span>max {_e(format_units(peak))}</span></div></figure>"
    )


def _subscription(sub: SubscriptionPage, index: int) -> str:
    usage = sub.usage
    currency = usage.currency
    period = usage.period
    heading = f"sub-{index}-h"
    elapsed_days = sub.elapsed.total_seconds() / 86_400
    active_days = sub.active.total_seconds() / 86_400
    day_of = min(period.days, (usage.at.astimezone(usage.customer.zone).date() - period.start_date).days + 1)
    seats = (
        "".join(f'<div class="card"><dt>{_e(s.label)}</dt><dd data-k="seats">{s.active}</dd>'
                f"<small>active now</small></div>" for s in sub.seats)
        if sub.seats else ""
    )
    base = sum(f.amount_cents for f in usage.fees if f.ref.kind != "charge")
    charts = "".join(_chart(s, f"{index}-{k}", period.days) for k, s in enumerate(sub.daily))
    rows = "".join(_charge_rows(sub, currency)) or '<tr><td colspan="4">No usage-based charges.</td></tr>'
    rows += "".join(_other_rows(sub, currency))
    return (
        f'<section class="sub" aria-labelledby="{heading}" data-subscription="{_e(usage.external_subscription_id)}">'
        f'<h2 id="{heading}">{_e(sub.plan.name)} <span class="muted">· {_e(usage.external_subscription_id)}</span></h2>'
        f'<p class="period">Billing period {_e(_day(period.start_date))} – {_e(_long_day(period.end_date))} '
        f"· day {day_of} of {period.days}</p>"
        '<dl class="cards">'
        f'<div class="card"><dt>Usage so far</dt><dd data-k="usage" data-cents="{sub.usage_cents}">'
        f"{_e(format_money(sub.usage_cents, currency))}</dd></div>"
        f'<div class="card"><dt>Invoice if the period ended now</dt><dd data-k="invoice" data-cents="{sub.invoice_cents}">'
        f"{_e(format_money(sub.invoice_cents, currency))}</dd>"
        f"<small>usage plus {_e(format_money(base, currency))} of fees</small></div>"
        f'<div class="card projection"><dt>Projection for the full period <span class="tag">estimate</span></dt>'
        f'<dd data-k="projected" data-cents="{sub.projected_cents}">{_e(format_money(sub.projected_cents, currency))}</dd>'
        f"<small>assumes usage goes on at the rate of its first {elapsed_days:.1f} of {active_days:.0f} days</small></div>"
        f"{seats}</dl>"
        '<div class="table-wrap"><table class="usage">'
        "<caption>Usage and cost so far, by metric and filter</caption>"
        '<thead><tr><th scope="col">Item</th><th scope="col" class="num">Units</th>'
        '<th scope="col" class="num">Cost so far</th><th scope="col" class="num">Projected</th></tr></thead>'
        f"<tbody>{rows}</tbody>"
        f'<tfoot><tr><th scope="row">Total</th><td></td><td class="num" data-k="total">'
        f"{_e(format_money(sub.invoice_cents, currency))}</td>"
        f'<td class="num">{_e(format_money(sub.projected_cents, currency))}</td></tr></tfoot>'
        "</table></div>"
        f'<h3>Daily usage</h3>{charts or "<p>No usage-based charges.</p>"}'
        "</section>"
    )


def _invoice_row(invoice: Invoice) -> str:
    link = ""
    url = invoice.hosted_invoice_url
    # Only a web link: never a javascript: or data: URL from a provider's field.
    if url and url.startswith(("https://", "http://")):
        link = (f'<a href="{_e(url)}" rel="noopener noreferrer" target="_blank">View'
                f'<span class="visually-hidden"> invoice {_e(invoice.number or "")}</span></a>')
    period = f"{_day(invoice.period_start)} – {_long_day(invoice.period_end)}"
    status = _INVOICE_STATUS.get(invoice.status, invoice.status)
    return (
        f'<tr data-invoice="{_e(invoice.id)}"><th scope="row">{_e(invoice.number or "Draft")}</th>'
        f"<td>{_e(period)}</td><td><span class=\"status status-{_e(invoice.status)}\">{_e(status)}</span></td>"
        f'<td class="num" data-cents="{invoice.amount_cents}">{_e(format_money(invoice.amount_cents, invoice.currency))}</td>'
        f"<td>{link}</td></tr>"
    )


def live_fragment(page: PortalPage) -> str:
    """What the refresh replaces: the subscriptions, the credits and the invoices."""
    subs = "".join(_subscription(s, i) for i, s in enumerate(page.subscriptions))
    if not subs:
        subs = '<section class="sub"><h2>No active subscription</h2><p>There is no usage to show.</p></section>'
    credits = ("not available yet" if page.credits_cents is None
               else format_money(page.credits_cents, page.subscriptions[0].usage.currency if page.subscriptions else "USD"))
    rows = "".join(_invoice_row(i) for i in page.invoices)
    invoices = (
        '<div class="table-wrap"><table class="invoices"><caption>Past invoices, newest first</caption>'
        '<thead><tr><th scope="col">Number</th><th scope="col">Period</th><th scope="col">Status</th>'
        '<th scope="col" class="num">Amount</th><th scope="col"><span class="visually-hidden">Link</span></th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>" if rows else "<p>No invoices yet.</p>"
    )
    return (
        f"{subs}"
        '<section id="credits" aria-labelledby="credits-h"><h2 id="credits-h">Prepaid credits</h2>'
        f'<p>Balance: <span data-k="credits">{_e(credits)}</span></p></section>'
        f'<section id="invoices" aria-labelledby="invoices-h"><h2 id="invoices-h">Invoices</h2>{invoices}</section>'
    )


def fragment_version(fragment: str) -> str:
    return hashlib.sha256(fragment.encode()).hexdigest()[:16]


def updated_label(at: datetime) -> str:
    return f"Updated {at:%H:%M:%S} UTC"


def render_page(page: PortalPage, *, root: str, usage_url: str, static: dict[str, str], refresh_ms: int) -> str:
    """The whole page. `root` prefixes the portal's own paths; `static` maps a file to its URL."""
    fragment = live_fragment(page)
    name = page.customer.name or page.customer.external_id
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>Usage · {_e(name)}</title>"
        f'<link rel="stylesheet" href="{_e(static["portal.css"])}">'
        f'<script src="{_e(static["portal.js"])}" defer></script></head>'
        '<body><a class="skip" href="#live">Skip to usage</a>'
        f'<header><h1>{_e(name)}</h1><p class="muted">Live usage and invoices</p></header>'
        f'<main id="portal" data-usage-url="{_e(usage_url)}" data-refresh-ms="{refresh_ms}">'
        f'<p id="status" role="status" aria-live="polite">{_e(updated_label(page.at))}</p>'
        f'<div id="live" data-version="{fragment_version(fragment)}">{fragment}</div>'
        "</main></body></html>"
    )


def error_page(status: int, title: str, message: str, static: dict[str, str]) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="{_e(static["portal.css"])}"></head>'
        f'<body><main id="portal" data-status="{status}"><h1>{_e(title)}</h1><p>{_e(message)}</p></main></body></html>'
    )


def page_json(page: PortalPage) -> dict[str, Any]:
    """The page's data for its refresh: the structured figures (minor units and as shown) and
    the fragment that the script swaps in."""
    fragment = live_fragment(page)
    subs = []
    for s in page.subscriptions:
        usage, currency = s.usage, s.usage.currency
        subs.append({
            "external_subscription_id": usage.external_subscription_id,
            "plan_code": s.plan.code,
            "currency": currency,
            "from_datetime": usage.window[0].isoformat(),
            "to_datetime": usage.window[1].isoformat(),
            "usage_amount_cents": s.usage_cents,
            "invoice_amount_cents": s.invoice_cents,
            "projected_amount_cents": s.projected_cents,
            "lines": [
                {
                    "charge": f.ref.charge_ref, "filter": f.ref.filter_key, "label": f.display_name,
                    "units": format(f.units.normalize(), "f"), "amount_cents": f.amount_cents,
                    "amount": format_money(f.amount_cents, currency),
                    "projected_amount_cents": p.amount_cents if (p := s.projected_fee(f)) else None,
                }
                for f in usage.charge_fees
            ],
            "seats": [{"label": seat.label, "active": seat.active} for seat in s.seats],
            "daily": [
                {"charge": d.charge_ref, "label": d.label,
                 "points": [{"day": day.isoformat(), "units": format(u.normalize(), "f")} for day, u in d.points]}
                for d in s.daily
            ],
        })
    return {
        "customer": {"external_id": page.customer.external_id, "name": page.customer.name},
        "at": page.at.isoformat(),
        "updated_label": updated_label(page.at),
        "subscriptions": subs,
        "invoices": [
            {"lago_id": i.id, "number": i.number, "status": i.status, "currency": i.currency,
             "amount_cents": i.amount_cents, "amount": str(from_minor_units(i.amount_cents, i.currency)),
             "hosted_invoice_url": i.hosted_invoice_url}
            for i in page.invoices
        ],
        "credits_amount_cents": page.credits_cents,
        "version": fragment_version(fragment),
        "html": fragment,
    }
