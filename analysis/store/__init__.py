"""The data directory: Parquet segments, their schema, and the queries `stats` prints."""
