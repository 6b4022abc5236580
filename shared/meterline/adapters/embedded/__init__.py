"""Embedded adapters: SQLite for the queue, dedup store and keys; DuckDB for the warehouse."""
