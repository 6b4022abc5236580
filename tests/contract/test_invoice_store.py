"""One contract suite for every InvoiceStore and ProcessedEvents adapter: SQLite, and Firestore
on its real emulator.

The races are real: threads behind a barrier against the same file or the same emulator.
(Each conflict on the emulator costs about 2 s, so they are kept to two or three writers.)
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterline.core.invoices import Invoice, invoice_number
from meterline.ports import InvoiceStore, ProcessedEvents, StaleWrite
from tests.harness.invoices import AT, PARIS, invoice, line

UTC = UTC


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.servers)])
def stores(request, tmp_path, monkeypatch) -> tuple[InvoiceStore, ProcessedEvents]:
    if request.param == "sqlite":
        from meterline.adapters.embedded.sqlite import SqliteDatabase
        from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore, SqliteProcessedEvents

        db = SqliteDatabase(tmp_path / "billing.sqlite")
        return SqliteInvoiceStore(db), SqliteProcessedEvents(db)

    from meterline.adapters.gcp.clients import firestore_client
    from meterline.adapters.gcp.firestore_invoices import FirestoreInvoiceStore, FirestoreProcessedEvents
    from meterline.config import Settings

    emulator = request.getfixturevalue("firestore_emulator")
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    # A fresh project per test: the emulator keeps documents per project.
    client = firestore_client(Settings(backend="gcp", google_cloud_project=request.getfixturevalue("unique_project")))
    return FirestoreInvoiceStore(client), FirestoreProcessedEvents(client)


@pytest.fixture
def store(stores) -> InvoiceStore:
    return stores[0]


def race(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run `attempt(i)` in n threads released together; each outcome, or the exception raised."""
    barrier = threading.Barrier(n)
    outcomes: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = attempt(i)
        except Exception as err:  # noqa: BLE001 - the test looks at what each writer got
            outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


# -- create, get, update ------------------------------------------------------------------------


def test_create_is_create_if_absent_and_leaves_the_first_unchanged(store):
    first = invoice()
    assert store.create(first) is True
    assert store.create(dataclasses.replace(first, currency="EUR", lines=())) is False
    stored = store.get(first.id)
    assert stored == dataclasses.replace(first, version=1)
    assert store.get("no-such-invoice") is None


def test_round_trip_is_exact_for_every_field(store):
    full = invoice(
        status="paid",
        number="ML-XYZ-0007",
        sequential_id=7,
        finalized_at=datetime(2026, 2, 1, 1, 0, 0, 1, tzinfo=UTC),
        paid_at=datetime(2026, 2, 3, 9, 30, 0, 999999, tzinfo=PARIS),
        provider_customer_id="cus_Stripe",
        provider_invoice_id="in_Stripe",
        hosted_invoice_url="https://invoice.example/in_Stripe",
        collection_method="send_invoice",
        days_until_due=30,
        provider_step="collected",
        flag="provider_total_mismatch",
        lines=(
            line(),
            line("late|x|charge|tokens", 1, kind="late_usage", late_for="charge|tokens", units=Decimal("0.000000000001"),
                 precise_amount=Decimal("-0.0000000000000000001"), charge_ref=None, from_datetime=None,
                 to_datetime=None, events_count=None, description="Late usage for 2025-12-01..2025-12-31: Tokens ✓"),
            line("true_up", 0, kind="true_up", units=Decimal("1E+3"), precise_amount=Decimal("0E-12")),
        ),
    )
    assert store.create(full)
    stored = store.get(full.id)
    assert stored == dataclasses.replace(full, version=1)
    # Equal is not enough for Decimals and datetimes: the exact digits and offsets come back.
    for got, sent in zip(stored.lines, full.lines, strict=True):
        assert str(got.units) == str(sent.units) and str(got.precise_amount) == str(sent.precise_amount)
    assert stored.paid_at.utcoffset() == timedelta(hours=1) and stored.paid_at.microsecond == 999999
    assert stored.from_utc.tzinfo is not None and stored.lines[0].from_datetime.microsecond == 1
    assert stored.amount_cents == full.amount_cents == 1234 + 1 + 0


def test_get_many_reads_the_stored_ones_in_bulk(store):
    invoices = [invoice(start=date(2026, m, 1)) for m in range(1, 8)]
    for one in invoices[::2]:
        store.create(one)
    asked = [i.id for i in invoices] + ["no-such-invoice"]
    assert store.get_many(asked) == {i.id: store.get(i.id) for i in invoices[::2]}
    assert store.get_many([]) == {}


def test_update_writes_the_next_version_and_refuses_a_stale_one(store):
    store.create(invoice())
    v1 = store.get(invoice().id)
    v2 = store.update(dataclasses.replace(v1, lines=(line(cents=99),), provider_invoice_id="in_1"))
    assert v2.version == 2 and store.get(v1.id) == v2
    with pytest.raises(StaleWrite):
        store.update(dataclasses.replace(v1, flag="from a run that read version 1"))
    assert store.get(v1.id) == v2
    with pytest.raises(StaleWrite):
        store.update(invoice(sub="never-created", version=1))


