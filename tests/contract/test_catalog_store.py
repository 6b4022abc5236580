"""One contract suite for every CatalogStore adapter: SQLite, and Firestore on its real emulator.

The same assertions run against both, so the admin API and billing behave the same on the
embedded backend as in production.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
from meterline.ports import AlreadyExists, CatalogStore, StaleWrite
from meterline.services.numeric_fields import NumericFields


class StampClock:
    """The stores' clock for created_at/updated_at, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> StampClock:
    return StampClock()


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.servers)])
def store(request, tmp_path, monkeypatch, clock) -> CatalogStore:
    if request.param == "sqlite":
        from meterline.adapters.embedded.sqlite import SqliteDatabase
        from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore

        return SqliteCatalogStore(SqliteDatabase(tmp_path / "catalog.sqlite"), clock=clock)

    from meterline.adapters.gcp.clients import firestore_client
    from meterline.adapters.gcp.firestore_catalog import FirestoreCatalogStore
    from meterline.config import Settings

    emulator = request.getfixturevalue("firestore_emulator")
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    # A fresh project per test: the emulator keeps documents per project.
    project = f"test-{uuid.uuid4().hex[:8]}"
    return FirestoreCatalogStore(firestore_client(Settings(backend="gcp", google_cloud_project=project)), clock=clock)


def metric(code: str, aggregation: str = "sum_agg", field: str | None = "value", **extra) -> BillableMetric:
    body = {"code": code, "name": code.title(), "aggregation_type": aggregation, "field_name": field, **extra}
    return BillableMetric.model_validate(body)


PLAN_BODY = {
    "code": "hybrid",
    "name": "Hybrid",
    "interval": "monthly",
    "amount_cents": 4900,
    "amount_currency": "USD",
    "charges": [
        {"billable_metric_code": "seats", "charge_model": "standard", "prorated": True, "properties": {"amount": "20"}},
        {
            "billable_metric_code": "tokens_consumed",
            "charge_model": "graduated",
            "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": 1000000, "per_unit_amount": "0.00002", "flat_amount": "0"},
                {"from_value": 1000001, "to_value": None, "per_unit_amount": "0.000015", "flat_amount": "0"},
            ]},
            "filters": [{"values": {"token_type": ["output"]}, "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": None, "per_unit_amount": "0.00006", "flat_amount": "0"}]}}],
        },
    ],
}


def sub(external_id: str, customer: str = "cus-1", plan: str = "hybrid", **changes) -> Subscription:
    return Subscription(external_id=external_id, external_customer_id=customer, plan_code=plan,
                        subscription_at=datetime(2026, 1, 1, tzinfo=UTC), **changes)


# -- metrics and plans ----------------------------------------------------------------------


def test_metric_round_trips_and_missing_is_none(store):
    seats = metric("seats", "unique_count_agg", "user_id", recurring=True,
                   filters=[{"key": "region", "values": ["eu", "us"]}])
    written = store.put_billable_metric(seats)
    assert store.get_billable_metric("seats") == written
    assert store.get_billable_metric("seats").to_lago() == seats.to_lago()
    assert store.get_billable_metric("nope") is None


def test_create_only_refuses_an_existing_code_and_put_replaces(store):
    store.put_billable_metric(metric("tokens"), create_only=True)
    with pytest.raises(AlreadyExists):
        store.put_billable_metric(metric("tokens", field="n"), create_only=True)
    assert store.get_billable_metric("tokens").field_name == "value"
    store.put_billable_metric(metric("tokens", field="n"))
    assert store.get_billable_metric("tokens").field_name == "n"


def test_concurrent_creates_of_one_code_exactly_one_wins(store):
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def create(i: int) -> None:
        barrier.wait()
        try:
            store.put_plan(Plan.model_validate({**PLAN_BODY, "name": f"writer {i}"}), create_only=True)
            outcomes.append(f"won {i}")
        except AlreadyExists:
            outcomes.append("lost")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 3
    assert store.get_plan("hybrid").name == f"writer {winners[0].split()[1]}"


