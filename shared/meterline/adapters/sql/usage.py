"""The usage query's SQL: one BigQuery-dialect statement for a catalog, and its parameters.

Windows and charges are bound as arrays of STRUCT parameters, so one statement serves
thousands of subscriptions: the text grows only with the catalog (one CASE branch per charge
filter), which is small. DuckDB runs the same text through `meterline.adapters.sql.to_duckdb`.

Cost: the statement does not read `events_deduped`. That view ranks the rows of every key
with ROW_NUMBER over ALL of `events`, and a filter above a window function cannot prune
partitions, so every billing run would scan all history. Instead each branch below filters the
partitioned `events` table on `timestamp` (constant bounds, from parameters: BigQuery prunes
only on constant expressions) and on the billed subscriptions (clustering), and deduplicates
what it scanned with the view's own rule. That is exact because every copy of a key carries
the same payload, so the same code (the branches split by code) and, when the client gave it,
the same timestamp (see `DEDUP_SLACK_US` for the other case).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from meterline.adapters.sql import json_path, literal
from meterline.core.clock import to_us
from meterline.core.numbers import STORED_NUMBER_SQL_PATTERN

if TYPE_CHECKING:
    from meterline.core.catalog import BillableMetric
    from meterline.core.usage_query import QueryCharge, UsageQuery, UsageWindow

# NOTE: a timestamp the server filled in (the client sent none) is the time of receipt, and it
# is not part of the payload hash: a client's retry of such an event is a copy with a LATER
# timestamp. Both copies reach `events` only within the dedup claim's takeover window of the
# first claim (15 min, plus one attempt; later, the warehouse settles a resend:
# services/process.py). The scan reaches this far beyond the windows, so that dedup sees both
# copies and keeps the earlier-processed one, as `events_deduped` does; the windows' own bounds
# are applied after dedup. Without it, a retry across midnight at a period's end could be
# billed in both periods.
DEDUP_SLACK_US = 86_400 * 1_000_000  # one day: two more daily partitions per run

# The view's rule (events_deduped.sql), applied to what one branch scanned. Only the columns
# the statement reads: BigQuery bills by the column.
#
# The scan extracts each property the branch's metrics read into a column of its own, before
# the ranking: JSON_VALUE parses the whole properties text on every call, and reading a
# property where it was needed cost a parse per CASE branch and per aggregate. The ranking
# then carries those short columns instead of the text; the other branch's properties are
# added as NULL after it, which need not carry them (the UNION's branches must have the same
# columns). DuckDB, 10M events, with `_unique`: 12.5 -> 9.5 s of CPU on one thread.
# Extracting before deduplicating is exact: the kept row's columns are the same either way.
_DEDUPED_SCAN = """
  SELECT external_subscription_id, transaction_id, code, timestamp{columns}, {carry_over} AS carry_over
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (
        PARTITION BY external_subscription_id, transaction_id
        ORDER BY processed_at, received_at
      ) AS row_rank
    FROM (
      SELECT external_subscription_id, transaction_id, code, timestamp, processed_at, received_at{extracted}
      FROM events
      WHERE {where}
    )
  )
  WHERE row_rank = 1"""

# The same scan without the ranking, for a caller that knows `events` holds no two rows of one
# key up to the scan's end (DuckDbWarehouse checks it in the same snapshot): the ranking would
# keep every row, and on DuckDB it is half of the statement's time.
_PLAIN_SCAN = """
  SELECT external_subscription_id, transaction_id, code, timestamp{columns}, {carry_over} AS carry_over
  FROM (
      SELECT external_subscription_id, transaction_id, code, timestamp{extracted}
      FROM events
      WHERE {where}
  )"""

# NOTE: a value is a number to a metric only in Meterline's numeric domain (`core.numbers`:
# |x| < 10^18, at most 9 decimals), tested on its text before the cast. Ingest refuses any other
# where a metric reads it, but a value sent before its metric existed (or while ingest could
# not read the catalog) was stored unchecked: like "abc", it counts for nothing, and it can
# neither be rounded into a sum nor make one overflow, for this subscription or any other.
#
# NUMERIC(38, 9) is BigQuery's NUMERIC spelled out. Plain NUMERIC would be as exact on
# BigQuery, but a transpiler reads it as DECIMAL(18, 3) (bqemulator does), and quantities
# with more than three decimals would be truncated without a word.
_STATEMENT = """
WITH windows AS (
  SELECT w.window_id, w.sub, w.plan_code, TIMESTAMP_MICROS(w.start_us) AS start_at, TIMESTAMP_MICROS(w.end_us) AS end_at
  FROM UNNEST(@windows) AS w
),
charges AS (
  SELECT c.plan_code, c.charge_ref, c.metric_code
  FROM UNNEST(@charges) AS c
),
scanned AS ({scans}
),
matched AS (
  SELECT
    w.window_id,
    c.charge_ref,
    {bucket} AS bucket,
    {row_key} AS row_key,
    e.timestamp,
    {value} AS value_text,
    {unique_value} AS unique_value,
    {operation} AS operation_type
  FROM windows AS w
  JOIN scanned AS e
    ON e.external_subscription_id = w.sub
   AND e.timestamp < w.end_at
  JOIN charges AS c
    ON c.plan_code = w.plan_code
   AND c.metric_code = e.code
  WHERE e.carry_over OR e.timestamp >= w.start_at
),
numbered AS (
  SELECT
    *,
    SAFE_CAST(IF(REGEXP_CONTAINS(value_text, {number_pattern}), value_text, NULL) AS NUMERIC(38, 9)) AS value_number
  FROM matched
)
SELECT
  window_id,
  charge_ref,
  bucket,
  row_key,
  COUNT(*) AS events_count,
  SUM(value_number) AS sum_value,
  MAX(value_number) AS max_value,
  {unique_count} AS unique_count,
  MAX_BY(value_number, timestamp) AS latest_value,
  MIN(value_text) AS row_value,
  MIN(operation_type) AS row_operation,
  MIN(timestamp) AS row_timestamp
