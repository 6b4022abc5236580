"""The usage event: parsing and validating Lago-compatible payloads, exactly.

This is the hot path of ingest (tens of thousands of events a second), so it validates plain
dicts by hand instead of through pydantic models: the rules are few and each error must name
its field with Lago's error codes. Quantities never pass through float: a JSON number with a
fraction is re-read from the original text as a Decimal, and stored as that text (see
`_parse_body` and `jsonbody.storable`).

What ingest accepts, process and the warehouse can store and the usage query can sum: numbers
a metric reads are checked against the numeric domain (`meterline.core.numbers`), every other
property value against what can be stored at all (`jsonbody.storable`), and ids against what
`GET /events/{transaction_id}` can fetch. "200" means "will be counted, exactly".
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from typing import Any

import orjson

from meterline.core.clock import iso_ms
from meterline.core.errors import MalformedInput, ValidationFailed
from meterline.core.jsonbody import (
    STORABLE_CHECKED_TYPES,
    InexactNumber,
    Path,
    UnreadableText,
    Unstorable,
    has_float,
    read_json_exact,
    read_json_fast,
    storable,
)
from meterline.core.numbers import INT64_MAX, INT64_MIN, decimal_text, number_error

MAX_BATCH = 100  # Lago's limit for /events/batch
_MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z, the end of BigQuery's TIMESTAMP range
_TIMESTAMP_RE = re.compile(r"\d+(\.\d+)?")
_ID_MAX = 255
# NOTE: an id with a control character (a newline, NUL...) is refused: it cannot be fetched by
# GET /events/{transaction_id} (the router refuses it) and NUL separates the dedup key's halves
# (`Event.key_text`). A transaction_id with "/" cannot be fetched either: it would be two path
# segments. Lago accepts both; nobody means them.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def addressable(value: str) -> bool:
    """Whether an id can be one segment of a URL path: no "/" and no control character (the
    rule for transaction ids here and for catalog codes and external_ids in core.fields)."""
    return "/" not in value and not _CONTROL_CHARACTER.search(value)

# The event properties billing can read (a metric's field_name, a filter's keys): the usage SQL
# reads each through a JSONPath ('$.name', `meterline.adapters.sql.json_path`), where a dot, a
# bracket, a space or a quote would read another property or none. One rule, here, for the
# catalog's models (`core.fields.PropertyName`: the API and `catalog apply`) and the SQL alike,
# so a name the API accepts is a name billing can use. (Here, not in core.fields: the SQL
# adapters are imported by functions that never load pydantic.)
PROPERTY_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_\-]*"
_PROPERTY_NAME = re.compile(PROPERTY_NAME_PATTERN)
_PROPERTY_NAME_MAX = 255


def is_property_name(name: object) -> bool:
    """Whether billing can read an event property of this name (PROPERTY_NAME_PATTERN)."""
    return isinstance(name, str) and len(name) <= _PROPERTY_NAME_MAX and _PROPERTY_NAME.fullmatch(name) is not None


def property_name_error(name: object) -> str:
    """Why `name` is not one (for an error message)."""
    return (f"property name {name!r} must match {PROPERTY_NAME_PATTERN} (at most {_PROPERTY_NAME_MAX} characters) "
            "to be read from events")


# How deep properties may nest, the properties object included: far more than any event needs,
# and far under the 254 levels orjson writes (the message and the answer wrap properties in 3).
MAX_PROPERTY_DEPTH = 32
# The event's fields, to name one in an error (anything else is reported as "event").
_FIELDS = frozenset({"transaction_id", "external_subscription_id", "code", "timestamp", "properties",
                     "precise_total_amount_cents"})
# lago_id is derived from the dedup key, so a retried event answers with the same id.
_LAGO_ID_NS = uuid.UUID("6f3a1c2e-9b7d-4e4a-8c1f-5d2b7a9e0c31")
_LAGO_ID_NS_BYTES = _LAGO_ID_NS.bytes

# A function that, given an event code, names the property that must be numeric (or None).
NumericFieldLookup = Callable[[str], "str | None"]


def decode_json(body: bytes) -> Any:
    """Parse a request body exactly: numbers with a fraction become Decimals with the client's digits."""
    data = read_json_fast(body)
    return read_json_exact(body) if has_float(data) else data


