"""The two narrow warehouse reads that keep the per-event cost down (docs/cost.md), on DuckDB
and on the BigQuery emulator: which keys are stored (process settles an old claim with it)
and which billed windows received events since they were read (billing's late-usage check)."""

from __future__ import annotations

from datetime import UTC, datetime

from meterline.core.clock import to_us
from meterline.core.events import validate_event
from meterline.ports import ArrivalProbe

JAN = to_us(datetime(2027, 1, 1, tzinfo=UTC))
FEB = to_us(datetime(2027, 2, 1, tzinfo=UTC))
MAR = to_us(datetime(2027, 3, 1, tzinfo=UTC))
DAY = 86_400 * 1_000_000


def _event(txn: str, sub: str, at_us: int):
    return validate_event(
        {"transaction_id": txn, "external_subscription_id": sub, "code": "tokens", "timestamp": at_us // 1_000_000,
         "properties": {"value": 1}},
        at_us,
    )


def test_stored_keys_names_exactly_the_keys_with_a_row(backend):
    backend.warehouse.insert_events([_event("t1", "a", JAN), _event("t2", "a", JAN), _event("t1", "b", JAN)], JAN)
    asked = [("a", "t1"), ("a", "t3"), ("b", "t1"), ("b", "t2"), ("c", "t1")]
    assert backend.warehouse.stored_keys(asked) == {("a", "t1"), ("b", "t1")}
    assert backend.warehouse.stored_keys([]) == set()


def test_windows_with_arrivals_finds_events_processed_since(backend):
    processed = JAN + 40 * DAY  # in February: the January event arrived late
    backend.warehouse.insert_events([_event("t1", "a", JAN + 15 * DAY)], processed)
    probes = [
        ArrivalProbe("jan-a-before", "a", JAN, FEB, processed - 1),
        ArrivalProbe("jan-a-at", "a", JAN, FEB, processed),
        ArrivalProbe("jan-a-after", "a", JAN, FEB, processed + 1),  # read after it: nothing new
        ArrivalProbe("feb-a", "a", FEB, MAR, 0),  # its event is in January
        ArrivalProbe("jan-b", "b", JAN, FEB, 0),  # another subscription
    ]
    assert backend.warehouse.windows_with_arrivals(probes) == {"jan-a-before", "jan-a-at"}
    assert backend.warehouse.windows_with_arrivals([]) == set()


def test_a_recurring_metric_s_late_event_before_the_window_is_an_arrival(backend):
    processed = JAN + 40 * DAY
    seat = validate_event({"transaction_id": "s1", "external_subscription_id": "a", "code": "seats",
                           "timestamp": (JAN - 20 * DAY) // 1_000_000, "properties": {"user_id": "u1"}}, processed)
    backend.warehouse.insert_events([seat], processed)  # added in December, arrived in February
    probe = [ArrivalProbe("jan-a", "a", JAN, FEB, processed - 1)]
    assert backend.warehouse.windows_with_arrivals(probe) == set()  # tokens-like: only the window counts
    assert backend.warehouse.windows_with_arrivals(probe, ["seats"]) == {"jan-a"}  # seats carry into January
    assert backend.warehouse.windows_with_arrivals(probe, ["other"]) == set()
