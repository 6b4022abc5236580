"""The portal service on the embedded adapters: current usage equals what a billing run would
invoice, line by line; the daily chart, the seat count and the projection; signed links; the
signing key; money as a customer reads it.

The data is the billing run's (tests/harness/billing.py `Billing`): the example catalog, one
customer on the hybrid plan since November 1, and November's events (tests/harness/november.py).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterline.adapters.embedded.keyfile import signing_key
from meterline.config import ConfigError
from meterline.core.errors import Forbidden, NotFound, Unauthenticated
from meterline.entrypoints import lago
from meterline.entrypoints.formatting import format_money, format_units
from meterline.services.portal_links import LinkSigner
from tests.harness.billing import DEC, Billing
from tests.harness.november import EXPECTED, NOV, seat, tokens

KEY = b"k" * 32


@pytest.fixture
def billing(tmp_path) -> Billing:
    return Billing(tmp_path)


def portal(billing: Billing, at: datetime):
    service = billing.runtime.portal.service
    service.clock = lambda: at
    return service


def by_ref(fees) -> dict[str, tuple[int, Decimal, Decimal]]:
    return {f.ref.key: (f.amount_cents, f.units, f.precise_amount) for f in fees}


# -- current usage == the billing run, line by line -----------------------------------------------


@pytest.mark.parametrize("at", [NOV + timedelta(days=12, hours=5), DEC - timedelta(microseconds=1)],
                         ids=["mid-period", "last-microsecond"])
def test_current_usage_equals_the_billing_runs_draft_line_by_line(billing, at):
    usage = portal(billing, at).current_usage("acme", "sub_acme")
    (rated,) = usage.rated
    assert (usage.period.start_utc, usage.period.end_utc) == (NOV, DEC)

    # The usage service asked for the same (record, period) directly.
    (direct,) = billing.service()._usage.rate([(rated.subscription, rated.period)])
    assert by_ref(direct.draft.fees) == by_ref(usage.fees)

    # A billing run just after the period closed, inside the grace period: the draft it makes
    # from the same events has exactly these lines (reference, units, precise and rounded amount).
    billing.run(DEC + timedelta(minutes=30))
    (draft,) = billing.all()
    assert draft.status == "draft"
    lines = {line.ref: (line.amount_cents, line.units, line.precise_amount) for line in draft.lines}
    assert lines == by_ref(usage.fees)
    assert draft.amount_cents == sum(f.amount_cents for f in usage.fees) == EXPECTED["total"]

    # And the API's Lago shape carries the same charge amounts, per filter.
    body = lago.current_usage(usage)
    api = {(c["billable_metric"]["code"], f["values"] and next(iter(f["values"].values()))[0]): f["amount_cents"]
           for c in body["charges_usage"] for f in (c["filters"] or [{"values": None, **c}])}
    assert api == {
        ("seats", None): EXPECTED["seats:None"],
        ("tokens_consumed", "input"): EXPECTED["tokens_consumed:token_type=input"],
        ("tokens_consumed", "output"): EXPECTED["tokens_consumed:token_type=output"],
        ("tokens_consumed", None): EXPECTED["tokens_consumed:None"],
    }
    charge_lines = sum(line.amount_cents for line in draft.lines if line.kind == "charge")
    assert body["amount_cents"] == body["total_amount_cents"] == charge_lines == EXPECTED["total"] - 4900


def test_current_usage_names_only_the_customers_own_subscription(billing):
    service = portal(billing, NOV + timedelta(days=3))
    billing.admin.upsert_customer({"external_id": "other", "name": "Other", "currency": "USD"})
    with pytest.raises(NotFound) as info:
        service.current_usage("other", "sub_acme")  # acme's subscription, asked as another customer
    assert info.value.resource == "subscription"
    with pytest.raises(NotFound) as info:
        service.current_usage("nobody", "sub_acme")
    assert info.value.resource == "customer"
    with pytest.raises(NotFound):
        service.current_usage("acme", "sub_nothing")


# -- the page's data --------------------------------------------------------------------------------


def test_the_daily_series_has_one_point_per_day_so_far_with_each_days_units(billing):
    at = NOV + timedelta(days=15, hours=9)  # November 16, 09:00 UTC: day 16 of 30
    page = portal(billing, at).page("acme")
    (sub,) = page.subscriptions
    series = {s.charge_ref: s for s in sub.daily}
    tokens_per_day = dict(series["tokens_consumed"].points)
    assert len(tokens_per_day) == 16 and min(tokens_per_day) == date(2026, 11, 1)
    # tokens t1..t5 on Nov 2..6 (filters dropped: a day's units are the metric's own sum)
    assert {d.day: u for d, u in tokens_per_day.items() if u} == {2: 3_000_000, 3: 1_000_000, 4: 8_000_000,
                                                                   5: 4_000_000, 6: 1_000_000}
    # alice's seat from October, bob's from November 16: active seats at each day's end
    seats_per_day = dict(series["seats"].points)
    assert seats_per_day[date(2026, 11, 15)] == 1 and seats_per_day[date(2026, 11, 16)] == 2
    assert [(s.label, s.active) for s in sub.seats] == [("Seats", 2)]


def test_seats_active_now_count_only_events_up_to_now(billing):
    billing.post([seat("s3", int((NOV + timedelta(days=20)).timestamp()), "bob", "remove")])
    assert [s.active for s in portal(billing, NOV + timedelta(days=19)).page("acme").subscriptions[0].seats] == [2]
    assert [s.active for s in portal(billing, NOV + timedelta(days=21)).page("acme").subscriptions[0].seats] == [1]


def test_the_projection_scales_additive_usage_to_the_period_and_rerates_it(billing):
    # Half of November elapsed: the tokens so far are doubled, then priced by the same tiers.
    page = portal(billing, NOV + timedelta(days=15)).page("acme")
    (sub,) = page.subscriptions
    projected = {(f.ref.kind, f.ref.charge_ref, f.ref.filter_key): f.amount_cents for f in sub.projected}
    assert projected == {
        ("subscription", None, None): 4900,
        ("charge", "seats", None): 3000,  # seats keep the level reached (bob is active to the end)
        ("charge", "tokens_consumed", "token_type=input"): 2400,  # 8M x 0.000003
        ("charge", "tokens_consumed", "token_type=output"): 32500,  # 10M x 0.000015 + 14M x 0.0000125
        ("charge", "tokens_consumed", None): 600,  # 2M x 0.000003
    }
    assert sub.projected_cents == 43400
    assert (sub.elapsed, sub.active) == (timedelta(days=15), timedelta(days=30))
    # ... and the usage so far is what was billed, not projected.
    assert sub.invoice_cents == EXPECTED["total"] and sub.usage_cents == EXPECTED["total"] - 4900


def test_the_page_lists_issued_invoices_newest_first_without_drafts(billing):
    billing.run(DEC + timedelta(minutes=30))  # November's draft: not shown
    service = portal(billing, DEC + timedelta(days=2))
    assert service.page("acme").invoices == ()
    billing.run(DEC + timedelta(hours=2))  # finalized
    (invoice,) = service.page("acme").invoices
    assert invoice.status == "finalized" and invoice.amount_cents == EXPECTED["total"]
    # December so far: two seats (40.00) and t6's 9,999,999 output tokens (150.00)
    (sub,) = service.page("acme").subscriptions
    assert sub.usage.period.start_utc == DEC and sub.usage_cents == 4000 + 15000


def test_a_late_event_moves_the_current_usage(billing):
    at = NOV + timedelta(days=10)
    before = portal(billing, at).current_usage("acme", "sub_acme")
    billing.post([tokens("live-1", int(at.timestamp()), 1_000_000, "input")])
    after = portal(billing, at).current_usage("acme", "sub_acme")
    diff = sum(f.amount_cents for f in after.fees) - sum(f.amount_cents for f in before.fees)
    assert diff == 300  # 1M input tokens at 0.000003


# -- links ------------------------------------------------------------------------------------------


NOW = datetime(2026, 11, 5, 12, tzinfo=UTC)


def test_a_link_names_its_customer_and_expires():
    signer = LinkSigner(KEY, timedelta(hours=1))
    link = signer.issue("acme", NOW)
    assert link.token.startswith("mlp1.") and link.expires_at >= NOW + timedelta(hours=1)
    assert signer.verify(link.token, NOW) == "acme"
    assert signer.verify(link.token, NOW + timedelta(minutes=59)) == "acme"
    with pytest.raises(Unauthenticated):
        signer.verify(link.token, NOW + timedelta(hours=1, seconds=2))


def test_a_customer_id_with_any_characters_round_trips():
    signer = LinkSigner(KEY, timedelta(hours=1))
    for customer in ("a/b", "ünïcode ☃", "x.y.z", "a?token=b&c"):
        assert signer.verify(signer.issue(customer, NOW).token, NOW) == customer


def test_any_change_to_a_token_is_refused():
    signer = LinkSigner(KEY, timedelta(hours=1))
    token = signer.issue("acme", NOW).token
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for i, char in enumerate(token):
        other = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
        with pytest.raises(Unauthenticated):
            signer.verify(token[:i] + other + token[i + 1:], NOW)
    prefix, customer, expires, signature = token.split(".")
    forged = [
        f"{prefix}.YWNtZTI.{expires}.{signature}",  # another customer ("acme2"), same signature
        f"{prefix}.{customer}.{int(expires) + 86_400}.{signature}",  # a longer life
        LinkSigner(b"x" * 32, timedelta(hours=1)).issue("acme", NOW).token,  # another key
        token + ".", token[:-1], "", "mlp1...", "Bearer " + token, token.replace("mlp1", "mlp2"),
    ]
    for bad in forged:
        with pytest.raises(Unauthenticated):
            signer.verify(bad, NOW)


def test_a_token_of_one_customer_does_not_open_another():
    signer = LinkSigner(KEY, timedelta(hours=1))
    token = signer.issue("acme", NOW).token
    assert signer.authorize(token, "acme", NOW) == "acme"
    for other in ("acme2", "ACME", "acm", "acme/", ""):
        with pytest.raises(Forbidden):
            signer.authorize(token, other, NOW)


def test_a_short_key_is_refused():
    with pytest.raises(ValueError):
        LinkSigner(b"short", timedelta(hours=1))


# -- the signing key ------------------------------------------------------------------------------


def test_embedded_generates_a_private_key_once_and_keeps_it(tmp_path):
    first = signing_key(None, "embedded", tmp_path)
    assert len(first) == 64 and (tmp_path / "portal_signing_key").stat().st_mode & 0o777 == 0o600
    assert signing_key(None, "embedded", tmp_path) == first  # a restart keeps the links valid
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_key_file_others_can_read_is_refused(tmp_path):
    signing_key(None, "embedded", tmp_path)
    os.chmod(tmp_path / "portal_signing_key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        signing_key(None, "embedded", tmp_path)


def test_gcp_needs_the_secret_and_a_long_one(tmp_path):
    with pytest.raises(ConfigError, match="METERLINE_PORTAL_SIGNING_KEY is not set"):
        signing_key(None, "gcp", tmp_path)
    with pytest.raises(ConfigError, match="at least 32"):
        signing_key("too-short", "gcp", tmp_path)
    assert signing_key("s" * 32, "gcp", tmp_path) == b"s" * 32
    assert not (tmp_path / "portal_signing_key").exists()


# -- money and units --------------------------------------------------------------------------------


@pytest.mark.parametrize(("cents", "currency", "text"), [
    (123456, "USD", "$1,234.56"),
    (5, "EUR", "€0.05"),
    (-5, "EUR", "-€0.05"),
    (0, "GBP", "£0.00"),
    (1235, "JPY", "¥1,235"),
    (1250, "KWD", "KWD 1.250"),
    (10000, "CLF", "CLF 1.0000"),
    (99, "CHF", "CHF 0.99"),
])
def test_money_has_the_currencys_symbol_and_decimals(cents, currency, text):
    assert format_money(cents, currency) == text


@pytest.mark.parametrize(("units", "text"), [
    (Decimal("12000000.000000000"), "12,000,000"), (Decimal("1.50"), "1.5"), (Decimal("0.00004"), "0"),
    (Decimal("0.00005"), "0.0001"), (Decimal("1234.5"), "1,234.5"), (Decimal("0"), "0"),
    (Decimal("1.935483870967741935483870968"), "1.9355"), (Decimal("-2.5"), "-2.5"), (Decimal("-0.5"), "-0.5"),
])
def test_units_are_grouped_without_padding(units, text):
    assert format_units(units) == text
