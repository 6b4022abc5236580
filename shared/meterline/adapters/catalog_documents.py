"""The catalog as documents, for both catalog stores (SQLite and Firestore), which keep the
same text: a stored object is its model's `to_document()` (its Lago definition and its
timestamps) as JSON, and a subscription history is its records' `to_lago()` as one JSON array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import orjson

from meterline.core.catalog import Stamped, Subscription

__all__ = ["dump_document", "dump_records", "load_document", "load_records"]

S = TypeVar("S", bound=Stamped)


def dump_document(model: Stamped) -> str:
    return orjson.dumps(model.to_document()).decode()


def load_document(model: type[S], text: str | bytes) -> S:
    return model.from_document(orjson.loads(text))


def dump_records(records: Sequence[Subscription]) -> str:
    return orjson.dumps([r.to_lago() for r in records]).decode()


def load_records(text: str | bytes) -> tuple[Subscription, ...]:
    return tuple(Subscription.model_validate(r) for r in orjson.loads(text))
