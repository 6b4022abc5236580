"""SQL written once, in BigQuery's dialect, and run on DuckDB through sqlglot.

The warehouse's objects are listed once, here: `TABLES` (each with its BigQuery JSON schema
file `<name>.json`, its partitioning and clustering) and `VIEWS` (each a query `<name>.sql`
over the tables). Both adapters create exactly these, the DuckDB DDL is derived from the same
schemas, and Terraform reads the same files, so the warehouses cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any, NamedTuple

from meterline.core.events import is_property_name, property_name_error

# NOTE: sqlglot maps NUMERIC to DuckDB's default DECIMAL(18,3) and BIGNUMERIC to DECIMAL(38,5),
# which would silently truncate quantities. Every exact type becomes DECIMAL(38,9), which holds
# BigQuery NUMERIC exactly (29 integer digits, 9 fractional).
DUCKDB_DECIMAL = "DECIMAL(38, 9)"
_DUCKDB_TYPES = {
    "STRING": "VARCHAR",
    "TIMESTAMP": "TIMESTAMPTZ",
    "NUMERIC": DUCKDB_DECIMAL,
    "BIGNUMERIC": DUCKDB_DECIMAL,
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "INT64": "BIGINT",
    "INTEGER": "BIGINT",
    "DATE": "DATE",
    "JSON": "JSON",
}


class Table(NamedTuple):
    name: str  # its schema is `<name>.json`
    partition_field: str  # partitioned by day on this TIMESTAMP or DATE column
    clustering: tuple[str, ...]


# Partition by day on the event time and cluster by subscription (then code): a billing query
# scans one period's partitions and the billed subscriptions' blocks ($6.25/TiB scanned).
# The finance tables are append-only histories (one row per stored invoice version, one per
# payment event), partitioned by the invoice's issuing date (every version of an invoice lands
# in one partition, and finance asks "what was issued in March") or the payment's time, and
# clustered by customer.
TABLES = (
    Table("events", "timestamp", ("external_subscription_id", "code")),
    Table("rejected_events", "rejected_at", ("external_subscription_id",)),
    Table("invoices", "issuing_date", ("customer_external_id", "invoice_id")),
    Table("invoice_lines", "issuing_date", ("customer_external_id", "invoice_id")),
    Table("payments", "recorded_at", ("customer_external_id", "invoice_id")),
    # What the payment provider said of each invoice (reconciliation), by our invoice's date.
    Table("provider_invoices", "issuing_date", ("customer_external_id", "invoice_id")),
)
# Each view's query is `<name>.sql`, with `{table}` placeholders for the tables it reads.
VIEWS = ("events_deduped", "rejected_events_deduped", "invoices_latest", "invoice_lines_latest", "payments_deduped",
         "provider_invoices_latest")

# The finance reports (core/reports.py names them): each `reports/<name>.sql`, reading the
# tables through the same `{table}` placeholders, and, when monthly, the TIMESTAMP parameters
# @month_start and @month_end that bound the partitions it scans. Each is also a view
# `report_<name>` over every month (the bounds below in place of the parameters; a view takes
# no parameters): finance filters it in the console, and the CLI runs the query for one month.
REPORT_VIEW_PREFIX = "report_"
_ALL_MONTHS = {"@month_start": "TIMESTAMP '0001-01-01 00:00:00+00'",
               "@month_end": "TIMESTAMP '9999-12-31 23:59:59.999999+00'"}



class UnsafeName(ValueError):
    """A property name that cannot be written into a JSONPath (the message says which). The
    catalog refuses such names at the door, by the same rule; the usage query leaves out the
    plans of a catalog stored before it (`core.usage_query.UsageQuery.unusable`)."""


@functools.cache
def text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


@functools.cache
def schema(table: str) -> list[dict[str, Any]]:
    """A table's BigQuery schema (list of {name, type, mode})."""
    return json.loads(text(f"{table}.json"))


def duckdb_ddl(table: str) -> str:
    cols = []
    for field in schema(table):
        null = " NOT NULL" if field.get("mode") == "REQUIRED" else ""
        cols.append(f'"{field["name"]}" {_DUCKDB_TYPES[field["type"]]}{null}')
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({", ".join(cols)})'


def duckdb_nullable_columns(table: str) -> list[str]:
    """The table's nullable columns as DuckDB column definitions ('"name" TYPE')."""
    return [f'"{f["name"]}" {_DUCKDB_TYPES[f["type"]]}' for f in schema(table) if f.get("mode") != "REQUIRED"]


def _widen_decimals(node):
    from sqlglot import exp

    if isinstance(node, exp.DataType) and node.this in (
        exp.DataType.Type.DECIMAL,
        exp.DataType.Type.BIGDECIMAL,
    ):
        return exp.DataType.build(DUCKDB_DECIMAL, dialect="duckdb")
    return node


@functools.lru_cache(maxsize=256)
def to_duckdb(bigquery_sql: str) -> str:
    """Transpile BigQuery SQL to DuckDB, keeping decimals exact."""
    import sqlglot  # imported here: only the embedded warehouse transpiles (40 ms off a cold start)

    tree = sqlglot.parse_one(bigquery_sql, read="bigquery")
    return tree.transform(_widen_decimals).sql(dialect="duckdb")


def view_query(view: str, quote: Callable[[str], str]) -> str:
    """A view's query (BigQuery dialect), naming each table as `quote(table)`."""
    return text(f"{view}.sql").format(**{t.name: quote(t.name) for t in TABLES})


def report_query(name: str, quote: Callable[[str], str] = str) -> str:
    """A report's query (BigQuery dialect, with its month parameters), naming each table as
    `quote(table)`."""
    return text(f"reports/{name}.sql").format(**{t.name: quote(t.name) for t in TABLES})


def report_view_query(name: str, quote: Callable[[str], str]) -> str:
    """The query of the view `report_<name>`: the report over every month."""
    query = report_query(name, quote)
    for param, bound in _ALL_MONTHS.items():
        query = query.replace(param, bound)
    return query


def literal(value: str) -> str:
    """A BigQuery string literal, quoted and escaped."""
    from sqlglot import exp

    return exp.Literal.string(value).sql(dialect="bigquery")


def json_path(field: str) -> str:
    """The literal JSONPath of a top-level property, for JSON_VALUE."""
    # NOTE: a dot or bracket in the name would make the path read another property.
    if not is_property_name(field):
        raise UnsafeName(property_name_error(field))
    return literal(f"$.{field}")
