"""The simulation part of the report's figures, from one simulator run.

`SimulationRun` is what the report is given: the run's `SimulationResult.to_dict()` (the same
dict `llm-shadow simulate --format json` prints and run.json stores) and its decisions, one row
per request. `simulation_figures` keeps the result's figures as they are, so the report shows
the numbers `simulate` prints, and adds what needs the recorded calls beside the decisions: the
prompts repeated most and what the caches made of them, and the requests budgets and rate
limits would have hurt, by team and feature.
"""

from dataclasses import dataclass

import duckdb
import polars as pl

from reports import queries

INCIDENTS_SHOWN = 15
NO_GROUP = "(none)"  # as `llm-shadow stats` names a missing team or feature


@dataclass
class SimulationRun:
    result: dict  # SimulationResult.to_dict()
    decisions: pl.DataFrame  # analysis.simulate.replay.DECISION_SCHEMA
    run_id: str | None = None


def _labelled(rows: list[dict]) -> list[dict]:
    return [row | {"key": NO_GROUP if row["key"] is None else str(row["key"])} for row in rows]


def _waterfall(by_policy: list[dict]) -> list[dict]:
    """The policies that saved money, in the order they apply (each saving counted once), and
    the spend budgets prevented by blocking requests (not a saving: those went unanswered)."""
    steps = [
        {"name": p["name"], "kind": p["kind"], "saving_usd": p["saving_usd"]}
        for p in by_policy
        if abs(p["saving_usd"]) > 0
    ]
    for p in by_policy:
        if p.get("blocked_spend_usd"):
            steps.append(
                {"name": f"{p['name']} (blocked, unanswered)", "kind": "blocked", "saving_usd": p["blocked_spend_usd"]}
            )
    return steps


def simulation_figures(con: duckdb.DuckDBPyConnection, run: SimulationRun) -> dict:
    result = run.result
    totals = result["totals"]
    budgets = [b | {"incidents_shown": b["incidents"][:INCIDENTS_SHOWN]} for b in result["budgets"]]
    return {
        "run_id": run.run_id,
        "policy": result["policy"],
        "policy_name": result["policy"]["name"] or result["policy"]["file"],
        "parameters": result["parameters"],
        "notes": result["notes"],
        "totals": totals,
        "headline": {
            "baseline_usd": totals["baseline_usd"],
            "simulated_usd": totals["simulated_usd"],
            "saving_usd": totals["saving_usd"],
            "saving_share": totals["saving_usd"] / totals["baseline_usd"] if totals["baseline_usd"] else None,
            "cache_hits": totals["cache_hits"],
            "cache_hit_rate": totals["cache_hit_rate"],
            "blocked": totals.get("blocked", 0),
            "blocked_spend_usd": totals.get("blocked_spend_usd", 0.0),
            "requests": totals["requests"],
        },
        "by_policy": result["by_policy"],
        "waterfall": _waterfall(result["by_policy"]),
        "daily": _labelled(result["by_day"]),
        "groups": {name: _labelled(result[f"by_{name}"]) for name in ("team", "feature", "model")},
        "cache": result["cache"],
        "repeated_prompts": queries.repeated_prompts(con, run.decisions).to_dicts(),
        "routing": result["routing"],
        "batch": result["batch"],
        "budgets": budgets,
        "rate_limits": result["rate_limits"],
        "fallback": result.get("fallback"),  # None: no fallback rule (or a run stored before they existed)
        "hurt": queries.affected_requests(con, run.decisions).to_dicts(),
    }