def test_plan_round_trips_with_charges_filters_and_decimals(store):
    plan = Plan.model_validate(PLAN_BODY)
    store.put_plan(plan)
    loaded = store.get_plan("hybrid")
    assert loaded.to_lago() == plan.to_lago()
    assert str(loaded.charges[1].properties.graduated_ranges[0].per_unit_amount) == "0.00002"
    assert loaded.charges[1].filters[0].key == "token_type=output"


def test_lists_are_ordered_by_key_and_paged_with_a_total(store):
    for code in ["c", "a", "e", "b", "d"]:
        store.put_billable_metric(metric(code))
    everything, total = store.list_billable_metrics()
    assert [m.code for m in everything] == ["a", "b", "c", "d", "e"] and total == 5
    page, total = store.list_billable_metrics(offset=2, limit=2)
    assert [m.code for m in page] == ["c", "d"] and total == 5
    assert store.list_plans() == ([], 0)


def test_codes_firestore_could_not_use_as_ids_work(store):
    # ("a/b" is refused before any store: a URL could not address it, see test_admin_http.)
    for code in [".", "..", "__x__", "émoji 🚀", "a%2Fb"]:
        store.put_billable_metric(metric(code))
        assert store.get_billable_metric(code).code == code


# -- timestamps and deletes -----------------------------------------------------------------


STAMPED = ["metric", "plan", "customer"]


def _ops(store, kind):
    """(put, get, delete, a definition, the same with one field changed) for one kind."""
    if kind == "metric":
        return (store.put_billable_metric, store.get_billable_metric, store.delete_billable_metric, "tokens",
                metric("tokens"), metric("tokens", field="n"))
    if kind == "plan":
        return (store.put_plan, store.get_plan, store.delete_plan, "hybrid",
                Plan.model_validate(PLAN_BODY), Plan.model_validate({**PLAN_BODY, "amount_cents": 5900}))
    return (store.put_customer, store.get_customer, store.delete_customer, "cus-1",
            Customer(external_id="cus-1"), Customer(external_id="cus-1", email="a@example.com"))


@pytest.mark.parametrize("kind", STAMPED)
def test_the_store_stamps_created_at_once_and_updated_at_on_each_change(store, clock, kind):
    put, get, _, key, first, changed = _ops(store, kind)
    created = clock.now.replace(microsecond=123000)  # kept to the millisecond it is answered with
    written = put(first)
    assert (written.created_at, written.updated_at) == (created, created)
    assert (get(key).created_at, get(key).updated_at) == (created, created)

    clock.tick()
    assert put(first) == written and get(key).updated_at == created  # unchanged: nothing written
    later = clock.tick().replace(microsecond=123000)
    rewritten = put(changed)
    assert (rewritten.created_at, rewritten.updated_at) == (created, later)
    assert get(key).to_document() == rewritten.to_document()
    # Stamps a model carries (here an older read, put back) are the store's to replace.
    latest = clock.tick().replace(microsecond=123000)
    assert (put(written).created_at, get(key).updated_at) == (created, latest)


def test_create_only_stamps_the_winner(store, clock):
    won = store.put_plan(Plan.model_validate(PLAN_BODY), create_only=True)
    clock.tick()
    with pytest.raises(AlreadyExists):
        store.put_plan(Plan.model_validate({**PLAN_BODY, "name": "late"}), create_only=True)
    assert store.get_plan("hybrid").to_document() == won.to_document()


@pytest.mark.parametrize("kind", STAMPED)
def test_delete_returns_what_was_stored_then_nothing(store, kind):
    put, get, delete, key, first, _ = _ops(store, kind)
    written = put(first)
    deleted = delete(key)
    assert deleted.to_document() == written.to_document()
    assert get(key) is None and delete(key) is None
    assert put(first).created_at is not None  # a new life


