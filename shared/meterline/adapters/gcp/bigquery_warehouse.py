"""The warehouse on BigQuery: streaming inserts with insertId, reads through the views.

The finance writes (`record_invoice`, `record_payment`) are `sql.finance.FinanceRecords`, shared with
DuckDB; their insertIds are the invoice id and version (and line ref), or the payment event id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from meterline.adapters import sql
from meterline.adapters.sql.event_rows import event_row, rejected_row
from meterline.adapters.sql.finance import FinanceRecords
from meterline.adapters.sql.reads import DedupedReads
from meterline.core.events import Event
from meterline.ports import Rejection

# BigQuery's advice for streaming inserts: at most 500 rows per request (10 MB is the hard
# limit). Events come 100 to a message; a billing run records its invoices and lines in chunks.
ROWS_PER_REQUEST = 500


class InsertFailed(Exception):
    """BigQuery refused some rows; the message is retried (rows are validated before, so this is ours)."""


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, Decimal):
        return "BIGNUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"


def _param(name: str | None, value: Any):
    """A query parameter typed from its Python value: scalars, lists, and lists of dicts (STRUCTs)."""
    from google.cloud import bigquery

    if isinstance(value, dict):
        return bigquery.StructQueryParameter(name, *(_param(k, v) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            return bigquery.ArrayQueryParameter(name, "STRUCT", [_param(None, v) for v in value])
        kind = _scalar_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, list(value))
    return bigquery.ScalarQueryParameter(name, _scalar_type(value), value)


class BigQueryWarehouse(DedupedReads, FinanceRecords):
    def __init__(self, client, project: str, dataset: str):
        self._client = client
        self._project = project
        self._dataset = dataset

    def table(self, name: str) -> str:
        return f"{self._project}.{self._dataset}.{name}"

    def ensure_schema(self, location: str = "US") -> None:
        """Create the dataset, tables and views if absent (Terraform does this in production)."""
        from google.cloud import bigquery

        self._client.create_dataset(bigquery.Dataset(f"{self._project}.{self._dataset}"), exists_ok=True)
        for spec in sql.TABLES:
            schema = [bigquery.SchemaField.from_api_repr(f) for f in sql.schema(spec.name)]
            table = bigquery.Table(self.table(spec.name), schema=schema)
            table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=spec.partition_field)
            table.clustering_fields = list(spec.clustering)
            self._client.create_table(table, exists_ok=True)
        for view in sql.VIEWS:
            body = sql.view_query(view, lambda table: f"`{self.table(table)}`")
            self._client.query(f"CREATE OR REPLACE VIEW `{self.table(view)}` AS {body}").result()
        # NOTE: the report_<name> views are Terraform's alone (terraform/bigquery.tf, checked by
        # tests/terraform). bqemulator does not create them reliably (a report view's CREATE
        # has hung in its client's retries), and reports run as parameterised queries
        # (`DedupedReads.report`), which need no view.

    def _insert(self, table: str, rows: list[dict[str, Any]], row_ids: list[str]) -> None:
        # Slices of at most ROWS_PER_REQUEST (none when there are no rows: BigQuery refuses an
        # empty request, and an invoice may have no lines).
        for start in range(0, len(rows), ROWS_PER_REQUEST):
            end = start + ROWS_PER_REQUEST
            errors = self._client.insert_rows_json(self.table(table), rows[start:end], row_ids=row_ids[start:end])
            if errors:
                raise InsertFailed(f"{len(errors)} rows refused by {table}")

    def insert_events(self, events: Sequence[Event], processed_at_us: int) -> None:
        # insertId = the dedup key: BigQuery drops a repeat within about a minute (best effort);
        # events_deduped removes whatever gets through.
        self._insert(
            "events",
            [event_row(e, processed_at_us) for e in events],
            [e.key_text for e in events],
        )

    def insert_rejected(self, rejections: Sequence[Rejection], rejected_at_us: int) -> None:
        self._insert(
            "rejected_events",
            [rejected_row(r, rejected_at_us) for r in rejections],
            [f"{r.event.key_text}\x00{r.event.payload_hash()}" for r in rejections],
        )

    def _query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            default_dataset=f"{self._project}.{self._dataset}",
            query_parameters=[_param(k, v) for k, v in (params or {}).items()],
        )
        return [dict(row.items()) for row in self._client.query(bigquery_sql, job_config=config).result()]