def _parse_body(parse: Callable[..., Any], body: bytes, received_at_us: int, numeric_field: NumericFieldLookup | None) -> Any:
    """Decode and validate; the body is read a second time, exactly, only if validation met a
    float where it matters (a timestamp, an amount, a property, an id). Most bodies hold none,
    and this spares them a walk over every value (measured: 6-10% of a batch's CPU)."""
    try:
        try:
            return parse(read_json_fast(body), received_at_us, numeric_field)
        except InexactNumber:
            return parse(read_json_exact(body), received_at_us, numeric_field)
    except UnreadableText as failure:
        raise ValidationFailed(_unreadable_details(failure.path, batch=parse is parse_batch)) from None


def _unreadable_details(path: Path, *, batch: bool) -> dict[str, Any]:
    """Lago's error_details for a lone surrogate at `path`: the event field that holds it."""

    def field(rest: Path) -> str:
        head = rest[0] if rest else None
        return head if isinstance(head, str) and head in _FIELDS else "event"

    if not batch:
        return {field(path[1:]) if path[:1] == ("event",) else "event": ["invalid_format"]}
    if len(path) >= 2 and path[0] == "events" and type(path[1]) is int:
        return {str(path[1]): {field(path[2:]): ["invalid_format"]}}
    return {"events": ["invalid_format"]}


