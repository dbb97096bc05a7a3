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
    fallback         recorded failures, and per fallback rule how many its retries and chain
                     would have rescued, at what estimated cost (None without fallback rules)

Money sums only requests with a recorded cost; unpriced ones are counted apart.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from analysis.simulate.agreement import agreement
from analysis.simulate.cacheability import EXCLUSION_REASONS
from analysis.simulate.embedders import Embedder, HashingEmbedder, resolve_kind
from analysis.simulate.enforceable import not_enforceable
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
    """Money totals of a decisions frame (joined with the requests' `cost_source`): requests
    without a recorded cost are counted apart, as unpriced (the model has no price, the one
    definition `stats` uses too) or unbilled (no token counts: nothing is known to have been
    billed). Blocked requests' spend is prevented, not saved: it is reported apart."""
    row = frame.select(
        pl.len().alias("requests"),
        _unpriced().sum().alias("unpriced_requests"),
        (pl.col("cost_usd").is_null() & ~_unpriced()).sum().alias("unbilled_requests"),
        pl.col("cost_usd").sum().alias("baseline_usd"),
        pl.col("simulated_cost_usd").sum().alias("simulated_usd"),  # NULL where cost_usd is
        pl.col("blocked_spend_usd").sum().alias("blocked_spend_usd"),
    ).row(0, named=True)
    baseline, simulated = _figure(row["baseline_usd"]), _figure(row["simulated_usd"])
    blocked = _figure(row["blocked_spend_usd"])
    saving = baseline - simulated - blocked
    return {
        "requests": row["requests"],
        "unpriced_requests": row["unpriced_requests"],
        "unbilled_requests": row["unbilled_requests"],
        "baseline_usd": baseline,
        "simulated_usd": simulated,
        "saving_usd": saving,
        "saving_pct": saving / baseline * 100 if baseline > 0 else 0.0,
        "blocked_spend_usd": blocked,
    }


def _unpriced() -> pl.Expr:
    """A request whose model has no price: cost_source 'unpriced' (as `stats` counts it); a
    frame without the column (an old stored run) falls back to a NULL cost."""
    return (pl.col("cost_source") == "unpriced").fill_null(False)


_COUNTS = [
    pl.len().alias("requests"),
    _unpriced().sum().alias("unpriced_requests"),
    pl.col("cost_usd").sum().alias("baseline_usd"),
    pl.col("simulated_cost_usd").sum().alias("simulated_usd"),
    pl.col("blocked_spend_usd").sum().alias("blocked_spend_usd"),
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
            pl.col("blocked_spend_usd").fill_null(0.0),
        )
        .with_columns(
            (pl.col("baseline_usd") - pl.col("simulated_usd") - pl.col("blocked_spend_usd")).alias("saving_usd")
        )
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
    fallback: dict[str, Any] | None = None  # analysis.simulate.fallback_replay: failures rescued
    fallback_decisions: list[dict] = field(default_factory=list, repr=False)  # rows shadow mode logs for them

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
            "fallback": self.fallback,
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
            pl.col("blocked_spend_usd").filter(mine).sum().alias(f"{index}.blocked_spend"),
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
            row["blocked_spend_usd"] = _figure(sums[f"{index}.blocked_spend"])
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


WRONG_HITS_NOTE = (
    "Estimated by answer agreement: for each hit, the answer the request really got (recorded, "
    "because every request went upstream while we observed) is compared with the answer the cache "
    "would have served (the earlier request's recorded answer): exact equality for short or "
    "structured answers, embedding similarity of the answers otherwise. A hit whose answers disagree "
    "is counted as a probable wrong answer; hits without both answers recorded are assumed wrong at "
    "the same rate. The net saving leaves out the cost of the probable wrong answers. This is "
    "possible only because the traffic was observed first; label a sample (llm-shadow label) to "
    "check it."
)


