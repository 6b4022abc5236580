"""Event <-> warehouse row, shared by the BigQuery and DuckDB adapters.

Timestamps travel as ISO-8601 text with microseconds and amounts as decimal text, so no
value passes through a float on its way into either warehouse.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson

from meterline.core.events import Event
from meterline.ports import Rejection


def iso_us(us: int) -> str:
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{us % 1_000_000:06d}Z"


def to_us(value: Any) -> int:
    """A timestamp read back from a warehouse (datetime, or ISO text) -> exact microseconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _payload_columns(event: Event) -> dict[str, Any]:
    """The columns `events` and `rejected_events` share."""
    return {
        "external_subscription_id": event.external_subscription_id,
        "transaction_id": event.transaction_id,
        "code": event.code,
        "timestamp": iso_us(event.timestamp_us),
        "properties": orjson.dumps(event.properties).decode(),
        "precise_total_amount_cents": event.precise_total_amount_cents,
        "payload_hash": event.payload_hash(),
        "received_at": iso_us(event.received_at_us),
    }


def event_row(event: Event, processed_at_us: int) -> dict[str, Any]:
    return {**_payload_columns(event), "timestamp_given": event.timestamp_given, "processed_at": iso_us(processed_at_us)}


def rejected_row(rejection: Rejection, rejected_at_us: int) -> dict[str, Any]:
    return {**_payload_columns(rejection.event), "reason": rejection.reason, "rejected_at": iso_us(rejected_at_us)}


def _amount_text(value: Any) -> str | None:
    if value is None:
        return None
    # normalize() drops the warehouse's padding (1.500000000 -> 1.5) without changing the value.
    text = format(Decimal(value).normalize(), "f")
    return text


def event_from_row(row: dict[str, Any]) -> Event:
    return Event(
        transaction_id=row["transaction_id"],
        external_subscription_id=row["external_subscription_id"],
        code=row["code"],
        timestamp_us=to_us(row["timestamp"]),
        properties=orjson.loads(row["properties"]),
        precise_total_amount_cents=_amount_text(row["precise_total_amount_cents"]),
        timestamp_given=bool(row["timestamp_given"]),
        received_at_us=to_us(row["received_at"]),
    )


class DedupedReads:
    """Reads through `events_deduped`, in BigQuery SQL; shared by every Warehouse adapter."""

    def query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        rows = self.query(
            "SELECT * FROM events_deduped WHERE external_subscription_id = @sub AND transaction_id = @txn",
            {"sub": external_subscription_id, "txn": transaction_id},
        )
        return event_from_row(rows[0]) if rows else None

    def list_events(self, external_subscription_id: str, limit: int, offset: int) -> tuple[list[Event], int]:
        rows = self.query(
            "SELECT *, COUNT(*) OVER () AS total_count FROM events_deduped WHERE external_subscription_id = @sub "
            "ORDER BY timestamp DESC, transaction_id LIMIT @limit OFFSET @offset",
            {"sub": external_subscription_id, "limit": limit, "offset": offset},
        )
        if rows:
            return [event_from_row(r) for r in rows], int(rows[0]["total_count"])
        # A page past the end has no row to carry the total.
        count = self.query(
            "SELECT COUNT(*) AS n FROM events_deduped WHERE external_subscription_id = @sub",
            {"sub": external_subscription_id},
        )
        return [], int(count[0]["n"])
