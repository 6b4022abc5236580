"""CLI output: readable tables by default, CSV or JSON on request, progress on stderr."""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

FORMATS = ("table", "csv", "json")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):  # a report's list column (flags): its items, not Python's repr
        return ", ".join(_cell(v) for v in value)
    return str(value)


# OWASP's rule against CSV injection: a spreadsheet runs a cell that begins with one of these
# as a formula (`=HYPERLINK(...)`, `=cmd|...`, `@SUM(...)`), so such a text cell is written with a
# leading apostrophe, which the spreadsheet shows as text. A number keeps its sign: `-5` and
# `-1.25` (ints, Decimals, or their exact text) are written as they are, or finance's sums break.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> str:
    """One CSV cell: text that a spreadsheet would run as a formula is escaped; numbers never are."""
    text = _cell(value)
    if isinstance(value, (str, list, tuple)) and text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def readable(rows: Sequence[dict[str, Any]], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """Rows as a terminal table shows them, by each column's kind (`core.reports.Column`): `cents`
    as money with the row's `currency` (`1,234.56 USD`; grouped cents when the row names
    none), `decimal` grouped by thousands (at most four decimals). CSV and JSON are written from
    the rows themselves: cents stay integers beside the currency column."""
    from meterline.entrypoints.formatting import format_amount, format_units

    def shown(row: dict[str, Any], column: str, value: Any) -> Any:
        kind = kinds.get(column)
        if value is None or isinstance(value, bool):
            return value
        if kind == "cents":
            currency = row.get("currency")
            return f"{format_amount(value, currency)} {currency}" if currency else f"{value:,}"
        if kind == "decimal":
            return format_units(value)
        return value

    return [{c: shown(row, c, v) for c, v in row.items()} for row in rows]


# A cell a table aligns right: a number, possibly grouped, signed, or followed by its currency.
_NUMERIC_CELL = re.compile(r"-?\d[\d,]*(\.\d+)?( [A-Z]{3})?")


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str = "table") -> str:
    if fmt == "json":
        return orjson.dumps([{c: r.get(c) for c in columns} for r in rows], default=str, option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        buf = io.StringIO()
        # RFC 4180's CRLF: the writer then also quotes a cell holding a bare CR, which would
        # otherwise split its row in a spreadsheet.
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow([csv_cell(c) for c in columns])
        for r in rows:
            writer.writerow([csv_cell(r.get(c)) for c in columns])
        return buf.getvalue().removesuffix("\r\n")
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Iterable[str]) -> str:
        # Numbers align right, text left, as finance reads them.
        out = []
        for v, w in zip(values, widths, strict=True):
            numeric = _NUMERIC_CELL.fullmatch(v) is not None
            out.append(v.rjust(w) if numeric else v.ljust(w))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *(line(r) for r in cells)])


class Progress:
    """A one-line progress meter on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, stream=None):
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._last = 0.0
        self._start = time.monotonic()
        self._last_pct = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        pct = int(100 * self.done / self.total)
        if self._tty and now - self._last >= 0.1:
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({pct}%)")
            self.stream.flush()
            self._last = now
        elif not self._tty and pct // 25 > self._last_pct // 25:
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({pct}%)\n")
            self._last_pct = pct

    def finish(self) -> None:
        elapsed = time.monotonic() - self._start
        end = "\r" if self._tty else ""
        self.stream.write(f"{end}{self.label}: {self.done}/{self.total} done in {elapsed:.1f}s\n")
        self.stream.flush()
