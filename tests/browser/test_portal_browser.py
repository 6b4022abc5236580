"""The customer's usage page in real headless Chromium, served by `meterline serve`'s app and
its queue worker on a loopback port, with events posted through the ingest API.

The page's figures are compared with the current-usage API's; the chart is counted; a new
event must show up without a reload; the page must fit a 375 px phone; screenshots at desktop
and phone width are saved under test-artifacts/portal/.
"""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import orjson
import pytest

from meterline.entrypoints.formatting import format_money, format_units
from meterline.local.server import MeterlineServer
from meterline.services import catalog_apply
from tests.browser.artifacts import save_artifact
from tests.support import REPO_ROOT, embedded_runtime, new_key

EXAMPLE = REPO_ROOT / "shared/meterline/local/example_catalog.yaml"


class Stack:
    """`meterline serve`'s app and worker in this process, the example catalog, one customer."""

    def __init__(self, data_dir):
        self.runtime = embedded_runtime(data_dir)
        adapters = self.runtime.adapters
        catalog = catalog_apply.load(EXAMPLE)
        catalog_apply.apply(adapters.catalog, catalog, catalog_apply.plan_changes(adapters.catalog, catalog))
        admin = self.runtime.admin.service
        admin.upsert_customer({"external_id": "acme", "name": "Acme Corp", "currency": "USD", "timezone": "UTC"})
        admin.upsert_customer({"external_id": "globex", "name": "Globex", "currency": "USD", "timezone": "UTC"})
        self.now = datetime.now(UTC)
        self.month = self.now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        admin.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme",
                                   "plan_code": catalog.plans[0].code,
                                   "subscription_at": (self.month - timedelta(days=40)).isoformat()})
        self.key = new_key(self.runtime)
        self.server = MeterlineServer(self.runtime).start()
        self.url = self.server.url

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", method=method, data=orjson.dumps(body) if body else None,
                                         headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())

    def post_events(self, events: list[dict]) -> None:
        self.call("POST", "/api/v1/events/batch", {"events": events})

    def usage(self) -> dict:
        return self.call("GET", "/api/v1/customers/acme/current_usage?external_subscription_id=sub_acme")["customer_usage"]

    def link(self, customer: str = "acme") -> str:
        url = self.call("POST", f"/api/v1/customers/{customer}/portal_url")["customer"]["portal_url"]
        parts = urlsplit(url)
        return f"{self.url}{parts.path}?{parts.query}"

    def wait_counted(self, events: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while sum(c["events_count"] for c in self.usage()["charges_usage"]) < events:
            assert time.monotonic() < deadline, "events were not counted in time"
            time.sleep(0.05)


def at_day(stack: Stack, days_ago: int, hours: int = 0) -> int:
    """A timestamp this month, `days_ago` before now (never before the month's first second)."""
    return int(max(stack.month, stack.now - timedelta(days=days_ago, hours=hours)).timestamp())


def tokens(tx: str, at: int, value: int, model: str, token_type: str | None) -> dict:
    props = {"value": value, "model": model}
    if token_type:
        props["token_type"] = token_type
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "tokens_consumed",
            "timestamp": at, "properties": props}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("portal-browser"))
    month_start = int(stack.month.timestamp())
    events = [
        {"transaction_id": "s1", "external_subscription_id": "sub_acme", "code": "seats",
         "timestamp": month_start - 5 * 86_400, "properties": {"user_id": "alice", "operation_type": "add"}},
        {"transaction_id": "s2", "external_subscription_id": "sub_acme", "code": "seats",
         "timestamp": at_day(stack, 0, 1), "properties": {"user_id": "bob", "operation_type": "add"}},
        tokens("t1", at_day(stack, 3), 3_000_000, "gpt-4o", "input"),
        tokens("t2", at_day(stack, 2), 800_000, "gpt-4o", "output"),
        tokens("t3", at_day(stack, 1), 1_200_000, "claude-sonnet", "input"),
        tokens("t4", at_day(stack, 0, 2), 500_000, "gpt-4o-mini", None),
    ]
    stack.post_events(events)
    stack.wait_counted(len(events) - 2)  # seats add no events_count (they are prorated per seat)
    yield stack
    stack.server.stop()
    stack.runtime.adapters.warehouse.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.console_messages = []
    tab.on("console", lambda message: tab.console_messages.append(message.text))
    yield tab
    context.close()


def cents(tab, selector: str) -> int:
    return int(tab.get_attribute(selector, "data-cents"))


