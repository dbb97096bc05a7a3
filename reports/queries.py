"""The SQL the report needs beyond what `llm-shadow stats` prints: series over time, latency
percentiles, outcomes and the data-quality counts.

Each function is one query over the `requests` relation for a time window and returns a polars
frame. Group labels use the expressions of `analysis.store.GROUP_LABELS`, so a model, team or
feature is named here exactly as `llm-shadow stats --by ...` names it. Totals and the per-group
tables come from `analysis.store.stats` itself, not from here.
"""

from datetime import datetime

import duckdb
import polars as pl

from analysis.store import GROUP_LABELS
from analysis.store.datadir import query_frame, time_filter

DAY = GROUP_LABELS["day"]


def daily_by(con: duckdb.DuckDBPyConnection, by: str, since: datetime | None, until: datetime | None) -> pl.DataFrame:
    """day, group, calls, tokens (input + output), cost_usd: one row per day and group."""
    where, params = time_filter(since, until)
    return query_frame(
        con,
        f"""
        SELECT {DAY} AS day, {GROUP_LABELS[by]} AS "group", count(*) AS calls,
               CAST(coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS BIGINT) AS tokens,
               coalesce(sum(cost_usd), 0) AS cost_usd
        FROM requests {where}
        GROUP BY 1, 2 ORDER BY 1, 2""",
        params,
    )


def latency_by_model(con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None) -> pl.DataFrame:
    """Per provider and model, successful calls only: latency and time-to-first-token p50/p95.

    Failed calls are left out: a rate-limited call answers in milliseconds and would flatter
    the model. Time to first token exists for streamed calls only.
    """
    where, params = time_filter(since, until, "outcome = 'ok'")
    return query_frame(
        con,
        f"""
        SELECT provider, {GROUP_LABELS["model"]} AS model, count(*) AS calls,
               count(ttft_ms) AS streamed_calls,
               quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
               quantile_cont(latency_ms, 0.95) AS latency_p95_ms,
               quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms,
               quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms
        FROM requests {where}
        GROUP BY 1, 2 ORDER BY calls DESC, 1, 2""",
        params,
    )


def outcomes_by_provider(
    con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None
) -> pl.DataFrame:
    """provider, outcome, calls."""
    where, params = time_filter(since, until)
    return query_frame(
        con,
        f"""
        SELECT provider, outcome, count(*) AS calls
        FROM requests {where}
        GROUP BY 1, 2 ORDER BY 1, calls DESC""",
        params,
    )


def outcomes_by_day(con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None) -> pl.DataFrame:
    """day, outcome, calls."""
    where, params = time_filter(since, until)
    return query_frame(
        con,
        f"""
        SELECT {DAY} AS day, outcome, count(*) AS calls
        FROM requests {where}
        GROUP BY 1, 2 ORDER BY 1, 2""",
        params,
    )


def source_counts(
    con: duckdb.DuckDBPyConnection, column: str, since: datetime | None, until: datetime | None
) -> pl.DataFrame:
    """value, calls, cost_usd for one of usage_source, cost_source, price_version, price_check."""
    if column not in ("usage_source", "cost_source", "price_version", "price_check"):
        raise ValueError(f"not a data-quality column: {column!r}")
    where, params = time_filter(since, until)
    return query_frame(
        con,
        f"""
        SELECT coalesce({column}, '(none)') AS value, count(*) AS calls,
               coalesce(sum(cost_usd), 0) AS cost_usd
        FROM requests {where}
        GROUP BY 1 ORDER BY calls DESC""",
        params,
    )


def days_covered(con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None) -> int:
    """Number of distinct UTC days with at least one call."""
    where, params = time_filter(since, until)
    row = con.execute(f"SELECT count(DISTINCT {DAY}) FROM requests {where}", params).fetchone()
    return row[0] if row else 0


# --- joined with a simulation's decisions (one row per request: what the policies did) ----------

DECISIONS_VIEW = "simulation_decisions"


def _with_decisions(con: duckdb.DuckDBPyConnection, decisions: pl.DataFrame, sql: str, params: list) -> pl.DataFrame:
    con.register(DECISIONS_VIEW, decisions)
    try:
        return query_frame(con, sql, params)
    finally:
        con.unregister(DECISIONS_VIEW)


def repeated_prompts(con: duckdb.DuckDBPyConnection, decisions: pl.DataFrame, limit: int = 10) -> pl.DataFrame:
    """The prompts sent most often (equal prompt_hash), with what the simulated caches made of
    them: calls, teams, cost, cache hits and saving, the commonest reason a repeat could not be
    cached, and the start of the prompt text (when content was recorded)."""
    return _with_decisions(
        con,
        decisions,
        f"""
        WITH repeated AS (
            SELECT r.prompt_hash, count(*) AS calls, count(DISTINCT r.team) AS teams,
                   count(DISTINCT {GROUP_LABELS["feature"]}) AS features,
                   any_value({GROUP_LABELS["feature"]}) AS feature,
                   coalesce(sum(r.cost_usd), 0) AS cost_usd,
                   count(*) FILTER (WHERE d.disposition IN ('exact_hit', 'semantic_hit')) AS cache_hits,
                   coalesce(sum(d.saving_cache), 0) AS saving_usd,
                   mode(d.cache_excluded) AS excluded_reason,
                   arg_min(r.id, r.ts) AS first_id
            FROM requests r JOIN {DECISIONS_VIEW} d ON d.id = r.id
            WHERE r.prompt_hash IS NOT NULL
            GROUP BY r.prompt_hash HAVING count(*) > 1
            ORDER BY calls DESC, cost_usd DESC, r.prompt_hash LIMIT ?
        )
        SELECT repeated.*, left(regexp_replace(c.prompt_text, '\\s+', ' ', 'g'), 240) AS prompt_start
        FROM repeated LEFT JOIN contents c ON c.id = repeated.first_id
        ORDER BY calls DESC, cost_usd DESC, prompt_hash""",
        [limit],
    )


def affected_requests(con: duckdb.DuckDBPyConnection, decisions: pl.DataFrame) -> pl.DataFrame:
    """The requests a budget or rate limit would have hurt, per policy, action, team and feature:
    requests and what they cost as recorded."""
    return _with_decisions(
        con,
        decisions,
        f"""
        WITH hurt AS (
            SELECT d.budget_by AS policy, d.budget_action AS action, r.* FROM requests r
            JOIN {DECISIONS_VIEW} d ON d.id = r.id WHERE d.budget_by IS NOT NULL
            UNION ALL
            SELECT d.throttled_by AS policy, 'throttle' AS action, r.* FROM requests r
            JOIN {DECISIONS_VIEW} d ON d.id = r.id WHERE d.throttled_by IS NOT NULL
        )
        SELECT policy, action, {GROUP_LABELS["team"]} AS team, {GROUP_LABELS["feature"]} AS feature,
               count(*) AS requests, coalesce(sum(cost_usd), 0) AS cost_usd,
               min(ts) AS first_at, max(ts) AS last_at
        FROM hurt GROUP BY ALL ORDER BY policy, requests DESC, team, feature""",
        [],
    )