def _answer_scores(policy: Policy, d: pl.DataFrame, requests: pl.DataFrame, embedder: Embedder | None) -> pl.DataFrame:
    """The semantic lookups that found a stored prompt at least as similar as the lowest sweep
    threshold, with the agreement score of the two recorded answers (None: not compared)."""
    semantic = policy.semantic_cache
    looked_up = pl.col("semantic_cache").is_in(["hit", "miss"]).fill_null(False)
    found = (
        d.with_row_index("_row")
        .filter(looked_up & (pl.col("similarity") >= min(semantic.sweep)).fill_null(False))
        .filter(pl.col("semantic_source_id").is_not_null())
        .select("_row", "id", "semantic_source_id", "similarity", "cost_usd", "disposition")
    )
    scores: list[float | None] = [None] * found.height
    if found.height and "response_text" in requests.columns:
        real = requests["response_text"].gather(found["_row"]).to_list()
        sources = set(found["semantic_source_id"].to_list())
        answers = dict(requests.filter(pl.col("id").is_in(list(sources))).select("id", "response_text").iter_rows())
        served = [answers.get(source) for source in found["semantic_source_id"].to_list()]
        scores = agreement(real, served, embedder or HashingEmbedder())
    compared = pl.col("answer_agreement").is_not_null()
    return found.with_columns(pl.Series("answer_agreement", scores, dtype=pl.Float64)).with_columns(
        compared.alias("compared"),
        (compared & (pl.col("answer_agreement") < semantic.answer_threshold)).fill_null(False).alias("wrong"),
    )


def _wrong_estimate(hits: pl.DataFrame) -> dict[str, Any]:
    """Estimated wrong answers among `hits` (rows of `_answer_scores`) and the saving net of them."""
    sums = hits.select(
        pl.len().alias("hits"),
        pl.col("compared").sum().alias("compared"),
        pl.col("wrong").sum().alias("wrong"),
        pl.col("cost_usd").sum().alias("saving"),
        pl.col("cost_usd").filter(pl.col("wrong")).sum().alias("wrong_saving"),
        pl.col("cost_usd").filter(~pl.col("compared")).sum().alias("unknown_saving"),
    ).row(0, named=True)
    compared, wrong = int(sums["compared"] or 0), int(sums["wrong"] or 0)
    rate = wrong / compared if compared else None
    unknown = sums["hits"] - compared
    lost = _figure(sums["wrong_saving"]) + (rate or 0.0) * _figure(sums["unknown_saving"])
    return {
        "answers_compared": compared,
        "estimated_wrong_hits": round(wrong + (rate or 0.0) * unknown) if rate is not None else None,
        "estimated_wrong_rate": rate,
        "saving_net_usd": _figure(sums["saving"]) - lost,
    }


def _semantic_cache(
    policy: Policy, d: pl.DataFrame, requests: pl.DataFrame, scored: pl.DataFrame
) -> dict[str, Any] | None:
    semantic = policy.semantic_cache
    if semantic is None:
        return None
    hits = d.filter(pl.col("disposition") == "semantic_hit")
    looked_up = pl.col("semantic_cache").is_in(["hit", "miss"]).fill_null(False)
    sweep = []
    for index, threshold in enumerate(semantic.sweep):
        above = scored.filter(pl.col("similarity") >= threshold)
        # The hits this threshold adds to the next one up: a random sample of them to label.
        upper = semantic.sweep[index + 1] if index + 1 < len(semantic.sweep) else None
        band = above if upper is None else above.filter(pl.col("similarity") < upper)
        sweep.append(
            {
                "threshold": threshold,
                "hits": above.height,
                "hit_rate": above.height / d.height if d.height else 0.0,
                "saving_usd": _figure(above["cost_usd"].sum()),
                **_wrong_estimate(above),
                "estimated": threshold != semantic.threshold,
                "band_hits": band.height,
                "band_pairs": _sample_pairs(band, requests, semantic.sample_pairs, seed=index + 1),
            }
        )
    actual = scored.filter(pl.col("disposition") == "semantic_hit")
    return {
        "name": semantic.name,
        "threshold": semantic.threshold,
        "ttl_seconds": semantic.ttl_seconds,
        "scope": semantic.scope,
        "embedder": resolve_kind(semantic.embedder),
        "hits": hits.height,
        "hit_rate": hits.height / d.height if d.height else 0.0,
        "looked_up": int(d.select(looked_up.sum()).item()),
        "saving_usd": _figure(hits["saving_cache"].sum()),
        **_wrong_estimate(actual),
        "answer_threshold": semantic.answer_threshold,
        "wrong_hits_note": WRONG_HITS_NOTE,
        "latency_saved_ms": _figure(hits["latency_saved_ms"].sum()),
        "quality": "unverified",
        "excluded": _exclusions(d, "semantic_cache"),
        "sweep": sweep,
        "sweep_note": (
            "hits at other thresholds are estimated from the nearest stored prompt each request "
            "found in this run; set `threshold` to a value and run again for its exact figure"
        ),
        "sample_pairs": _sample_pairs(actual, requests, semantic.sample_pairs),
    }


