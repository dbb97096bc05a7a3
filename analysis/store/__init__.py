"""The data directory: Parquet segments, their schema, and the queries `stats` prints.

This file holds only what a command needs before it touches the store (the default directory,
the error it raises, what `stats --by` can group by), so that `llm-shadow --help` and argument
checks load neither polars nor duckdb; `datadir` and `stats` re-export these names.
"""

DEFAULT_DATA_DIR = "shadow-data"


class StoreError(Exception):
    """The data directory cannot be used (unreadable, written by a newer version, ...)."""


# `stats --by NAME` -> the SQL expression of a group's label; NAME is the column grouped by,
# and the label's column in the output (`key` is kept as the older name of `key_id`).
GROUP_LABELS = {
    "model": "coalesce(model, model_requested, '(unknown)')",
    "provider": "provider",
    "team": "coalesce(team, '(none)')",
    "feature": "coalesce(feature, '(none)')",
    "key_id": "coalesce(key_id, '(none)')",
    "user": "coalesce(\"user\", '(none)')",
    "endpoint": "endpoint",
    "day": "strftime(ts, '%Y-%m-%d')",
}
GROUP_ALIASES = {"key": "key_id"}
