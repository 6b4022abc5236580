"""SQL written once, in BigQuery's dialect, and run on DuckDB through sqlglot.

Table schemas live here as BigQuery JSON schemas (the same files Terraform reads), and the
DuckDB DDL is derived from them, so the two warehouses cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import sqlglot
from sqlglot import exp

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


def _widen_decimals(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this in (
        exp.DataType.Type.DECIMAL,
        exp.DataType.Type.BIGDECIMAL,
    ):
        return exp.DataType.build(DUCKDB_DECIMAL, dialect="duckdb")
    return node


@functools.lru_cache(maxsize=256)
def to_duckdb(bigquery_sql: str) -> str:
    """Transpile BigQuery SQL to DuckDB, keeping decimals exact."""
    tree = sqlglot.parse_one(bigquery_sql, read="bigquery")
    return tree.transform(_widen_decimals).sql(dialect="duckdb")


def render(name: str, **tables: str) -> str:
    """A stored query with its table placeholders filled in (BigQuery dialect)."""
    return text(name).format(**tables)
