"""An event as a warehouse row and back: `events` and `rejected_events` (both warehouses).

Timestamps travel as ISO-8601 text with microseconds and amounts as decimal text, so no
value passes through a float on its way into either warehouse.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from meterline.core.clock import iso_us, to_us
from meterline.core.events import Event

if TYPE_CHECKING:
    from meterline.ports import Rejection


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