def test_two_threads_creating_one_invoice_exactly_one_wins(store):
    outcomes = race(3, lambda i: store.create(invoice(flag=f"writer {i}")))
    assert sorted(outcomes) == [False, False, True]
    assert store.get(invoice().id).flag == f"writer {outcomes.index(True)}"


def test_concurrent_updates_of_one_version_one_wins(store):
    store.create(invoice())
    v1 = store.get(invoice().id)
    outcomes = race(3, lambda i: store.update(dataclasses.replace(v1, flag=f"writer {i}")))
    (won,) = [o for o in outcomes if isinstance(o, Invoice)]
    assert sum(isinstance(o, StaleWrite) for o in outcomes) == 2
    assert won.version == 2 and store.get(v1.id) == won


# -- issue and numbers --------------------------------------------------------------------------


def test_finalize_gives_the_next_number_once(store):
    store.create(invoice())
    draft = store.get(invoice().id)
    final = store.issue(draft, AT)
    assert (final.status, final.sequential_id, final.number) == ("finalized", 1, invoice_number("cus-1", 1))
    assert final.finalized_at == AT and final.version == 2 and store.get(draft.id) == final

    # Again with the draft it read: stale. With the finalized invoice: refused (not a draft).
    with pytest.raises(StaleWrite):
        store.issue(draft, AT + timedelta(hours=1))
    with pytest.raises(ValueError):
        store.issue(final, AT + timedelta(hours=1))
    assert store.get(draft.id) == final

    # Neither attempt used up a number: the customer's next invoice gets 2.
    store.create(invoice(start=date(2026, 2, 1)))
    assert store.issue(store.get(invoice(start=date(2026, 2, 1)).id), AT).sequential_id == 2


def test_finalize_creates_an_invoice_never_stored_once(store):
    new = invoice()
    assert new.version == 0
    final = store.issue(new, AT)  # its grace ended before a run first saw it: never a draft
    assert (final.status, final.sequential_id, final.version) == ("finalized", 1, 1)
    assert store.get(new.id) == final
    # A second run that also read it as absent: stale, and no number used up.
    with pytest.raises(StaleWrite):
        store.issue(new, AT)
    assert store.create(new) is False and store.get(new.id) == final
    assert store.issue(invoice(start=date(2026, 2, 1)), AT).sequential_id == 2


def test_concurrent_finalizations_of_one_absent_invoice_one_wins(store):
    outcomes = race(4, lambda i: store.issue(invoice(), AT))
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, StaleWrite) for o in outcomes if isinstance(o, Exception))
    assert store.get(invoice().id).sequential_id == 1
    assert store.issue(invoice(start=date(2026, 2, 1)), AT).sequential_id == 2  # no number lost


def test_issue_many_numbers_in_order_and_skips_what_it_refuses(store):
    drafted = invoice(start=date(2026, 2, 1))
    store.create(drafted)
    stale = dataclasses.replace(store.get(drafted.id), version=7)
    new = [invoice(start=date(2026, m, 1)) for m in (3, 4)]
    outcomes = store.issue_many([new[0], stale, new[1], invoice(customer="cus-2")], AT)
    assert isinstance(outcomes[1], StaleWrite)
    finals = [o for o in outcomes if not isinstance(o, Exception)]
    assert [(f.customer_external_id, f.sequential_id) for f in finals] == [("cus-1", 1), ("cus-1", 2), ("cus-2", 1)]
    assert all(store.get(f.id) == f for f in finals)
    again = store.issue_many([new[0]], AT)  # another run that also read it as absent
    assert isinstance(again[0], StaleWrite)
    # The refused ones used up no number.
    assert store.issue(store.get(drafted.id), AT).sequential_id == 3


def test_numbers_are_per_customer(store):
    drafts = [invoice("a-1", "cus-a"), invoice("b-1", "cus-b"), invoice("a-2", "cus-a")]
    for draft in drafts:
        store.create(draft)
    numbers = [store.issue(store.get(d.id), AT).number for d in drafts]
    assert numbers == [invoice_number("cus-a", 1), invoice_number("cus-b", 1), invoice_number("cus-a", 2)]


def test_concurrent_finalizations_for_one_customer_get_distinct_numbers(store):
    drafts = [invoice("sub-1"), invoice("sub-2")]
    for draft in drafts:
        store.create(draft)
    stored = [store.get(d.id) for d in drafts]
    outcomes = race(2, lambda i: store.issue(stored[i], AT))
    assert sorted(o.sequential_id for o in outcomes) == [1, 2]
    assert {store.get(d.id).number for d in drafts} == {invoice_number("cus-1", 1), invoice_number("cus-1", 2)}