def _sample_pairs(hits: pl.DataFrame, requests: pl.DataFrame, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """A random sample (seeded, so a run is repeatable) of up to `size` distinct matched pairs
    among `hits` (rows of `_answer_scores`): both prompts and answers side by side, so a person
    can judge false hits. Pairs of the same two prompt texts (in either order) count once. `requests` carries
    the prompt_text and response_text columns."""
    if hits.height == 0 or size == 0:
        return []
    texts: dict[str, dict] = {}
    if "prompt_text" in requests.columns:
        wanted = set(hits["id"].to_list()) | set(hits["semantic_source_id"].to_list())
        found = requests.filter(pl.col("id").is_in(list(wanted))).select("id", "prompt_text", "response_text")
        texts = {row["id"]: row for row in found.iter_rows(named=True)}
    order = np.random.default_rng(seed).permutation(hits.height).tolist()
    rows = hits.select("id", "semantic_source_id", "similarity", "answer_agreement").rows(named=True)
    pairs, seen = [], set()
    for index in order:
        row = rows[index]
        request, cached = texts.get(row["id"], {}), texts.get(row["semantic_source_id"], {})
        # A pair is its two prompts, in either order.
        key = tuple(sorted(map(str, (request.get("prompt_text"), cached.get("prompt_text"))))) if texts else row["id"]
        if key in seen:
            continue
        seen.add(key)
        pairs.append(
            {
                "similarity": row["similarity"],
                "request_id": row["id"],
                "request_prompt": request.get("prompt_text"),
                "request_answer": request.get("response_text"),
                "cached_id": row["semantic_source_id"],
                "cached_prompt": cached.get("prompt_text"),
                "cached_answer": cached.get("response_text"),
                "answer_agreement": row["answer_agreement"],
            }
        )
        if len(pairs) == size:
            break
    return sorted(pairs, key=lambda p: (-p["similarity"], p["request_id"]))


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
    base = d.select(
        "id", "budget_by", "budget_action", "budget_tripped", "saving_budget", "blocked_spend_usd"
    ).with_columns(requests["ts"].alias("ts"))
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
            pl.col("saving_budget").filter(acted).sum().alias("saving_usd"),
            pl.col("blocked_spend_usd").filter(acted).sum().alias("blocked_spend_usd"),
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
                    "saving_usd": _figure(row["saving_usd"]),
                    "blocked_spend_usd": _figure(row["blocked_spend_usd"]),
                    "spend_prevented_usd": _figure(row["saving_usd"]) + _figure(row["blocked_spend_usd"]),
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
                "saving_usd": sum(i["saving_usd"] for i in incidents),
                "blocked_spend_usd": sum(i["blocked_spend_usd"] for i in incidents),
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
    embedder: Embedder | None = None,
) -> SimulationResult:
    """The result of a run; `requests` and `decisions` are row-aligned (same order), and
    `requests` has the content columns when the run read them. `embedder` compares answers
    for the semantic cache's estimate of wrong hits (analysis.simulate.agreement)."""
    if policy.semantic_cache is not None:
        scored = _answer_scores(policy, decisions, requests, embedder)
        column = np.full(decisions.height, np.nan)
        column[scored["_row"].to_numpy()] = scored["answer_agreement"].fill_null(np.nan).to_numpy()
        decisions = decisions.with_columns(pl.Series("answer_agreement", column, nan_to_null=True))
    else:
        scored = None
    d = decisions.with_columns(
        (requests["cost_source"] if "cost_source" in requests.columns else pl.lit(None, dtype=pl.Utf8)).alias(
            "cost_source"
        ),
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
        "unanswered": counts["blocked"],
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
        cache={"exact": _exact_cache(policy, d), "semantic": _semantic_cache(policy, d, requests, scored)},
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
            f"{totals['unpriced_requests']:,} requests are unpriced (their model has no price): they are "
            "simulated but left out of every money figure (`llm-shadow prices missing` lists the models)."
        )
    if totals["unbilled_requests"]:
        notes.append(
            f"{totals['unbilled_requests']:,} requests have no token counts (errors before any output): "
            "nothing is known to have been billed, so they have no cost and no saving."
        )
    if totals["blocked"]:
        notes.append(
            f"{totals['blocked']:,} requests would have been blocked by a budget and left unanswered: "
            f"their {totals['blocked_spend_usd']:.4f} USD is spend prevented, shown apart and not counted "
            "in the saving."
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
    for entry, _, why in not_enforceable(policy, check_environment=False):
        notes.append(f"Not enforceable live: {entry.name}: {why}.")
    return notes