def test_a_document_without_timestamps_reads_as_unknown_time(store):
    # Written before Meterline kept timestamps: still readable, answered with a fixed instant.
    old = metric("tokens")
    assert old.created_at is None and old.to_lago_response()["created_at"] == "1970-01-01T00:00:00.000Z"


# -- customers ------------------------------------------------------------------------------


def test_customers_upsert_by_external_id(store):
    store.put_customer(Customer(external_id="cus-2", currency="EUR", timezone="Europe/Paris"))
    store.put_customer(Customer(external_id="cus-1", email="a@example.com", billing_configuration={"x": [[1, 2]]}))
    store.put_customer(Customer(external_id="cus-1", email="b@example.com", billing_configuration={"x": [[1, 2]]}))
    assert store.get_customer("cus-1").email == "b@example.com"
    assert store.get_customer("cus-1").billing_configuration == {"x": [[1, 2]]}  # nested arrays survive
    customers, total = store.list_customers()
    assert [c.external_id for c in customers] == ["cus-1", "cus-2"] and total == 2
    assert store.get_customer("cus-3") is None


# -- subscription histories -----------------------------------------------------------------


def test_subscription_history_versions(store):
    empty = store.get_subscription_history("sub-1")
    assert not empty.exists and empty.version == 0 and empty.records == ()

    store.put_subscription_history("sub-1", [sub("sub-1")], version=0)
    first = store.get_subscription_history("sub-1")
    assert first.version == 1 and first.records == (sub("sub-1"),)

    at = datetime(2026, 1, 15, tzinfo=UTC)
    upgraded = [sub("sub-1", status="terminated", terminated_at=at, next_plan_code="big"),
                sub("sub-1", plan="big", started_at=at, previous_plan_code="hybrid")]
    with pytest.raises(StaleWrite):
        store.put_subscription_history("sub-1", upgraded, version=0)  # written against an old read
    store.put_subscription_history("sub-1", upgraded, version=1)
    second = store.get_subscription_history("sub-1")
    assert second.version == 2 and second.records == tuple(upgraded)


def test_subscription_records_keep_their_lago_id_and_created_at(store):
    at = datetime(2026, 1, 15, 9, 30, 0, 250000, tzinfo=UTC)
    records = [sub("sub-1", lago_id=str(uuid.uuid4()), created_at=at, status="terminated", terminated_at=at),
               sub("sub-1", plan="big", lago_id=str(uuid.uuid4()), created_at=at)]
    store.put_subscription_history("sub-1", records, version=0)
    read = store.get_subscription_history("sub-1").records
    assert read == tuple(records)
    assert [r.to_lago()["created_at"] for r in read] == ["2026-01-15T09:30:00.250Z"] * 2