def test_concurrent_finalizations_of_one_invoice_one_wins(store):
    store.create(invoice())
    draft = store.get(invoice().id)
    outcomes = race(2, lambda i: store.issue(draft, AT))
    assert sum(isinstance(o, Invoice) for o in outcomes) == 1
    assert sum(isinstance(o, StaleWrite) for o in outcomes) == 1
    assert store.get(draft.id).sequential_id == 1


# -- list and find ------------------------------------------------------------------------------


@pytest.fixture
def listed(store) -> dict[str, Invoice]:
    """Five invoices: two customers, three months, mixed states."""
    made = {
        "a-jan": invoice("a-1", "cus-a", date(2026, 1, 1)),
        "a-feb": invoice("a-1", "cus-a", date(2026, 2, 1)),
        "a2-feb": invoice("a-2", "cus-a", date(2026, 2, 1), status="paid"),
        "b-jan": invoice("b-1", "cus-b", date(2026, 1, 1), status="voided"),
        "b-mar": invoice("b-1", "cus-b", date(2026, 3, 1), status="finalized", provider_invoice_id="in_b_mar"),
    }
    for inv in made.values():
        store.create(inv)
    return {name: store.get(inv.id) for name, inv in made.items()}


def ids(invoices: list[Invoice]) -> list[str]:
    return [i.id for i in invoices]


def test_list_orders_newest_issuing_date_first_then_id(store, listed):
    page, total = store.list()
    assert total == 5
    expected = sorted(listed.values(), key=lambda i: (-i.issuing_date.toordinal(), i.id))
    assert ids(page) == ids(expected)
    assert page[0] == listed["b-mar"]


def test_list_filters(store, listed):
    def names(**filters) -> set[str]:
        page, total = store.list(**filters)
        assert total == len(page)
        by_id = {inv.id: name for name, inv in listed.items()}
        return {by_id[i] for i in ids(page)}

    assert names(customer_external_id="cus-a") == {"a-jan", "a-feb", "a2-feb"}
    assert names(subscription_external_id="b-1") == {"b-jan", "b-mar"}
    assert names(statuses=["draft"]) == {"a-jan", "a-feb"}
    assert names(statuses=["paid", "voided"]) == {"a2-feb", "b-jan"}
    assert names(statuses=[]) == set()
    assert names(customer_external_id="cus-a", statuses=["draft", "paid"]) == {"a-jan", "a-feb", "a2-feb"}
    # Both bounds inclusive (Lago's issuing_date_from/to); February's invoices are issued on 1 March.
    assert names(issuing_date_from=date(2026, 3, 1)) == {"a-feb", "a2-feb", "b-mar"}
    assert names(issuing_date_to=date(2026, 3, 1)) == {"a-jan", "b-jan", "a-feb", "a2-feb"}
    assert names(issuing_date_from=date(2026, 3, 1), issuing_date_to=date(2026, 3, 1)) == {"a-feb", "a2-feb"}
    assert names(customer_external_id="cus-b", subscription_external_id="b-1", statuses=["finalized"],
                 issuing_date_from=date(2026, 4, 1)) == {"b-mar"}
    assert names(customer_external_id="nobody") == set()


def test_list_pages_with_the_total(store, listed):
    everything, _ = store.list()
    pages = [store.list(offset=offset, limit=2) for offset in (0, 2, 4, 6)]
    assert [total for _, total in pages] == [5, 5, 5, 5]
    assert [ids(page) for page, _ in pages] == [ids(everything[0:2]), ids(everything[2:4]), ids(everything[4:]), []]
    of_a = [i for i in everything if i.customer_external_id == "cus-a"]
    assert store.list(customer_external_id="cus-a", offset=1, limit=1) == (of_a[1:2], 3)


def test_list_sees_status_changes(store, listed):
    store.issue(listed["a-jan"], AT)
    page, total = store.list(customer_external_id="cus-a", statuses=["finalized"])
    assert total == 1 and page[0].number == invoice_number("cus-a", 1)


def test_find_by_provider_id(store, listed):
    assert store.find_by_provider_id("in_b_mar") == listed["b-mar"]
    assert store.find_by_provider_id("in_unknown") is None
    moved = store.update(dataclasses.replace(listed["a-jan"], provider_invoice_id="in_a_jan"))
    assert store.find_by_provider_id("in_a_jan") == moved


# -- processed webhook events -------------------------------------------------------------------


def test_processed_events_first_time_then_never(stores):
    processed = stores[1]
    assert processed.seen("evt_1") is False
    assert processed.seen("evt_1") is False  # asking records nothing
    assert processed.first_time("evt_1") is True
    assert processed.seen("evt_1") is True
    assert processed.first_time("evt_1") is False
    assert processed.first_time("evt_2") is True
    assert processed.first_time("evt/with.odd..chars") is True


def test_processed_events_race_exactly_one_first(stores):
    processed = stores[1]
    event = f"evt_{uuid.uuid4().hex}"
    assert sorted(race(3, lambda i: processed.first_time(event))) == [False, False, True]
