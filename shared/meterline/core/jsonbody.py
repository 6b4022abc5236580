"""Reading a JSON request body: fast, and exact when it has to be (one place for both).

orjson is about ten times the stdlib's speed but reads `0.1` as a binary float and an integer
beyond 64 bits as a float too (18446744073709551616 -> 1.8446744073709552e+19); the stdlib
with `parse_float=Decimal` keeps the client's digits.

What no reading lets through, because it would crash later, when the value is written out:
- NaN, Infinity, -Infinity: not JSON (RFC 8259), though the stdlib reads them. 400, as any
  text that is not JSON.
- a lone UTF-16 surrogate ("\\ud800", or its raw bytes, which the stdlib decodes with
  "surrogatepass"): it reads as a Python str that no encoder writes. 422 naming the field
  (`UnreadableText`), since the JSON itself is well-formed.
- a body in UTF-16 or UTF-32: 400 `invalid_encoding` (JSON between systems is UTF-8).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from meterline.core.errors import MalformedInput, ValidationFailed
from meterline.core.numbers import INT64_MAX, INT64_MIN, decimal_text

# A surrogate escape (\uD800-\uDFFF) or a raw surrogate in (invalid) UTF-8: only a body that
# holds one is searched for lone surrogates. A valid pair ("\ud83d\ude00") matches too, and
# is then found to be whole.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")

Path = tuple[str | int, ...]


class InexactNumber(Exception):
    """A float where the caller keeps the client's digits: read the body exactly
    (`read_json_exact`) and try again."""


class UnreadableText(ValidationFailed):
    """A string or key holding a lone surrogate. `path` leads from the body's root to it (to
    the object, for a key); the default details name it with a dotted path."""

    def __init__(self, path: Path):
        super().__init__({".".join(map(str, path)) or "body": ["invalid_format"]})
        self.path = path


class Unstorable(ValueError):
    """A value Meterline cannot store and answer exactly; `code` is the Lago error code."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def read_json(body: bytes) -> Any:
    """The body with every integer exact (floats only for numbers written with a fraction or
    an exponent). Re-reads with the stdlib only when orjson met a float, so rarely."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _stdlib(body, float)
    return _stdlib(body, float) if has_float(data) else data


def read_json_fast(body: bytes) -> Any:
    """orjson's reading, for the ingest hot path: a float may stand for a fraction or for an
    integer beyond 64 bits, so the caller raises `InexactNumber` where it keeps a number and
    reads again with `read_json_exact`. Integers within 64 bits are exact."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return read_json_exact(body)  # what orjson refuses: big integers, 1e400, a lone surrogate...


def read_json_exact(body: bytes) -> Any:
    """The stdlib's reading, with every fraction a Decimal of the client's digits."""
    return _stdlib(body, Decimal)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _stdlib(body: bytes, parse_float: Callable[[str], Any]) -> Any:
    # NOTE: the stdlib guesses UTF-16 and UTF-32 from the first bytes and decodes them with
    # "surrogatepass", so a lone surrogate would pass unseen (the byte search below knows only
    # UTF-8). JSON between systems is UTF-8 (RFC 8259 8.1): anything else is refused whole.
    if json.detect_encoding(body) not in ("utf-8", "utf-8-sig"):
        raise MalformedInput({"body": ["invalid_encoding"]}, "BadRequest: the body is not UTF-8 JSON")
    try:
        data = json.loads(body, parse_float=parse_float, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedInput({"body": ["invalid_json"]}, "BadRequest: the body is not valid JSON") from None
    # Two byte searches (memchr-fast) before the regular expression, which scans far slower.
    if (b"\\u" in body or b"\xed" in body) and _MAYBE_SURROGATE.search(body):
        _refuse_lone_surrogates(data)
    return data


def _whole(text: str) -> bool:
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse_lone_surrogates(data: Any) -> None:
    # Depth first, iterative (the stdlib reads up to ~1,000 levels). A dict's keys are checked
    # before anything below it, so a path never holds a broken key.
    stack: list[tuple[Path, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if type(value) is str:
            if not _whole(value):
                raise UnreadableText(path)
        elif type(value) is dict:
            if not all(_whole(k) for k in value):
                raise UnreadableText(path)
            stack.extend(((*path, k), v) for k, v in reversed(value.items()))
        elif type(value) is list:
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(value))))


def has_float(value: Any) -> bool:
    """Whether orjson's reading holds a float anywhere (so an exact reading could differ)."""
    # Iterative, on exact types (orjson returns plain dict/list/float): about 3x faster than
    # recursing through generators.
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
    return False


# The value types `storable` changes or looks into; any other (str, bool, None) and an int
# within 64 bits is stored as it is, so a hot path calls `storable` only when it meets one.
STORABLE_CHECKED_TYPES = frozenset({int, float, Decimal, dict, list})


def storable(value: Any, max_depth: int, floats: bool) -> Any:
    """A JSON value as Meterline stores it (the warehouse's JSON text, a catalog document), or
    `Unstorable` with the Lago code for what orjson and the stores cannot hold exactly:

    - an integer beyond 64 signed bits (orjson refuses to write it): value_is_out_of_range
    - more than `max_depth` nested objects and arrays (orjson writes at most 254 levels, the
      body's own included): value_is_too_deep
    - a non-finite number: value_is_not_valid_number

    A Decimal becomes its exact text (`numbers.decimal_text`). A float raises `InexactNumber`
    unless `floats` (a free-form catalog field keeps them: orjson writes a finite float back as
    its shortest text, the number it was read from).
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is dict or kind is list:
        if max_depth < 1:
            raise Unstorable("value_is_too_deep")
        depth = max_depth - 1
        if kind is dict:
            return {k: storable(v, depth, floats) for k, v in value.items()}
        return [storable(v, depth, floats) for v in value]
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise Unstorable("value_is_out_of_range")
    elif kind is Decimal:
        if not value.is_finite():
            raise Unstorable("value_is_not_valid_number")
        return decimal_text(value)
    elif kind is float:
        if not floats:
            raise InexactNumber()
        if not math.isfinite(value):
            raise Unstorable("value_is_not_valid_number")
    return value