def test_concurrent_plan_changes_exactly_one_applies(store):
    store.put_subscription_history("sub-1", [sub("sub-1")], version=0)
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def change(plan: str) -> None:
        read = store.get_subscription_history("sub-1")
        barrier.wait()
        try:
            store.put_subscription_history("sub-1", [sub("sub-1", plan=plan)], version=read.version)
            outcomes.append(plan)
        except StaleWrite:
            outcomes.append("stale")

    threads = [threading.Thread(target=change, args=(p,)) for p in ("p1", "p2", "p3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("stale") == 2
    [winner] = [o for o in outcomes if o != "stale"]
    assert store.get_subscription_history("sub-1").records[0].plan_code == winner


def test_histories_must_be_one_subscription_of_one_customer(store):
    with pytest.raises(ValueError):
        store.put_subscription_history("sub-1", [], version=0)
    with pytest.raises(ValueError):
        store.put_subscription_history("sub-1", [sub("sub-2")], version=0)
    with pytest.raises(ValueError):
        store.put_subscription_history("sub-1", [sub("sub-1"), sub("sub-1", customer="cus-9")], version=0)


def test_list_subscriptions_by_customer(store):
    store.put_subscription_history("sub-b", [sub("sub-b")], version=0)
    store.put_subscription_history("sub-a", [sub("sub-a", status="terminated",
                                                 terminated_at=datetime(2026, 1, 2, tzinfo=UTC)),
                                             sub("sub-a", plan="big")], version=0)
    store.put_subscription_history("sub-c", [sub("sub-c", customer="cus-2")], version=0)
    mine = store.list_subscriptions("cus-1")
    assert [(s.external_id, s.plan_code) for s in mine] == [("sub-a", "hybrid"), ("sub-a", "big"), ("sub-b", "hybrid")]
    assert [s.external_id for s in store.list_subscriptions()] == ["sub-a", "sub-a", "sub-b", "sub-c"]
    assert store.list_subscriptions("cus-404") == []


# -- the ingest lookup built on the store ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_numeric_fields_name_the_field_of_numeric_aggregations_only(store):
    store.put_billable_metric(metric("tokens", "sum_agg", "value"))
    store.put_billable_metric(metric("peak", "max_agg", "gb"))
    store.put_billable_metric(metric("last", "latest_agg", "level"))
    store.put_billable_metric(metric("storage", "weighted_sum_agg", "gb_hours"))
    store.put_billable_metric(metric("calls", "count_agg", None))
    store.put_billable_metric(metric("seats", "unique_count_agg", "user_id"))
    lookup = NumericFields(store)
    assert {c: lookup(c) for c in ["tokens", "peak", "last", "storage", "calls", "seats", "nope"]} == {
        "tokens": "value", "peak": "gb", "last": "level", "storage": "gb_hours",
        "calls": None, "seats": None, "nope": None,
    }


def test_a_new_metric_is_checked_at_once_and_a_changed_one_after_the_ttl(store):
    clock = Clock()
    lookup = NumericFields(store, ttl=30, clock=clock)
    assert lookup("tokens") is None  # no such metric (yet): read fresh, and nothing to check
    store.put_billable_metric(metric("tokens"))
    # Unknown to the cached map: read fresh, so the door never checks against an older catalog
    # than billing reads (a metric applied by the CLI beside a running serve).
    assert lookup("tokens") == "value"
    store.put_billable_metric(metric("tokens", field="tokens"))
    clock.now += 29
    assert lookup("tokens") == "value"  # a known metric's change waits for the next load
    clock.now += 1
    assert lookup("tokens") == "tokens"
    store.put_billable_metric(metric("more"))
    assert lookup("more") == "value"
    store.put_billable_metric(metric("calls", "count_agg", None))
    assert lookup("calls") is None


def test_a_failing_reload_keeps_the_last_good_map_and_never_raises(store):
    class Flaky:
        fail = False

        def list_billable_metrics(self, offset=0, limit=None):
            if self.fail:
                raise ConnectionError("catalog down")
            return store.list_billable_metrics(offset, limit)

        def get_billable_metric(self, code):
            if self.fail:
                raise ConnectionError("catalog down")
            return store.get_billable_metric(code)

    flaky, clock = Flaky(), Clock()
    lookup = NumericFields(flaky, ttl=30, retry=5, clock=clock)
    store.put_billable_metric(metric("tokens"))
    assert lookup("tokens") == "value"
    flaky.fail = True
    clock.now += 31
    assert lookup("tokens") == "value"  # stale but served; ingest is not stopped by the catalog
    store.put_billable_metric(metric("more"))
    assert lookup("more") is None  # the store is down: accepted unchecked, never an error
    flaky.fail = False
    clock.now += 4
    assert lookup("more") == "value"  # unknown to the map: read fresh as soon as the store answers
    clock.now += 1
    assert lookup("tokens") == "value"


def test_numeric_fields_before_any_good_load_answer_none():
    class Down:
        def list_billable_metrics(self, offset=0, limit=None):
            raise ConnectionError("catalog down")

    assert NumericFields(Down())("tokens") is None