def _parse_timestamp(value: Any) -> int | None:
    """Unix seconds (int, decimal string, or exact decimal) -> microseconds, or None if invalid.

    Digits beyond the microsecond are truncated: BigQuery's TIMESTAMP holds microseconds.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seconds = Decimal(value)
    elif isinstance(value, Decimal):
        seconds = value
    elif isinstance(value, str) and _TIMESTAMP_RE.fullmatch(value):
        seconds = Decimal(value)
    else:
        return None
    if seconds < 0 or seconds > _MAX_TIMESTAMP_S:
        return None
    return int(seconds * 1_000_000)


@dataclass(frozen=True, slots=True)
class Event:
    """One validated usage event. `timestamp_us` is exact microseconds since the epoch (UTC)."""

    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp_us: int
    properties: dict[str, Any]
    precise_total_amount_cents: str | None
    timestamp_given: bool
    received_at_us: int
    # The payload hash, computed on first use: process needs it at every step (in-message
    # duplicates, the claim, the row), ingest never.
    _hash: str | None = dataclass_field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """The dedup key: an event is counted once per (subscription, transaction)."""
        return (self.external_subscription_id, self.transaction_id)

    @property
    def key_text(self) -> str:
        """The dedup key as one string (NUL cannot occur in an id, so the join is unambiguous):
        the name behind lago_id, the Firestore claim's document id and BigQuery's insertId."""
        return f"{self.external_subscription_id}\x00{self.transaction_id}"

    @property
    def lago_id(self) -> str:
        return uuid5_text(self.key_text)

    def payload_hash(self) -> str:
        """What decides whether a reused key is a retry (same hash) or a conflict (different).

        A timestamp the server filled in is left out: a retry of an event sent without a
        timestamp arrives later and must still count as the same event.
        """
        if self._hash is not None:
            return self._hash
        canonical = orjson.dumps(
            [
                self.code,
                self.timestamp_us if self.timestamp_given else None,
                self.properties,
                self.precise_total_amount_cents,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        digest = hashlib.sha256(canonical).hexdigest()[:32]
        object.__setattr__(self, "_hash", digest)  # frozen: memoised, not changed
        return digest

    def to_message(self) -> dict[str, Any]:
        """The compact form carried inside a Pub/Sub message."""
        return {
            "t": self.transaction_id,
            "s": self.external_subscription_id,
            "c": self.code,
            "ts": self.timestamp_us,
            "p": self.properties,
            "a": self.precise_total_amount_cents,
            "g": self.timestamp_given,
            "r": self.received_at_us,
        }

    @classmethod
    def from_message(cls, m: Mapping[str, Any]) -> Event:
        return cls(m["t"], m["s"], m["c"], int(m["ts"]), dict(m["p"]), m["a"], bool(m["g"]), int(m["r"]))

    def to_lago(self) -> dict[str, Any]:
        """The event as Lago's API answers it."""
        return {
            "lago_id": self.lago_id,
            "transaction_id": self.transaction_id,
            "lago_customer_id": None,
            "code": self.code,
            "timestamp": iso_ms(self.timestamp_us),
            "precise_total_amount_cents": self.precise_total_amount_cents,
            "properties": self.properties,
            "lago_subscription_id": None,
            "external_subscription_id": self.external_subscription_id,
            "created_at": _receipt_iso_ms(self.received_at_us),
        }


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(_LAGO_ID_NS, name))`, computed directly (6x faster than the stdlib): it runs for every event answered."""
    x = hashlib.sha1(_LAGO_ID_NS_BYTES + name.encode()).hexdigest()
    # Version 5 in the 13th hex digit; the RFC 4122 variant (10xx) in the top bits of the 17th.
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT_DIGIT[x[16]]}{x[17:20]}-{x[20:32]}"


_VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


# A request's events share their receipt time: its text is made once per request, not per event.
_receipt_iso_ms = functools.lru_cache(maxsize=256)(iso_ms)


def _required_id(raw: Mapping[str, Any], field: str, errors: dict[str, list[str]]) -> str:
    """An id that is not a plain printable string of 1 to 255 characters (validate_event checks
    that common case inline): a numeric id, an id with characters `isprintable` doubts, or an error."""
    value = raw.get(field)
    if type(value) is float:
        raise InexactNumber()  # orjson reads an integer beyond 64 bits as a float
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # Lago stores ids as text, so a numeric id is accepted as its digits
    if value is None or value == "":
        errors[field] = ["value_is_mandatory"]
        return ""
    if not isinstance(value, str):
        errors[field] = ["invalid_type"]
        return ""
    if len(value) > _ID_MAX:
        errors[field] = ["value_is_too_long"]
        return ""
    if _CONTROL_CHARACTER.search(value) or (field == "transaction_id" and "/" in value):
        errors[field] = ["invalid_format"]
        return ""
    return value


def validate_event(raw: Any, received_at_us: int, numeric_field: NumericFieldLookup | None = None) -> Event:
    """Validate one event object; raises `ValidationFailed` with Lago's `error_details`."""
    if not isinstance(raw, dict):
        raise ValidationFailed({"event": ["invalid_type"]})
    errors: dict[str, list[str]] = {}
    # Each check starts with the common case, inline: this runs for every event (a batch of
    # 100 costs a few hundred µs), and the helpers handle everything else.
    # isprintable() is one C call: False for every control character (and for a few harmless
    # ones, such as a no-break space, which _required_id then accepts).
    transaction_id = raw.get("transaction_id")
    if (type(transaction_id) is not str or not 0 < len(transaction_id) <= _ID_MAX
            or not transaction_id.isprintable() or "/" in transaction_id):
        transaction_id = _required_id(raw, "transaction_id", errors)
    subscription_id = raw.get("external_subscription_id")
    if type(subscription_id) is not str or not 0 < len(subscription_id) <= _ID_MAX or not subscription_id.isprintable():
        subscription_id = _required_id(raw, "external_subscription_id", errors)
    code = raw.get("code")
    if type(code) is not str or not 0 < len(code) <= _ID_MAX or not code.isprintable():
        code = _required_id(raw, "code", errors)

    ts_raw = raw.get("timestamp")
    timestamp_given = ts_raw is not None and ts_raw != ""
    timestamp_us = received_at_us
    if type(ts_raw) is int and 0 <= ts_raw <= _MAX_TIMESTAMP_S:
        timestamp_us = ts_raw * 1_000_000  # whole seconds, the usual form
    elif type(ts_raw) is float:
        raise InexactNumber()
    elif timestamp_given:
        parsed = _parse_timestamp(ts_raw)
        if parsed is None:
            errors["timestamp"] = ["invalid_format"]
        else:
            timestamp_us = parsed

    given = properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors["properties"] = ["invalid_type"]
        properties = {}
    else:
        for item in properties.values():  # a plain loop: cheaper than any() over a generator
            kind = type(item)
            # Strings, bools and 64-bit ints (the usual values) are stored as they are.
            if kind in STORABLE_CHECKED_TYPES and (kind is not int or not INT64_MIN <= item <= INT64_MAX):
                try:  # nested values, exact decimals, a big int, or a float (raises InexactNumber)
                    properties = storable(properties, MAX_PROPERTY_DEPTH, floats=False)
                except Unstorable as unstorable:
                    errors["properties"] = [unstorable.code]
                    properties = {}
                break

    amount = raw.get("precise_total_amount_cents")
    if type(amount) is float:
        raise InexactNumber()
    if amount is not None:
        problem = number_error(amount)
        if problem is not None:
            errors["precise_total_amount_cents"] = [problem]
        elif type(amount) is Decimal:
            amount = decimal_text(amount)  # 1E+2 is stored as "100": the NUMERIC column's form
        else:
            amount = str(amount)

    # The value a metric of the catalog sums (or takes the max or latest of) must be a number of
    # the domain. The stored form is checked first: a Decimal of the domain is stored as its
    # positional text, which one regular expression accepts (the usual case, and cheaper than
    # the Decimal). Any other is judged as given: "1E+400" would only say "not a number".
    if numeric_field is not None and code and "properties" not in errors:
        field = numeric_field(code)
        if field is not None and field in properties and (stored := number_error(properties[field])) is not None:
            as_given = number_error(given[field]) if isinstance(given, dict) else None
            errors["properties"] = [as_given or stored]

    if errors:
        raise ValidationFailed(errors)
    return Event(transaction_id, subscription_id, code, timestamp_us, properties, amount, timestamp_given, received_at_us)


def parse_single(body: Any, received_at_us: int, numeric_field: NumericFieldLookup | None = None) -> Event:
    """`POST /api/v1/events`: `{"event": {...}}`."""
    if not isinstance(body, dict) or body.get("event") is None:
        raise MalformedInput({"event": ["value_is_mandatory"]}, "BadRequest: param is missing or the value is empty: event")
    return validate_event(body["event"], received_at_us, numeric_field)


def parse_batch(body: Any, received_at_us: int, numeric_field: NumericFieldLookup | None = None) -> list[Event]:
    """`POST /api/v1/events/batch`: `{"events": [...]}`, all or nothing, at most 100 events."""
    if not isinstance(body, dict) or body.get("events") is None:
        raise MalformedInput({"events": ["value_is_mandatory"]}, "BadRequest: param is missing or the value is empty: events")
    raw_events = body["events"]
    if not isinstance(raw_events, list):
        raise ValidationFailed({"events": ["invalid_type"]})
    if not raw_events:
        raise ValidationFailed({"events": ["no_events"]})
    if len(raw_events) > MAX_BATCH:
        raise ValidationFailed({"events": ["too_many_events"]})
    events: list[Event] = []
    errors: dict[str, Any] = {}
    for index, raw in enumerate(raw_events):
        try:
            events.append(validate_event(raw, received_at_us, numeric_field))
        except ValidationFailed as failure:
            errors[str(index)] = failure.details
    if errors:
        raise ValidationFailed(errors)
    return events


def parse_single_body(body: bytes, received_at_us: int, numeric_field: NumericFieldLookup | None = None) -> Event:
    """`POST /api/v1/events` from the raw body: `parse_single(decode_json(body))`, faster."""
    return _parse_body(parse_single, body, received_at_us, numeric_field)


def parse_batch_body(body: bytes, received_at_us: int, numeric_field: NumericFieldLookup | None = None) -> list[Event]:
    """`POST /api/v1/events/batch` from the raw body: `parse_batch(decode_json(body))`, faster."""
    return _parse_body(parse_batch, body, received_at_us, numeric_field)
