"""From per-request decisions to the figures a person reads: totals, savings by policy, what
each policy cost in blocked and throttled requests, broken down by day, team, feature, model.

`summarise` returns a `SimulationResult`; its `to_dict()` is the stable, JSON-ready structure
that `--format json`, the stored run (run.json) and the HTML report read:

    totals           baseline, simulated spend and saving (priced requests only), requests,
                     cache hits, latency saved, routed / downgraded / blocked / throttled /
                     batched counts, requests whose answer quality is unverified
    notes            what the figures do and do not include, in words
    by_policy        one row per policy in the order they apply: requests it changed, saving
    by_day, by_team, by_feature, by_model   the same money and counts per group
    cache            exact and semantic: hits, hit rate, misses by cause, requests excluded
                     (by reason) and, among them, repeats of an earlier request; semantic:
                     threshold sweep and sample matched pairs
    routing          per rule: requests, from which models, saving; quality "unverified"
    batch            per policy: requests, saving, and the latency it adds
    budgets          per budget: incidents (which scope value, which window, the request that
                     reached the limit, how many requests were blocked or downgraded, spend
                     prevented)
    rate_limits      per limit: throttled requests, the scope values and minutes most hit

Money sums only requests with a recorded cost; unpriced ones are counted apart.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from analysis.simulate.cacheability import EXCLUSION_REASONS
from analysis.simulate.facts import FrameFacts, split_state_key, window_start
from analysis.simulate.policy import Policy

# The groups a result is broken down by: result key -> column of the decisions frame.
RESULT_GROUPS = {"day": "day", "team": "team", "feature": "feature", "model": "model"}
TOP_INCIDENTS = 20  # rate-limit scope values and minutes listed
MAX_INCIDENTS = 500  # budget windows listed (the first, in time order; all are counted)
BATCH_LATENCY_NOTE = "answers arrive asynchronously, within the provider's batch window (up to 24 h)"


def _figure(value: Any) -> float:
    """A sum (dollars, milliseconds) as a float; an empty sum (NULL) is 0."""
    return float(value or 0.0)


def _money_row(frame: pl.DataFrame) -> dict[str, Any]:
    """Money totals of a decisions frame; unpriced requests (cost_usd NULL) counted apart."""
    row = frame.select(
        pl.len().alias("requests"),
        pl.col("cost_usd").is_null().sum().alias("unpriced_requests"),
        pl.col("cost_usd").sum().alias("baseline_usd"),
        pl.col("simulated_cost_usd").sum().alias("simulated_usd"),  # NULL where cost_usd is
    ).row(0, named=True)
    baseline, simulated = _figure(row["baseline_usd"]), _figure(row["simulated_usd"])
    return {
        "requests": row["requests"],
        "unpriced_requests": row["unpriced_requests"],
        "baseline_usd": baseline,
        "simulated_usd": simulated,
        "saving_usd": baseline - simulated,
        "saving_pct": (baseline - simulated) / baseline * 100 if baseline > 0 else 0.0,
    }


_COUNTS = [
    pl.len().alias("requests"),
    pl.col("cost_usd").is_null().sum().alias("unpriced_requests"),
    pl.col("cost_usd").sum().alias("baseline_usd"),
    pl.col("simulated_cost_usd").sum().alias("simulated_usd"),
    pl.col("disposition").is_in(["exact_hit", "semantic_hit"]).sum().alias("cache_hits"),
    pl.col("latency_saved_ms").sum().alias("latency_saved_ms"),
    pl.col("routed_by").is_not_null().sum().alias("routed"),
    (pl.col("budget_action") == "downgrade").sum().alias("downgraded"),
    (pl.col("disposition") == "blocked").sum().alias("blocked"),
    pl.col("throttled_by").is_not_null().sum().alias("throttled"),
    pl.col("batch_by").is_not_null().sum().alias("batched"),
]


def _grouped(frame: pl.DataFrame, key: str) -> list[dict[str, Any]]:
    rows = (
        frame.group_by(key)
        .agg(_COUNTS)
        .with_columns(
            pl.col("baseline_usd").fill_null(0.0),
            pl.col("simulated_usd").fill_null(0.0),
        )
        .with_columns((pl.col("baseline_usd") - pl.col("simulated_usd")).alias("saving_usd"))
        .sort(key, nulls_last=True)
    )
    out = []
    for row in rows.iter_rows(named=True):
        value = row.pop(key)
        out.append({"key": value.isoformat() if hasattr(value, "isoformat") else value, **row})
    return out


@dataclass
class SimulationResult:
    """The figures of one simulation run; `to_dict()` is the stable structure."""

    policy: Policy
    parameters: dict[str, Any]
    totals: dict[str, Any]
    notes: list[str]
    by_policy: list[dict[str, Any]]
    groups: dict[str, list[dict[str, Any]]]
    cache: dict[str, Any]
    routing: dict[str, Any]
    batch: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    rate_limits: list[dict[str, Any]]
    decisions: pl.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": {
                "name": self.policy.name,
                "description": self.policy.description,
                "file": self.policy.file,
                "order": [{"name": p.name, "kind": p.KIND} for p in self.policy.in_order()],
            },
            "parameters": self.parameters,
            "totals": self.totals,
            "notes": self.notes,
            "by_policy": self.by_policy,
            **{f"by_{name}": rows for name, rows in self.groups.items()},
            "cache": self.cache,
            "routing": self.routing,
            "batch": self.batch,
            "budgets": self.budgets,
            "rate_limits": self.rate_limits,
        }


def _by_policy(policy: Policy, d: pl.DataFrame) -> list[dict[str, Any]]:
    saving_column = {
        "exact_cache": ("cache_policy", "saving_cache"),
        "semantic_cache": ("cache_policy", "saving_cache"),
        "routing": ("routed_by", "saving_routing"),
        "batch": ("batch_by", "saving_batch"),
        "budget": ("budget_by", "saving_budget"),
        "rate_limit": ("throttled_by", None),
    }
    expressions = []
    for index, item in enumerate(policy.in_order()):
        by, saving = saving_column[item.KIND]
        mine = (pl.col(by) == item.name).fill_null(False)
        expressions += [
            mine.sum().alias(f"{index}.requests"),
            (pl.col(saving).filter(mine).sum() if saving else pl.lit(0.0)).alias(f"{index}.saving"),
            pl.col("latency_saved_ms").filter(mine).sum().alias(f"{index}.latency"),
            (mine & (pl.col("budget_action") == "block")).sum().alias(f"{index}.blocked"),
            (mine & (pl.col("budget_action") == "downgrade")).sum().alias(f"{index}.downgraded"),
        ]
    sums = d.select(expressions).row(0, named=True) if expressions else {}
    rows = []
    for index, item in enumerate(policy.in_order()):
        kind = item.KIND
        row = {
            "name": item.name,
            "kind": kind,
            "requests": sums[f"{index}.requests"],
            "saving_usd": _figure(sums[f"{index}.saving"]),
        }
        if kind in ("exact_cache", "semantic_cache"):
            row["latency_saved_ms"] = _figure(sums[f"{index}.latency"])
        if kind == "routing":
            row["quality"] = "unverified"
        if kind == "budget":
            row["blocked"] = sums[f"{index}.blocked"]
            row["downgraded"] = sums[f"{index}.downgraded"]
        if kind == "rate_limit":
            row["throttled"] = row["requests"]
            row["note"] = "throttled requests keep their cost: a throttled client retries"
        rows.append(row)
    return rows


def _exclusions(d: pl.DataFrame, column: str) -> dict[str, Any]:
    counted = d.group_by(column, "cache_excluded", "excluded_duplicate").len().filter(pl.col(column) == "excluded")
    by_reason: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    for row in counted.iter_rows(named=True):
        by_reason[row["cache_excluded"]] = by_reason.get(row["cache_excluded"], 0) + row["len"]
        if row["excluded_duplicate"]:
            duplicates[row["cache_excluded"]] = duplicates.get(row["cache_excluded"], 0) + row["len"]
    order = (*EXCLUSION_REASONS, "no_prompt_text")
    return {
        "requests": {r: by_reason[r] for r in order if by_reason.get(r)},
        "duplicates": {r: duplicates[r] for r in order if duplicates.get(r)},
    }


def _exact_cache(policy: Policy, d: pl.DataFrame) -> dict[str, Any] | None:
    exact = policy.exact_cache
    if exact is None:
        return None
    statuses = dict(d.group_by("exact_cache").len().iter_rows())
    hit = pl.col("disposition") == "exact_hit"
    sums = d.select(
        hit.sum().alias("hits"),
        pl.col("saving_cache").filter(hit).sum().alias("saving"),
        pl.col("latency_saved_ms").filter(hit).sum().alias("latency"),
    ).row(0, named=True)
    hits = sums["hits"]
    eligible = d.height - statuses.get("excluded", 0)
    return {
        "name": exact.name,
        "ttl_seconds": exact.ttl_seconds,
        "scope": exact.scope,
        "max_entries": exact.max_entries,
        "hits": hits,
        "hit_rate": hits / d.height if d.height else 0.0,
        "hit_rate_of_cacheable": hits / eligible if eligible else 0.0,
        "cacheable_requests": eligible,
        "saving_usd": _figure(sums["saving"]),
        "latency_saved_ms": _figure(sums["latency"]),
        "misses": {s: int(statuses.get(s, 0)) for s in ("miss", "miss_in_flight", "miss_expired", "miss_evicted")},
        "excluded": _exclusions(d, "exact_cache"),
    }


def _semantic_cache(policy: Policy, d: pl.DataFrame, requests: pl.DataFrame) -> dict[str, Any] | None:
    semantic = policy.semantic_cache
    if semantic is None:
        return None
    hits = d.filter(pl.col("disposition") == "semantic_hit")
    looked_up = pl.col("semantic_cache").is_in(["hit", "miss"]).fill_null(False)
    above = [looked_up & (pl.col("similarity") >= t).fill_null(False) for t in semantic.sweep]
    sums = d.select(
        looked_up.sum().alias("looked_up"),
        *[a.sum().alias(f"{i}.hits") for i, a in enumerate(above)],
        *[pl.col("cost_usd").filter(a).sum().alias(f"{i}.saving") for i, a in enumerate(above)],
    ).row(0, named=True)
    sweep = [
        {
            "threshold": threshold,
            "hits": sums[f"{i}.hits"],
            "hit_rate": sums[f"{i}.hits"] / d.height if d.height else 0.0,
            "saving_usd": _figure(sums[f"{i}.saving"]),
            "estimated": threshold != semantic.threshold,
        }
        for i, threshold in enumerate(semantic.sweep)
    ]
    return {
        "name": semantic.name,
        "threshold": semantic.threshold,
        "ttl_seconds": semantic.ttl_seconds,
        "scope": semantic.scope,
        "embedder": semantic.embedder,
        "hits": hits.height,
        "hit_rate": hits.height / d.height if d.height else 0.0,
        "looked_up": sums["looked_up"],
        "saving_usd": _figure(hits["saving_cache"].sum()),
        "latency_saved_ms": _figure(hits["latency_saved_ms"].sum()),
        "quality": "unverified",
        "excluded": _exclusions(d, "semantic_cache"),
        "sweep": sweep,
        "sweep_note": (
            "hits at other thresholds are estimated from the nearest stored prompt each request "
            "found in this run; set `threshold` to a value and run again for its exact figure"
        ),
        "sample_pairs": _sample_pairs(hits, requests, semantic.sample_pairs),
    }


def _sample_pairs(hits: pl.DataFrame, requests: pl.DataFrame, size: int) -> list[dict[str, Any]]:
    """Up to `size` semantic hits spread over the similarity range, lowest included, with both
    prompts and answers side by side, so a person can judge false hits. `requests` carries the
    prompt_text and response_text columns."""
    if hits.height == 0 or size == 0:
        return []
    ordered = hits.sort("similarity", "id")
    picks = sorted({int(i) for i in np.linspace(0, ordered.height - 1, min(size, ordered.height))})
    chosen = ordered[picks].select("id", "cache_source_id", "similarity")
    wanted = set(chosen["id"].to_list()) | set(chosen["cache_source_id"].to_list())
    texts = {}
    if "prompt_text" in requests.columns:
        found = requests.filter(pl.col("id").is_in(list(wanted))).select("id", "prompt_text", "response_text")
        texts = {row["id"]: row for row in found.iter_rows(named=True)}
    pairs = []
    for row in chosen.iter_rows(named=True):
        request, cached = texts.get(row["id"], {}), texts.get(row["cache_source_id"], {})
        pairs.append(
            {
                "similarity": row["similarity"],
                "request_id": row["id"],
                "request_prompt": request.get("prompt_text"),
                "request_answer": request.get("response_text"),
                "cached_id": row["cache_source_id"],
                "cached_prompt": cached.get("prompt_text"),
                "cached_answer": cached.get("response_text"),
            }
        )
    return pairs


def _routing(policy: Policy, d: pl.DataFrame) -> dict[str, Any]:
    per_model = (
        d.group_by("routed_by", "model")
        .agg(
            pl.len().alias("requests"),
            pl.col("cost_usd").sum().alias("baseline"),
            pl.col("saving_routing").sum().alias("saving"),
        )
        .filter(pl.col("routed_by").is_not_null())
        .sort(["routed_by", "requests", "model"], descending=[False, True, False])
    )
    rules = []
    for rule in policy.routing:
        mine = per_model.filter(pl.col("routed_by") == rule.name)
        rules.append(
            {
                "name": rule.name,
                "to": rule.to,
                "requests": int(mine["requests"].sum()),
                "from_models": {
                    str(m): n for m, n in zip(mine["model"].to_list(), mine["requests"].to_list(), strict=True)
                },
                "baseline_usd": _figure(mine["baseline"].sum()),
                "saving_usd": _figure(mine["saving"].sum()),
                "quality": "unverified",
            }
        )
    return {
        "requests": sum(r["requests"] for r in rules),
        "quality": "unverified",
        "quality_note": (
            "routed requests were answered by another model in this simulation only; nobody has "
            "checked that its answers are as good: treat them as unverified"
        ),
        "rules": rules,
    }


def _batch(policy: Policy, d: pl.DataFrame) -> list[dict[str, Any]]:
    sums = dict(
        (row[0], row[1:]) for row in d.group_by("batch_by").agg(pl.len(), pl.col("saving_batch").sum()).iter_rows()
    )
    return [
        {
            "name": item.name,
            "requests": sums.get(item.name, (0, 0.0))[0],
            "saving_usd": _figure(sums.get(item.name, (0, 0.0))[1]),
            "discount": item.discount,
            "latency": BATCH_LATENCY_NOTE,
        }
        for item in policy.batch
    ]


def _budgets(policy: Policy, d: pl.DataFrame, facts: FrameFacts, requests: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    base = d.select("id", "budget_by", "budget_action", "budget_tripped", "saving_budget").with_columns(
        requests["ts"].alias("ts")
    )
    for index, budget in enumerate(policy.budgets):
        keyed = base.with_columns(pl.Series("key", facts.columns[f"budget_key.{index}"], dtype=pl.Utf8))
        mine = keyed.filter(
            pl.col("key").is_not_null()
            & (
                (pl.col("budget_by") == budget.name)
                | pl.col("budget_tripped").str.split(",").list.contains(budget.name)
            )
        )
        tripped = pl.col("budget_tripped").str.split(",").list.contains(budget.name).fill_null(False)
        acted = (pl.col("budget_by") == budget.name).fill_null(False)
        windows = mine.group_by("key").agg(
            pl.col("id").filter(tripped).first().alias("tripped_by"),
            pl.col("ts").filter(tripped).first().alias("tripped_at"),
            pl.col("id").filter(acted).first().alias("first_stopped_id"),
            pl.col("ts").filter(acted).first().alias("first_stopped_at"),
            (acted & (pl.col("budget_action") == "block")).sum().alias("blocked"),
            (acted & (pl.col("budget_action") == "downgrade")).sum().alias("downgraded"),
            pl.col("saving_budget").filter(acted).sum().alias("spend_prevented_usd"),
        )
        incidents = []
        for row in windows.iter_rows(named=True):
            scope_value, window = split_state_key(row.pop("key"))
            incidents.append(
                {
                    "scope_value": scope_value,
                    "window_start": window_start(int(window), budget.window).isoformat(),
                    **row,
                    "tripped_at": row["tripped_at"].isoformat() if row["tripped_at"] else None,
                    "first_stopped_at": row["first_stopped_at"].isoformat() if row["first_stopped_at"] else None,
                    "spend_prevented_usd": _figure(row["spend_prevented_usd"]),
                }
            )
        incidents.sort(key=lambda i: (i["window_start"], str(i["scope_value"])))
        out.append(
            {
                "name": budget.name,
                "scope": budget.scope,
                "window": budget.window,
                "limit_usd": budget.limit_usd,
                "action": budget.action,
                "to": budget.to,
                "blocked": sum(i["blocked"] for i in incidents),
                "downgraded": sum(i["downgraded"] for i in incidents),
                "spend_prevented_usd": sum(i["spend_prevented_usd"] for i in incidents),
                "scope_values_affected": len({i["scope_value"] for i in incidents if i["blocked"] or i["downgraded"]}),
                "windows_tripped": sum(1 for i in incidents if i["tripped_by"]),
                "incidents_total": len(incidents),
                "incidents": incidents[:MAX_INCIDENTS],
            }
        )
    return out


def _rate_limits(policy: Policy, d: pl.DataFrame, facts: FrameFacts, requests: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for index, limit in enumerate(policy.rate_limits):
        mine = (
            d.select("throttled_by")
            .with_columns(
                requests["ts"].dt.truncate("1m").alias("minute"),
                pl.Series("scope_value", facts.columns[f"rate_key.{index}"], dtype=pl.Utf8),
            )
            .filter(pl.col("throttled_by") == limit.name)
        )
        by_scope = (
            mine.group_by("scope_value")
            .agg(
                pl.len().alias("throttled"), pl.col("minute").min().alias("first"), pl.col("minute").max().alias("last")
            )
            .sort(["throttled", "scope_value"], descending=[True, False])
            .head(TOP_INCIDENTS)
        )
        by_minute = (
            mine.group_by("minute", "scope_value")
            .len()
            .sort(["len", "minute"], descending=[True, False])
            .head(TOP_INCIDENTS)
        )
        out.append(
            {
                "name": limit.name,
                "scope": limit.scope,
                "requests_per_minute": limit.requests_per_minute,
                "tokens_per_minute": limit.tokens_per_minute,
                "throttled": mine.height,
                "scope_values_affected": mine["scope_value"].n_unique() if mine.height else 0,
                "top_scope_values": [
                    {
                        "scope_value": r["scope_value"],
                        "throttled": r["throttled"],
                        "first": r["first"].isoformat(),
                        "last": r["last"].isoformat(),
                    }
                    for r in by_scope.iter_rows(named=True)
                ],
                "busiest_minutes": [
                    {"minute": r["minute"].isoformat(), "scope_value": r["scope_value"], "throttled": r["len"]}
                    for r in by_minute.iter_rows(named=True)
                ],
                "note": "throttled requests keep their cost: a throttled client retries",
            }
        )
    return out


def summarise(
    policy: Policy,
    requests: pl.DataFrame,
    decisions: pl.DataFrame,
    facts: FrameFacts,
    parameters: dict[str, Any] | None = None,
) -> SimulationResult:
    """The result of a run; `requests` and `decisions` are row-aligned (same order), and
    `requests` has the content columns when the run read them."""
    d = decisions.with_columns(
        requests["ts"].dt.date().alias("day"),
        requests["team"].alias("team"),
        requests["feature"].alias("feature"),
    )
    money = _money_row(d)
    counts = d.select(_COUNTS).row(0, named=True)
    totals = {
        **money,
        "cache_hits": counts["cache_hits"],
        "cache_hit_rate": counts["cache_hits"] / d.height if d.height else 0.0,
        "latency_saved_ms": _figure(counts["latency_saved_ms"]),
        "routed": counts["routed"],
        "downgraded": counts["downgraded"],
        "blocked": counts["blocked"],
        "throttled": counts["throttled"],
        "batched": counts["batched"],
        "quality_unverified": int((d["quality"] == "unverified").sum()),
    }
    parameters = {
        **(parameters or {}),
        "requests": d.height,
        "first_request_at": requests["ts"].min().isoformat() if d.height else None,
        "last_request_at": requests["ts"].max().isoformat() if d.height else None,
    }
    result = SimulationResult(
        policy=policy,
        parameters=parameters,
        totals=totals,
        notes=_notes(policy, totals),
        by_policy=_by_policy(policy, d),
        groups={name: _grouped(d, column) for name, column in RESULT_GROUPS.items()},
        cache={"exact": _exact_cache(policy, d), "semantic": _semantic_cache(policy, d, requests)},
        routing=_routing(policy, d),
        batch=_batch(policy, d),
        budgets=_budgets(policy, d, facts, requests),
        rate_limits=_rate_limits(policy, d, facts, requests),
        decisions=decisions,
    )
    return result


def _notes(policy: Policy, totals: dict[str, Any]) -> list[str]:
    notes = [
        "Baseline is the cost recorded for each call (what was paid, provider prompt-cache "
        "discounts included); a cache hit saves exactly that.",
    ]
    if totals["unpriced_requests"]:
        notes.append(
            f"{totals['unpriced_requests']:,} requests have no recorded cost (unpriced): they are "
            "simulated but left out of every money figure."
        )
    if totals["quality_unverified"]:
        notes.append(
            f"{totals['quality_unverified']:,} requests would have been answered by another model "
            "or from a similar (not identical) prompt: their answer quality is unverified."
        )
    if policy.rate_limits:
        notes.append("Throttled requests keep their cost: a throttled client usually retries.")
    if policy.routing or any(b.action == "downgrade" for b in policy.budgets):
        notes.append(
            "Routed and downgraded requests are priced at the target's list price for the same "
            "tokens (re-counted with its tokenizer when recorded texts allow), without the "
            "provider prompt-cache discount the original call had."
        )
    return notes
