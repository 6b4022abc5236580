"""Event <-> warehouse row, shared by the BigQuery and DuckDB adapters.

Timestamps travel as ISO-8601 text with microseconds and amounts as decimal text, so no
value passes through a float on its way into either warehouse.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from meterline.adapters.sql import json_path, usage
from meterline.core.clock import iso_us, to_us
from meterline.core.events import Event
from meterline.ports import Rejection, SubscriptionTotal, UsageRow

if TYPE_CHECKING:
    from meterline.services.usage_query import UsageQuery, UsageWindow


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
    """The Warehouse port's typed reads, each one BigQuery SQL over deduplicated rows; shared by
    every Warehouse adapter, which supplies `_query`."""

    def _query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run BigQuery-dialect SQL with `@name` parameters; rows as dicts."""
        raise NotImplementedError

    def usage_rows(self, query: UsageQuery, windows: Sequence[UsageWindow]) -> list[UsageRow]:
        # The statement's columns are UsageRow's fields, in its types on both engines.
        return [UsageRow(**row) for row in self._query(usage.statement(query), usage.params(query, windows))]

    def totals(self, code: str, field: str) -> list[SubscriptionTotal]:
        rows = self._query(
            "SELECT external_subscription_id, COUNT(*) AS events, "
            f"SUM(SAFE_CAST(JSON_VALUE(properties, {json_path(field)}) AS NUMERIC(38, 9))) AS total "
            "FROM events_deduped WHERE code = @code GROUP BY external_subscription_id ORDER BY external_subscription_id",
            {"code": code},
        )
        return [SubscriptionTotal(r["external_subscription_id"], int(r["events"]), Decimal(r["total"] or 0)) for r in rows]

    def count_rejected(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM rejected_events_deduped")[0]["n"])

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        rows = self._query(
            "SELECT * FROM events_deduped WHERE external_subscription_id = @sub AND transaction_id = @txn",
            {"sub": external_subscription_id, "txn": transaction_id},
        )
        return event_from_row(rows[0]) if rows else None

    def list_events(self, external_subscription_id: str, limit: int, offset: int) -> tuple[list[Event], int]:
        rows = self._query(
            "SELECT *, COUNT(*) OVER () AS total_count FROM events_deduped WHERE external_subscription_id = @sub "
            "ORDER BY timestamp DESC, transaction_id LIMIT @limit OFFSET @offset",
            {"sub": external_subscription_id, "limit": limit, "offset": offset},
        )
        if rows:
            return [event_from_row(r) for r in rows], int(rows[0]["total_count"])
        # A page past the end has no row to carry the total.
        count = self._query(
            "SELECT COUNT(*) AS n FROM events_deduped WHERE external_subscription_id = @sub",
            {"sub": external_subscription_id},
        )
        return [], int(count[0]["n"])
