"""Usage counts from a subscription record's start to its end, not over its whole billing period:
Lago's charges_from_datetime / charges_to_datetime, in money.

Each test is a billing run (or current usage) on the embedded adapters with a small catalog of
its own, so that every amount below can be checked by hand: tokens at $0.01 each (sum_agg),
seats at $30 a month (a recurring unique_count, prorated), and a monthly base fee in arrears
prorated by days (Lago: the start date is billed in full, an upgrade's switch day on the new plan).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from meterline.core.clock import now_us, to_us
from meterline.core.events import parse_batch_body
from meterline.core.messages import encode_message
from meterline.entrypoints import lago
from meterline.local.app import create_app
from meterline.services.admin import AdminService
from meterline.services.auth import create_api_key
from meterline.services.billing import BillingService
from meterline.services.usage import UsageService
from tests.support import embedded_runtime

HOUR = timedelta(hours=1)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
TOKYO = ZoneInfo("Asia/Tokyo")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


class World:
    """An embedded runtime with two metrics and the plans a test asks for."""

    def __init__(self, tmp_path):
        self.runtime = embedded_runtime(tmp_path)
        self.catalog = self.runtime.adapters.catalog
        admin = self.admin_at(OCT)
        admin.create_billable_metric({"name": "Tokens", "code": "tokens", "aggregation_type": "sum_agg",
                                      "field_name": "tokens"})
        admin.create_billable_metric({"name": "Seats", "code": "seats", "aggregation_type": "unique_count_agg",
                                      "field_name": "user_id", "recurring": True})
        self._sent = 0

    def admin_at(self, at: datetime) -> AdminService:
        return AdminService(self.catalog, clock=lambda: at)

    def plan(self, code: str, amount_cents: int, token_price: str = "0.01", seat_price: str = "30",
             currency: str = "USD") -> None:
        self.admin_at(OCT).create_plan({
            "name": code, "code": code, "interval": "monthly", "amount_cents": amount_cents, "amount_currency": currency,
            "charges": [
                {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": token_price}},
                {"billable_metric_code": "seats", "charge_model": "standard", "prorated": True,
                 "properties": {"amount": seat_price}},
            ]})

    def customer(self, external_id: str, timezone: str = "UTC", currency: str = "USD") -> None:
        self.admin_at(OCT).upsert_customer({"external_id": external_id, "currency": currency, "timezone": timezone})

    def subscribe(self, external_id: str, customer: str, plan: str, at: datetime) -> None:
        """A subscription that starts at `at` (created then: it is active from that instant)."""
        self.admin_at(at).create_subscription({"external_id": external_id, "external_customer_id": customer,
                                               "plan_code": plan, "subscription_at": at.isoformat()})

    def tokens(self, subscription: str, at: datetime, value: int) -> None:
        self._post([{"transaction_id": f"t{self._next()}", "external_subscription_id": subscription, "code": "tokens",
                     "timestamp": at.timestamp(), "properties": {"tokens": value}}])

    def seat(self, subscription: str, at: datetime, user: str, op: str = "add") -> None:
        self._post([{"transaction_id": f"s{self._next()}", "external_subscription_id": subscription, "code": "seats",
                     "timestamp": at.timestamp(), "properties": {"user_id": user, "operation_type": op}}])

    def _next(self) -> int:
        self._sent += 1
        return self._sent

    def _post(self, events: list[dict]) -> None:
        batch = parse_batch_body(orjson.dumps({"events": events}), now_us())
        self.runtime.process.service.handle_message(encode_message(batch))

    def usage(self) -> UsageService:
        return UsageService(self.catalog, self.runtime.adapters.warehouse)

    def billing(self, usage: UsageService | None = None, **kwargs) -> BillingService:
        from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore

        adapters = self.runtime.adapters
        return BillingService(self.catalog, usage or self.usage(), SqliteInvoiceStore(adapters.db), adapters.warehouse,
                              **kwargs)

    def invoices(self, subscription: str) -> list:
        from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore

        found = SqliteInvoiceStore(self.runtime.adapters.db).list()[0]
        return sorted((i for i in found if i.subscription_external_id == subscription), key=lambda i: i.period_start)

    def api_invoice(self, subscription: str, issuing_date: str | None = None) -> dict:
        """The subscription's invoice (issued on `issuing_date`, if it has more than one) as
        the invoices API renders it."""
        key = create_api_key(self.runtime.adapters.api_keys, f"k{self._next()}", now_us())
        answer = create_app(self.runtime).test_client().get(
            f"/api/v1/invoices?external_subscription_id={subscription}", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.data
        (invoice,) = [i for i in orjson.loads(answer.data)["invoices"]
                      if any(s["external_id"] == subscription for s in i["subscriptions"])
                      and issuing_date in (None, i["issuing_date"])]
        return invoice


def lines(invoice) -> dict[str, int]:
    """Cents per line: the base fee by plan, each charge by plan and metric."""
    out: dict[str, int] = {}
    for line in invoice.lines:
        key = f"{line.plan_code}:{line.charge_ref or line.kind}"
        out[key] = out.get(key, 0) + line.amount_cents
    return out


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


# -- a start inside the period -----------------------------------------------------------------


def test_a_subscription_started_mid_period_is_billed_only_the_usage_since_its_start(world):
    # The case: a start on October 20 with 1,000 tokens on October 5 and 2,000 on
    # October 25 is billed 2,000, not 3,000. A start at 15:00 also leaves out the same day's
    # morning (usage is counted from the start instant, Lago's charges_from_datetime), while
    # the base fee bills the start date in full.
    world.plan("api", 6200)
    world.customer("acme")
    start = utc(2026, 10, 20, 15)
    world.subscribe("sub", "acme", "api", start)
    world.tokens("sub", utc(2026, 10, 5), 1_000)
    world.tokens("sub", utc(2026, 10, 20, 10), 500)  # that morning, before the start
    world.tokens("sub", utc(2026, 10, 25), 2_000)
    world.billing().run(NOV + 2 * HOUR)

    (invoice,) = world.invoices("sub")
    assert invoice.status == "finalized"
    # base: Oct 20-31, 12 of 31 days x $62.00 = $24.00; tokens: 2,000 x $0.01 = $20.00
    assert lines(invoice) == {"api:subscription": 2400, "api:tokens": 2000, "api:seats": 0}
    assert invoice.amount_cents == 4400
    tokens_line = next(line for line in invoice.lines if line.charge_ref == "tokens")
    assert tokens_line.units == 2000 and tokens_line.from_datetime == start

    rendered = world.api_invoice("sub")
    (period,) = rendered["billing_periods"]
    assert (period["charges_from_datetime"], period["charges_to_datetime"]) == (
        "2026-10-20T15:00:00Z", "2026-10-31T23:59:59Z")
    fee = next(f for f in rendered["fees"] if f["item"]["code"] == "tokens")
    assert (fee["units"], fee["amount_cents"], fee["from_date"]) == ("2000", 2000, "2026-10-20T15:00:00Z")


def test_a_late_event_timed_before_the_start_is_neither_billed_nor_rerated(world):
    world.plan("api", 6200)
    world.customer("acme")
    world.subscribe("sub", "acme", "api", utc(2026, 10, 20))
    world.tokens("sub", utc(2026, 10, 25), 2_000)
    world.billing(arrival_margin_us=0).run(NOV + 2 * HOUR)  # October finalized
    (october,) = world.invoices("sub")
    assert october.status == "finalized" and october.amount_cents == 2400 + 2000  # 12/31 x $62.00, and 2,000 tokens x $0.01

    rated: list = []

    class Recording(UsageService):
        def rate(self, items, *args):
            rated.extend(period.start_date for _, period in items)
            return super().rate(items, *args)

    def run(as_of: datetime) -> list:
        rated.clear()
        world.billing(Recording(world.catalog, world.runtime.adapters.warehouse), arrival_margin_us=0).run(as_of)
        return sorted(set(rated))

    # Arrives after October's invoice, timed October 5: before the subscription existed.
    world.tokens("sub", utc(2026, 10, 5), 1_000)
    assert run(NOV + 3 * HOUR) == []  # not October's usage: no re-rating
    assert run(DEC + 2 * HOUR) == [NOV.date()]  # November's own invoice only
    october, november = world.invoices("sub")
    assert not [line for line in november.lines if line.kind == "late_usage"]
    assert november.amount_cents == 6200  # November's base fee, no usage

    # One timed after the start does re-rate October, and is billed as its late usage.
    world.tokens("sub", utc(2026, 10, 28), 300)
    assert OCT.date() in run(DEC + 3 * HOUR)


# -- an end inside the period --------------------------------------------------------------------


def test_a_terminated_subscription_is_billed_only_the_usage_before_its_termination(world):
    world.plan("api", 6200)
    world.customer("acme")
    world.subscribe("sub", "acme", "api", OCT)
    ended = utc(2026, 11, 15, 12)
    world.admin_at(ended).terminate_subscription("sub")
    world.tokens("sub", utc(2026, 11, 10), 1_000)
    world.tokens("sub", ended - HOUR, 100)
    world.tokens("sub", ended + HOUR, 2_000)  # after the termination
    world.tokens("sub", utc(2026, 11, 20), 4_000)
    world.billing().run(ended + 2 * HOUR)

    october, november = world.invoices("sub")
    assert november.status == "finalized"
    # base: Nov 1-15, 15 of 30 days x $62.00 = $31.00; tokens: 1,100 x $0.01 = $11.00
    assert lines(november) == {"api:subscription": 3100, "api:tokens": 1100, "api:seats": 0}
    tokens_line = next(line for line in november.lines if line.charge_ref == "tokens")
    assert (tokens_line.from_datetime, tokens_line.to_datetime) == (NOV, ended)

    (period,) = world.api_invoice("sub", "2026-11-15")["billing_periods"]
    assert (period["charges_from_datetime"], period["charges_to_datetime"]) == (
        "2026-11-01T00:00:00Z", "2026-11-15T12:00:00Z")
    assert period["invoicing_reason"] == "subscription_terminating"


# -- an upgrade inside the period: two records, each its own window ------------------------------


def test_an_upgrade_mid_period_bills_each_record_the_usage_of_its_own_part(world):
    world.plan("api", 6200, token_price="0.01")
    world.plan("api_plus", 9300, token_price="0.005")
    world.customer("acme")
    world.subscribe("sub", "acme", "api", OCT)
    switch = utc(2026, 11, 11, 10)
    world.admin_at(switch).create_subscription({"external_id": "sub", "external_customer_id": "acme",
                                                "plan_code": "api_plus"})
    world.tokens("sub", utc(2026, 11, 5), 1_000)
    world.tokens("sub", switch - HOUR, 200)  # the switch day, before it: the old plan's
    world.tokens("sub", switch + HOUR, 400)  # the switch day, after it: the new plan's
    world.tokens("sub", utc(2026, 11, 20), 3_000)
    world.billing().run(DEC + 2 * HOUR)

    november = next(i for i in world.invoices("sub") if i.period_start == NOV.date())
    assert lines(november) == {
        "api:subscription": 2067,  # Nov 1-10 (the switch day is the new plan's): 10/30 x $62.00 = $20.666.. -> $20.67
        "api:tokens": 1200,  # 1,200 tokens before the switch x $0.01
        "api:seats": 0,
        "api_plus:subscription": 6200,  # Nov 11-30: 20/30 x $93.00 = $62.00
        "api_plus:tokens": 1700,  # 3,400 tokens after the switch x $0.005
        "api_plus:seats": 0,
    }
    assert november.amount_cents == 11167
    windows = {line.plan_code: (line.from_datetime, line.to_datetime) for line in november.lines
               if line.charge_ref == "tokens"}
    assert windows == {"api": (NOV, switch), "api_plus": (switch, DEC)}

    spans = {(p["charges_from_datetime"], p["charges_to_datetime"])
             for p in world.api_invoice("sub", "2026-12-01")["billing_periods"]}
    assert spans == {("2026-11-01T00:00:00Z", "2026-11-11T10:00:00Z"),
                     ("2026-11-11T10:00:00Z", "2026-11-30T23:59:59Z")}


def test_lago_s_upgrade_example_with_usage_on_both_sides_of_the_switch(world):
    # Lago's guide (subscriptions, upgrades and downgrades, paid in arrears): Plan A at
    # EUR 100/month from January 1, upgraded to Plan B at EUR 200/month on January 15: Plan A
    # bills 14 days, 14/31 x EUR 100 = EUR 45.16, and Plan B the other 17, 17/31 x EUR 200 =
    # EUR 109.68. (Lago invoices Plan A's part at the upgrade; Meterline puts both records on
    # the period's invoice: docs/lago-compatibility.md.) Each record's charges count its own part.
    world.plan("plan_a", 10_000, token_price="0.10", currency="EUR")
    world.plan("plan_b", 20_000, token_price="0.05", currency="EUR")
    world.customer("eu", currency="EUR")
    world.subscribe("sub", "eu", "plan_a", utc(2027, 1, 1))
    switch = utc(2027, 1, 15, 9, 30)
    world.admin_at(switch).create_subscription({"external_id": "sub", "external_customer_id": "eu",
                                                "plan_code": "plan_b"})
    world.tokens("sub", utc(2027, 1, 3), 100)
    world.tokens("sub", switch - timedelta(seconds=1), 10)
    world.tokens("sub", switch, 40)  # at the switch instant: the new record's
    world.tokens("sub", utc(2027, 1, 31, 23, 59), 160)
    world.billing().run(utc(2027, 2, 1, 2))

    (january,) = world.invoices("sub")
    assert lines(january) == {
        "plan_a:subscription": 4516,  # EUR 45.16, Lago's figure
        "plan_a:tokens": 1100,  # 110 tokens x EUR 0.10
        "plan_a:seats": 0,
        "plan_b:subscription": 10968,  # EUR 109.68, Lago's figure
        "plan_b:tokens": 1000,  # 200 tokens x EUR 0.05
        "plan_b:seats": 0,
    }


# -- a customer time zone --------------------------------------------------------------------------


def test_periods_and_starts_in_the_customer_s_time_zone(world):
    # Asia/Tokyo (UTC+9): November is [Oct 31 15:00Z, Nov 30 15:00Z). One subscription starts at
    # local midnight on November 10, one at local noon the same day.
    world.plan("api", 6000)
    world.customer("tokyo", "Asia/Tokyo")
    midnight = datetime(2026, 11, 10, tzinfo=TOKYO)
    noon = datetime(2026, 11, 10, 12, tzinfo=TOKYO)
    world.subscribe("sub_midnight", "tokyo", "api", midnight)
    world.subscribe("sub_noon", "tokyo", "api", noon)
    world.tokens("sub_midnight", midnight - HOUR, 1_000)  # Nov 9, 23:00 local: before its start
    world.tokens("sub_midnight", midnight + HOUR, 2_000)
    world.tokens("sub_midnight", datetime(2026, 12, 1, 1, tzinfo=TOKYO), 500)  # December, locally
    world.tokens("sub_noon", noon - HOUR, 700)  # its start date, before its start
    world.tokens("sub_noon", noon + HOUR, 300)
    world.billing().run(datetime(2026, 12, 1, 2, tzinfo=TOKYO))  # Nov 30 17:00Z: after the local period's end

    (at_midnight,) = world.invoices("sub_midnight")
    (at_noon,) = world.invoices("sub_noon")
    # Both bill Nov 10-30, 21 of 30 local days x $60.00 = $42.00; the start date counts in full.
    assert lines(at_midnight) == {"api:subscription": 4200, "api:tokens": 2000, "api:seats": 0}
    assert lines(at_noon) == {"api:subscription": 4200, "api:tokens": 300, "api:seats": 0}
    assert (at_midnight.from_utc, at_midnight.to_utc) == (utc(2026, 10, 31, 15), utc(2026, 11, 30, 15))
    (period,) = world.api_invoice("sub_noon")["billing_periods"]
    assert (period["charges_from_datetime"], period["charges_to_datetime"]) == (
        "2026-11-10T03:00:00Z", "2026-11-30T14:59:59Z")


# -- recurring metrics ---------------------------------------------------------------------------


def test_seats_added_before_the_start_count_from_the_start_as_lago_s_do(world):
    # Lago scopes a recurring metric's events by external subscription id with no lower bound,
    # and counts a seat added before charges_from_datetime from that instant (its unique_count
    # query clamps each add to from_datetime). So a seat added before the subscription started
    # pays for the subscription's days, not for the days before.
    world.plan("seats", 0)
    world.customer("acme")
    world.subscribe("sub", "acme", "seats", utc(2026, 11, 16))
    world.seat("sub", utc(2026, 11, 1), "alice")  # before the start
    world.seat("sub", utc(2026, 11, 20), "bob")
    world.billing().run(DEC + 2 * HOUR)

    (november,) = world.invoices("sub")
    # alice Nov 16-30 (15 days) + bob Nov 20-30 (11 days) = 26 seat-days / 30 x $30.00 = $26.00
    assert lines(november) == {"seats:subscription": 0, "seats:tokens": 0, "seats:seats": 2600}


# -- current usage ---------------------------------------------------------------------------------


def test_current_usage_of_a_subscription_started_two_hours_ago_counts_only_its_own_events(world):
    world.plan("api", 6200)
    world.customer("acme")
    now = utc(2026, 11, 14, 12)
    start = now - 2 * HOUR
    world.subscribe("sub", "acme", "api", start)
    world.tokens("sub", utc(2026, 11, 1, 9), 5_000)  # the 1st of the month: before it existed
    world.tokens("sub", start - timedelta(minutes=1), 700)
    world.tokens("sub", start + HOUR, 250)

    portal = world.runtime.portal.service
    portal.clock = lambda: now
    usage = portal.current_usage("acme", "sub")
    assert usage.window == (start, DEC)
    body = lago.current_usage(usage)
    assert body["from_datetime"] == "2026-11-14T10:00:00Z"
    assert body["to_datetime"] == "2026-11-30T23:59:59Z"
    (tokens,) = [c for c in body["charges_usage"] if c["billable_metric"]["code"] == "tokens"]
    assert (tokens["units"], tokens["events_count"], tokens["amount_cents"]) == ("250", 1, 250)
    assert body["amount_cents"] == 250

    # The page's daily chart and projection read the same window: nothing before the start.
    (page,) = portal.page("acme").subscriptions
    (chart,) = [s for s in page.daily if s.charge_ref == "tokens"]
    assert [units for _, units in chart.points] == [0] * 13 + [250]  # Nov 1-13 empty, Nov 14: 250
    # 250 tokens in 2 of the subscription's 398 hours in November: 250 x 398 / 2 = 49,750 tokens -> $497.50
    projected = next(f for f in page.projected if f.ref.charge_ref == "tokens")
    assert projected.amount_cents == 49_750


def test_current_usage_and_the_billing_run_read_the_same_window(world):
    world.plan("api", 6200)
    world.customer("acme")
    start = utc(2026, 11, 14, 10)
    world.subscribe("sub", "acme", "api", start)
    world.tokens("sub", utc(2026, 11, 2), 5_000)
    world.tokens("sub", utc(2026, 11, 20), 1_234)
    record = world.catalog.get_subscription_history("sub").records[0]
    (current,) = world.usage().current([record], DEC - timedelta(microseconds=1))
    world.billing().run(DEC + 2 * HOUR)
    (invoice,) = world.invoices("sub")
    assert {f.ref.key: f.amount_cents for f in current.draft.fees} == {line.ref: line.amount_cents for line in invoice.lines}
    assert lines(invoice)["api:tokens"] == 1234
    assert to_us(current.draft.fees[1].from_datetime) == to_us(start)
