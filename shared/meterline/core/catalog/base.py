"""What every stored catalog object shares: a stable `lago_id` and the store's timestamps.

Every object answers a stable `lago_id`, a uuid5 of its kind and natural key (`lago_id`), so
it is the same on every backend and after a restore; subscription records store theirs
(`meterline.core.subscriptions`). `created_at`/`updated_at` are the store's to set
(`Stamped`): they are never part of a request or of `to_lago()`, which stays the object's
definition (what a client sends, what `catalog apply` compares); answers, stamps included,
are rendered by `meterline.entrypoints.lago`. See docs/lago-compatibility.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import PrivateAttr

from meterline.core.clock import iso_ms
from meterline.core.fields import STORED, stamp_time
from meterline.core.lago_model import LagoModel

__all__ = ["UNKNOWN_TIME", "Stamped", "lago_id"]


# NOTE: never change this namespace: every lago_id a client has stored derives from it.
_CATALOG_ID_NS = uuid.UUID("0c6f2b4e-51a7-4d8e-9a36-7e1f0b9d2c58")


def lago_id(kind: str, *key: str) -> str:
    """The lago_id of a catalog object: a uuid5 of its kind and natural key, e.g.
    lago_id("plan", "starter") or lago_id("charge", plan_code, charge_ref).

    Derived, not stored, so it is the same on every backend, after a restore and for objects
    written before ids existed. The name is a JSON array, so no key text can make two
    different (kind, key) pairs collide. (Events have their own namespace: core.events.)
    """
    return str(uuid.uuid5(_CATALOG_ID_NS, json.dumps([kind, *key], ensure_ascii=False)))


# Answered for an object stored before Meterline kept timestamps, until it is next written:
# a fixed instant that says "unknown", never a time invented at read time.
UNKNOWN_TIME = "1970-01-01T00:00:00.000Z"


class Stamped(LagoModel):
    """A catalog object the store keeps with its timestamps.

    The stamps are private attributes, not fields: a request cannot set them (they are unknown
    fields there), `to_lago()` leaves them out, and only a store sets them (`with_stamps`),
    keeping created_at from the first write and moving updated_at when the definition changes.
    """

    _created_at: datetime | None = PrivateAttr(None)
    _updated_at: datetime | None = PrivateAttr(None)

    @property
    def created_at(self) -> datetime | None:
        return self._created_at

    @property
    def updated_at(self) -> datetime | None:
        return self._updated_at

    def with_stamps(self, created_at: datetime | None, updated_at: datetime | None) -> Self:
        copy = self.model_copy()
        copy._created_at, copy._updated_at = created_at, updated_at
        return copy

    def stamped_over(self, stored: Self | None, now: datetime) -> Self:
        """This definition as a store writes it over `stored` (None: a create): `stored`
        itself when nothing changed (so updated_at moves only on a real change), else with
        stored's created_at and updated_at = now."""
        if stored is not None and stored.to_lago() == self.to_lago():
            return stored
        now = stamp_time(now)
        created = stored.created_at if stored is not None and stored.created_at is not None else now
        return self.with_stamps(created, now)

    def to_document(self) -> dict[str, Any]:
        """What a store keeps: the Lago definition and the stamps."""
        doc = self.to_lago()
        for name, value in (("created_at", self._created_at), ("updated_at", self._updated_at)):
            if value is not None:
                doc[name] = iso_ms(value)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Self:
        data = dict(doc)
        stamps = [data.pop(name, None) for name in ("created_at", "updated_at")]
        created, updated = (None if s is None else datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)
        # STORED: an object stored before a rule existed still loads (core.fields.STORED).
        return cls.model_validate(data, context=STORED).with_stamps(created, updated)