FROM numbered
GROUP BY window_id, charge_ref, bucket, row_key
"""


def _literals(values: Sequence[str]) -> str:
    return ", ".join(literal(v) for v in sorted(values))


# A run over more subscriptions than this reads nearly every clustered block anyway, and an
# IN list of thousands costs the engine more than it saves (DuckDB: 2.7 s of a 1M-row scan
# for 1,000 subscriptions), so only a narrow query (a page view, a few invoices) names them.
NARROW_SUBSCRIPTIONS = 200


def _seats(metric: BillableMetric) -> bool:
    """A metric whose events rating reads one by one, add or remove (`operation_type`)."""
    return metric.recurring and metric.aggregation_type == "unique_count"


def _read_properties(charges: Iterable[QueryCharge]) -> set[str]:
    """The event properties these charges read: their filters' keys, their metric's field, and
    the operation of a seat."""
    charges = tuple(charges)
    keys = {key for c in charges for flt in c.charge.filters for key in flt.values}
    keys.update(c.metric.field_name for c in charges if c.metric.field_name)
    keys.update("operation_type" for c in charges if _seats(c.metric))
    return keys


def _columns(query: UsageQuery) -> dict[str, str]:
    """Each property the statement reads -> the column the scans extract it into (a property's
    name may hold a dash, so it is not the column's name)."""
    return {key: f"property_{i}" for i, key in enumerate(sorted(_read_properties(query.charges)))}


def _deduped_scan(query: UsageQuery, codes: Sequence[str], *, carry_over: bool, narrow: bool, deduplicate: bool) -> str:
    columns = _columns(query)
    reads = _read_properties(c for c in query.charges if c.metric.code in codes)
    extracted = "".join(
        f",\n        JSON_VALUE(properties, {json_path(key)}) AS {column}" for key, column in columns.items() if key in reads
    )
    kept = "".join(f", {column}" if key in reads else f", CAST(NULL AS STRING) AS {column}" for key, column in columns.items())
    where = [
        "timestamp < TIMESTAMP_MICROS(@scan_to_us)",
        *(["external_subscription_id IN UNNEST(@subs)"] if narrow else []),
        f"code IN ({_literals(codes)})",
    ]
    if not carry_over:
        where.insert(0, "timestamp >= TIMESTAMP_MICROS(@scan_from_us)")
    template = _DEDUPED_SCAN if deduplicate else _PLAIN_SCAN
    return template.format(carry_over="TRUE" if carry_over else "FALSE", where="\n        AND ".join(where),
                           columns=kept, extracted=extracted)


def _scans(query: UsageQuery, narrow: bool, deduplicate: bool) -> str:
    """UNION ALL of the deduplicated scans: one bounded on both sides, one for carry-over."""
    metrics = {c.metric.code: c.metric for c in query.charges}
    # Recurring metrics carry over (seats added months ago, the GB already stored): their
    # events count from the beginning of time, so only their branch has no lower bound, and
    # the other metrics' branch still prunes to the windows' partitions.
    by_branch = {
        carry_over: [code for code, m in metrics.items() if m.recurring == carry_over] for carry_over in (False, True)
    }
    return "\n  UNION ALL".join(
        _deduped_scan(query, codes, carry_over=carry_over, narrow=narrow, deduplicate=deduplicate)
        for carry_over, codes in by_branch.items() if codes
    )


def _owner(c: QueryCharge) -> str:
    """The condition that a matched row belongs to this plan's charge."""
    return f"c.plan_code = {literal(c.plan_code)} AND c.charge_ref = {literal(c.charge.ref)}"


def _bucket(query: UsageQuery) -> str:
    columns = _columns(query)
    cases = []
    for c in query.charges:
        # NOTE: Lago bills an event under the matching filter with the most keys; events
        # that match no filter fall into the charge's own bucket.
        for flt in sorted(c.charge.filters, key=lambda f: (-len(f.values), f.key)):
            matches = " AND ".join(
                f"e.{columns[key]} IN ({_literals(values)})"
                for key, values in sorted(flt.values.items())
            )
            cases.append(f"WHEN {_owner(c)} AND {matches} THEN {literal(flt.key)}")
    return f"CASE {' '.join(cases)} ELSE '' END" if cases else "''"


def _row_key(query: UsageQuery) -> str:
    owners = [_owner(c) for c in query.charges if c.per_event]
    return f"IF(({') OR ('.join(owners)}), e.transaction_id, NULL)" if owners else "CAST(NULL AS STRING)"


def _value(query: UsageQuery) -> str:
    columns = _columns(query)
    fields = {c.metric.code: c.metric.field_name for c in query.charges if c.metric.field_name}
    cases = " ".join(f"WHEN {literal(code)} THEN e.{columns[field]}" for code, field in sorted(fields.items()))
    return f"CASE e.code {cases} END" if cases else "CAST(NULL AS STRING)"


def _operation(query: UsageQuery) -> str:
    # Rating reads the operation of a seat only (add or remove).
    if not any(_seats(c.metric) for c in query.charges):
        return "CAST(NULL AS STRING)"
    return f"e.{_columns(query)['operation_type']}"


def _unique(query: UsageQuery) -> tuple[str, str]:
    """The value a row adds to `unique_count`, and the aggregate: distinct values for the
    unique_count charges only (the others' count is 0). A DISTINCT aggregate costs the engine
    a hash table of every value it sees (DuckDB: a second pass over every matched row)."""
    owners = [_owner(c) for c in query.charges if c.metric.aggregation_type == "unique_count" and not c.per_event]
    if not owners:
        return "CAST(NULL AS STRING)", "0"
    return f"IF(({') OR ('.join(owners)}), value_text, NULL)", "COUNT(DISTINCT unique_value)"


def narrow(windows: Sequence[UsageWindow]) -> bool:
    """Whether the scan should name the windows' subscriptions (see NARROW_SUBSCRIPTIONS)."""
    return len({w.external_subscription_id for w in windows}) <= NARROW_SUBSCRIPTIONS


def statement(query: UsageQuery, narrow: bool = True, deduplicate: bool = True) -> str:
    """The BigQuery-dialect SQL for this query's catalog; `narrow` filters the scan on the
    windows' subscriptions (the clustering column) as well as on time. `deduplicate=False`
    only where no key has two rows in `events` before the scan's end (`_PLAIN_SCAN`)."""
    unique_value, unique_count = _unique(query)
    return _STATEMENT.format(scans=_scans(query, narrow, deduplicate), bucket=_bucket(query), row_key=_row_key(query), value=_value(query),
                             operation=_operation(query), unique_value=unique_value, unique_count=unique_count,
                             number_pattern=literal(STORED_NUMBER_SQL_PATTERN))


def params(query: UsageQuery, windows: Sequence[UsageWindow]) -> dict[str, Any]:
    """The statement's parameters for these windows."""
    # Arrays of structs, not parallel arrays zipped by offset: one value per window keeps
    # the binding obviously right (and bqemulator mis-indexes `@array[OFFSET(pos)]`).
    bound: list[dict[str, Any]] = [
        {"window_id": w.window_id, "sub": w.external_subscription_id, "plan_code": w.plan_code,
         "start_us": to_us(w.start), "end_us": to_us(w.end)}
        for w in windows
    ]
    return {
        "windows": bound,
        "charges": [{"plan_code": c.plan_code, "charge_ref": c.charge.ref, "metric_code": c.metric.code} for c in query.charges],
        **({"subs": sorted({w.external_subscription_id for w in windows})} if narrow(windows) else {}),
        # Scalars, not subqueries over @windows: BigQuery prunes partitions only on constants.
        "scan_from_us": min(b["start_us"] for b in bound) - DEDUP_SLACK_US,
        "scan_to_us": max(b["end_us"] for b in bound) + DEDUP_SLACK_US,
    }

