"""Spend, tokens and latency grouped by one dimension: what `llm-shadow stats` prints.

The report reads the same functions, so a figure in the report equals the one `stats` prints.
"""

from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from analysis.store import GROUP_ALIASES, GROUP_LABELS
from analysis.store.datadir import query_frame, time_filter
from analysis.store.schema import NOT_FAILED

NOT_FAILED_SQL = ", ".join(f"'{o}'" for o in NOT_FAILED)


@dataclass
class Totals:
    calls: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    unpriced_calls: int
    estimated_calls: int
    price_differ_calls: int  # the two price tables differ by more than 1% (price_check)
    price_one_sided_calls: int  # only one of the two tables prices the model
    price_unchecked_calls: int  # computed costs recorded before the second table (reprice checks them)
    first_ts: datetime | None
    last_ts: datetime | None


def grouped(
    con: duckdb.DuckDBPyConnection, by: str, since: datetime | None = None, until: datetime | None = None
) -> pl.DataFrame:
    """One row per group: calls, tokens, cost, latency percentiles, error and estimate counts."""
    by = GROUP_ALIASES.get(by, by)
    if by not in GROUP_LABELS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUP_LABELS)}")
    where, params = time_filter(since, until)
    sql = f"""
        SELECT {GROUP_LABELS[by]} AS "{by}",
               count(*) AS calls,
               CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
               CAST(coalesce(sum(cached_input_tokens), 0) AS BIGINT) AS cached_input_tokens,
               CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
               coalesce(sum(cost_usd), 0) AS cost_usd,
               count(*) FILTER (WHERE outcome NOT IN ({NOT_FAILED_SQL})) AS errors,
               count(*) FILTER (WHERE usage_source = 'estimated') AS estimated,
               count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced,
               round(quantile_cont(latency_ms, 0.5), 1) AS latency_p50_ms,
               round(quantile_cont(ttft_ms, 0.5), 1) AS ttft_p50_ms
        FROM requests {where}
        GROUP BY 1
        ORDER BY {"1" if by == "day" else "cost_usd DESC, calls DESC"}
    """
    return query_frame(con, sql, params)


def totals(con: duckdb.DuckDBPyConnection, since: datetime | None = None, until: datetime | None = None) -> Totals:
    where, params = time_filter(since, until)
    row = query_frame(
        con,
        f"""SELECT count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
                   CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
                   CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
                   count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced_calls,
                   count(*) FILTER (WHERE usage_source = 'estimated') AS estimated_calls,
                   count(*) FILTER (WHERE price_check = 'differ') AS price_differ_calls,
                   count(*) FILTER (WHERE price_check = 'one-sided') AS price_one_sided_calls,
                   count(*) FILTER (WHERE cost_source = 'computed' AND price_check_version IS NULL)
                       AS price_unchecked_calls,
                   min(ts) AS first_ts, max(ts) AS last_ts
            FROM requests {where}""",
        params,
    ).row(0, named=True)
    return Totals(**row)


def decisions_by_policy(
    con: duckdb.DuckDBPyConnection, start: datetime | None = None, end: datetime | None = None
) -> pl.DataFrame:
    """What the policies decided (the `decisions` relation): per mode, policy, kind and action,
    the calls and the saving of cache hits (in shadow mode what a hit would have saved, in
    enforce mode what it did), with `quality` unverified for the semantic cache's hits (answers
    given to a similar prompt, not the same one)."""
    where, params = time_filter(start, end)
    sql = f"""
        SELECT mode, policy, kind, action, count(*) AS calls, sum(saving_usd) AS saving_usd,
               CASE WHEN kind = 'semantic_cache' AND action = 'hit' THEN 'unverified' END AS quality
        FROM decisions {where}
        GROUP BY ALL ORDER BY mode, policy, kind, calls DESC
    """
    return query_frame(con, sql, params)
