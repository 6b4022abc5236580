"""The warehouse's typed reads, each one BigQuery-dialect statement over deduplicated rows,
shared by both warehouses (BigQuery runs it, DuckDB transpiles it)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from meterline.adapters.sql import json_path, report_query, usage
from meterline.adapters.sql.event_rows import event_from_row
from meterline.core import reports
from meterline.core.errors import ValidationFailed
from meterline.core.usage_query import UsageRow
from meterline.ports import ArrivalProbe, SubscriptionTotal

if TYPE_CHECKING:
    from meterline.core.events import Event
    from meterline.core.reports import Month
    from meterline.core.usage_query import UsageQuery, UsageWindow


class DedupedReads:
    """The typed reads of the EventStore and UsageReader ports, each one BigQuery SQL over
    deduplicated rows; shared by every Warehouse adapter, which supplies `_query`."""

    def _query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run BigQuery-dialect SQL with `@name` parameters; rows as dicts."""
        raise NotImplementedError

    def usage_rows(self, query: UsageQuery, windows: Sequence[UsageWindow]) -> list[UsageRow]:
        # The statement's columns are UsageRow's fields, in its types on both engines.
        statement = usage.statement(query, narrow=usage.narrow(windows))
        return [UsageRow(**row) for row in self._query(statement, usage.params(query, windows))]

    def totals(self, code: str, field: str) -> list[SubscriptionTotal]:
        rows = self._query(
            "SELECT external_subscription_id, COUNT(*) AS events, "
            f"SUM(SAFE_CAST(JSON_VALUE(properties, {json_path(field)}) AS NUMERIC(38, 9))) AS total "
            "FROM events_deduped WHERE code = @code GROUP BY external_subscription_id ORDER BY external_subscription_id",
            {"code": code},
        )
        return [SubscriptionTotal(r["external_subscription_id"], int(r["events"]), Decimal(r["total"] or 0)) for r in rows]

    def report(self, name: str, month: Month | None = None) -> list[dict[str, Any]]:
        spec = reports.get(name)
        if spec.monthly and month is None:
            raise ValidationFailed({"month": ["value_is_mandatory"]}, f"the {name} report is monthly: give a month")
        params = month.params() if spec.monthly and month is not None else None
        return reports.typed_rows(spec, self._query(report_query(name), params))

    def count_rejected(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM rejected_events_deduped")[0]["n"])

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        rows = self._query(
            "SELECT * FROM events_deduped WHERE external_subscription_id = @sub AND transaction_id = @txn",
            {"sub": external_subscription_id, "txn": transaction_id},
        )
        return event_from_row(rows[0]) if rows else None

    def stored_keys(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        # `subs` is a constant list, so BigQuery can skip the blocks of other subscriptions
        # (the table is clustered by it); the key has no timestamp to prune partitions with.
        rows = self._query(
            "SELECT DISTINCT e.external_subscription_id, e.transaction_id FROM events AS e, UNNEST(@keys) AS k "
            "WHERE e.external_subscription_id IN UNNEST(@subs) "
            "AND e.external_subscription_id = k.sub AND e.transaction_id = k.txn",
            {"keys": [{"sub": s, "txn": t} for s, t in keys], "subs": sorted({s for s, _ in keys})},
        )
        return {(r["external_subscription_id"], r["transaction_id"]) for r in rows}

    def windows_with_arrivals(self, probes: Sequence[ArrivalProbe], carry_over_codes: Sequence[str] = ()) -> set[str]:
        if not probes:
            return set()
        slack = usage.DEDUP_SLACK_US  # a copy just outside a window can still change its dedup
        bound: list[dict[str, Any]] = [{"window_id": p.window_id, "sub": p.external_subscription_id, "start_us": p.start_us - slack,
                  "end_us": p.end_us + slack, "since_us": p.since_us} for p in probes]
        # Only subscription, timestamp and processed_at are read (~36 bytes an event, where the
        # usage query reads ~160), and the scalar bounds let BigQuery prune partitions. Events
        # of recurring metrics count from before a window (seats added months ago), so, as in
        # the usage query, they have a branch of their own bounded only from above.
        select = ("SELECT p.window_id FROM events AS e JOIN UNNEST(@probes) AS p ON e.external_subscription_id = p.sub "
                  "WHERE e.timestamp < TIMESTAMP_MICROS(@scan_to_us) AND e.timestamp < TIMESTAMP_MICROS(p.end_us) "
                  "AND e.processed_at >= TIMESTAMP_MICROS(p.since_us) AND ")
        branches = [select + "e.timestamp >= TIMESTAMP_MICROS(@scan_from_us) AND e.timestamp >= TIMESTAMP_MICROS(p.start_us)"]
        if carry_over_codes:
            branches.append(select + "e.code IN UNNEST(@carry_over)")
        rows = self._query(
            f"SELECT DISTINCT window_id FROM ({' UNION ALL '.join(branches)})",
            {"probes": bound, "scan_from_us": min(b["start_us"] for b in bound),
             "scan_to_us": max(b["end_us"] for b in bound),
             **({"carry_over": sorted(carry_over_codes)} if carry_over_codes else {})},
        )
        return {r["window_id"] for r in rows}

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
