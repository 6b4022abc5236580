"""Values derived from immutable catalog objects, remembered by identity.

Rating derives the same things (tier tables, charge slots) from the same frozen plan objects
for thousands of subscriptions in a billing run. Looking them up by `id()` is a dict read;
hashing a pydantic model or a tuple of models would cost more than the work saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["ByIdentity"]

V = TypeVar("V")


class ByIdentity(Generic[V]):
    """`cache.get(obj, derive, *args)`: `derive(obj, *args)`, computed once per object (the
    extra arguments must be the same for every call with that object).

    The object is kept in its entry, so its id cannot be reused by another object while the
    value is cached; the whole cache is dropped when it reaches `limit` entries.
    """

    def __init__(self, limit: int):
        self._entries: dict[int, tuple[Any, V]] = {}
        self._limit = limit

    def get(self, obj: Any, derive: Callable[..., V], *args: Any) -> V:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = derive(obj, *args)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(obj)] = (obj, value)
        return value