def test_the_page_shows_the_apis_numbers(stack, page):
    response = page.goto(stack.link())
    assert response.status == 200
    api = stack.usage()
    currency = api["currency"]
    section = page.locator("section.sub[data-subscription='sub_acme']")
    assert cents(page, "[data-k=usage]") == api["amount_cents"]
    assert section.locator("[data-k=usage]").inner_text() == format_money(api["amount_cents"], currency)
    for charge in api["charges_usage"]:
        code = charge["billable_metric"]["code"]
        row = section.locator(f"tr.charge[data-charge='{code}']")
        assert row.locator("[data-k=amount]").inner_text() == format_money(charge["amount_cents"], currency)
        assert row.locator("[data-k=units]").inner_text() == format_units(Decimal(charge["units"]))
        for f in charge["filters"]:
            key = ";".join(f"{k}={','.join(v)}" for k, v in sorted(f["values"].items())) if f["values"] else "-"
            cell = section.locator(f"tr.filter[data-charge='{code}'][data-filter='{key}'] [data-k=amount]")
            assert int(cell.get_attribute("data-cents")) == f["amount_cents"]
            assert cell.inner_text() == format_money(f["amount_cents"], currency)
    # the invoice so far: the usage plus the monthly base fee (49.00, in arrears)
    assert cents(page, "[data-k=invoice]") == api["amount_cents"] + 4900
    assert page.inner_text("[data-k=seats]") == "2"
    assert "estimate" in page.inner_text(".projection").lower()
    assert page.inner_text("[data-k=credits]") == "not available yet"


def test_the_chart_has_one_point_per_day_so_far(stack, page):
    page.goto(stack.link())
    # "day N of M": the day the page was drawn (UTC, the customer's timezone)
    days_so_far = int(page.inner_text("section.sub .period").split(" day ", 1)[1].split(" of ", 1)[0])
    assert days_so_far in (stack.now.day, datetime.now(UTC).day)  # (a run across midnight)
    charts = page.locator("figure.chart")
    assert charts.count() == 2  # seats, tokens
    for k in range(charts.count()):
        bars = charts.nth(k).locator("rect.bar")
        assert bars.count() == days_so_far
        assert bars.first.get_attribute("data-day") == stack.month.date().isoformat()
    tokens_chart = page.locator("figure.chart[data-charge='tokens_consumed'] rect.bar")
    total = sum(float(tokens_chart.nth(i).get_attribute("data-units")) for i in range(tokens_chart.count()))
    assert total == 5_500_000


def test_a_new_event_appears_without_a_reload(stack, page):
    page.goto(stack.link())
    page.evaluate("window.__sameDocument = 'yes'")
    before = cents(page, "[data-k=usage]")
    posted = time.monotonic()
    stack.post_events([tokens("live-1", int(time.time()), 1_000_000, "gpt-4o", "input")])  # 3.00 at 0.000003
    # A function, not a string: the page's CSP forbids eval, which a string predicate needs.
    page.wait_for_function("(before) => Number(document.querySelector('[data-k=usage]').dataset.cents) !== before",
                           arg=before, timeout=15_000)
    seconds = time.monotonic() - posted
    assert page.evaluate("window.__sameDocument") == "yes"  # updated in place: no navigation
    assert cents(page, "[data-k=usage]") == before + 300 == stack.usage()["amount_cents"]
    assert seconds < 10, f"the event took {seconds:.1f} s to appear"
    assert not [m for m in page.console_messages if "Content Security Policy" in m], page.console_messages


def test_it_fits_a_phone_and_screenshots_are_saved(stack, browser):
    for name, width, height in (("desktop", 1280, 900), ("phone", 375, 812)):
        context = browser.new_context(viewport={"width": width, "height": height},
                                      device_scale_factor=2 if name == "phone" else 1)
        tab = context.new_page()
        tab.goto(stack.link())
        scroll_width, inner_width = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width, f"{name}: {scroll_width} px of content in {inner_width} px"
        path = save_artifact(f"portal/{name}.png")
        tab.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        context.close()


def test_the_keyboard_reaches_the_skip_link_first(stack, page):
    page.goto(stack.link())
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#live"


def test_a_bad_or_foreign_link_shows_no_data(stack, page):
    good = stack.link()
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    response = page.goto(tampered)
    assert response.status == 401 and "not valid" in page.inner_text("h1")
    assert "$" not in page.content() and "sub_acme" not in page.content()
    foreign = stack.link("globex").replace("/customers/globex", "/customers/acme")
    response = page.goto(foreign)
    assert response.status == 403 and "$" not in page.content()


def test_an_open_page_stops_when_its_link_expires(stack, page):
    page.goto(stack.link())
    service = stack.runtime.portal.service
    lifetime = timedelta(seconds=stack.runtime.settings.portal_link_seconds)
    service.clock = lambda: datetime.now(UTC) + lifetime + timedelta(minutes=1)
    try:
        page.wait_for_function("() => document.getElementById('status').textContent.includes('expired')",
                               timeout=15_000)
    finally:
        service.clock = lambda: datetime.now(UTC)
