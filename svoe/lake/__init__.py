"""Reading the lake back: event counts, DuckDB locally, Athena remotely."""
