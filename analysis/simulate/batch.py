"""The simulator's fast path: the facts of every request at once, then one pass in time order.

`engine.PolicyEngine.observe` describes one request; `frame_facts` computes the same `Facts` for
a whole `requests` frame with polars and numpy (matching, cache keys, cacheability, windows,
target costs), so the only per-request Python left is `PolicyEngine.apply`, the part that
depends on earlier traffic (cache contents, budget spend, rate windows). Requests are taken in
(ts, id) order, the order enforce mode would have seen them.
"""

import numpy as np
import polars as pl

from analysis.simulate.cacheability import exclusion_reasons, may_store
from analysis.simulate.engine import PolicyEngine
from analysis.simulate.facts import (
    DAY_US,
    HOUR_US,
    STREAMED,
    EngineState,
    FrameFacts,
    shared_strings,
    state_key_expr,
)
from analysis.simulate.matching import requested_model_expr, scope_expr
from analysis.simulate.pricer import PricingRows

TEXT_COLUMNS = ["system_prompt", "prompt_text", "response_text"]  # the contents a replay reads


def _in_order(frame: pl.DataFrame) -> bool:
    ts, ids = pl.col("ts"), pl.col("id")
    later = (ts > ts.shift()) | ((ts == ts.shift()) & (ids > ids.shift()))
    return frame.height < 2 or bool(frame.select(later.slice(1).all()).item())


def ordered(requests: pl.DataFrame, contents: pl.DataFrame | None) -> pl.DataFrame:
    """Requests in (ts, id) order (as the store returns them: then no copy is made), with the
    content columns joined when given."""
    frame = requests if _in_order(requests) else requests.sort(["ts", "id"])
    if contents is not None:
        texts = contents.select("id", *[c for c in TEXT_COLUMNS if c in contents.columns])
        if not (texts.height == frame.height and texts["id"].equals(frame["id"])):
            # Not row for row (content not kept for every call): match them by id.
            texts = frame.select("id").join(
                texts.unique("id", keep="first"), on="id", how="left", maintain_order="left"
            )
        frame = frame.hstack(texts.drop("id").get_columns())  # shares the columns, copies nothing
    return frame


def _window_ids(frame: pl.DataFrame, ts_us: np.ndarray, window: str) -> np.ndarray:
    if window == "hour":
        return ts_us // HOUR_US
    if window == "day":
        return ts_us // DAY_US
    return frame.select(
        (pl.col("ts").dt.year().cast(pl.Int64) * 12 + pl.col("ts").dt.month().cast(pl.Int64) - 1).alias("m")
    )["m"].to_numpy()


def _scope_values(frame: pl.DataFrame, scope: str) -> list:
    return shared_strings(frame.select(pl.col("id"), scope_expr(scope).alias("s"))["s"])  # id: one value per row


def _movable(engine: PolicyEngine, frame: pl.DataFrame, targets: list[tuple[str, str | None]]) -> list[np.ndarray]:
    """Per target: whether each row may be moved to it (Pricer.can_move, decided once per
    distinct served model, requested model and endpoint)."""
    keys = frame.select("model", "model_requested", "endpoint")
    distinct = keys.unique(maintain_order=True)
    codes = keys.join(
        distinct.with_row_index("_k"),
        on=["model", "model_requested", "endpoint"],
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )["_k"].to_numpy()
    out = []
    for target, provider in targets:
        allowed = np.array(
            [engine.pricer.can_move(m, r, e, target, provider) for m, r, e in distinct.iter_rows()], dtype=bool
        )
        out.append(allowed[codes] if len(allowed) else np.zeros(0, dtype=bool))
    return out


def _movable_after_routing(
    engine: PolicyEngine, frame: pl.DataFrame, route: np.ndarray, target: str, provider: str | None
) -> np.ndarray:
    """Whether each row, after routing, may be downgraded to `target`."""
    p = engine.policy
    allowed = _movable(engine, frame, [(target, provider)])[0]
    for index, rule in enumerate(p.routing):
        rows = route == index
        if rows.any():
            endpoints = frame["endpoint"].filter(pl.Series(rows)).unique().to_list()
            ok = {e: engine.pricer.can_move(rule.to, rule.to, e, target, provider) for e in endpoints}
            allowed[rows] = [ok[e] for e in frame["endpoint"].filter(pl.Series(rows)).to_list()]
    return allowed


def frame_facts(engine: PolicyEngine, frame: pl.DataFrame, state: EngineState) -> FrameFacts:
    """`engine.observe` for every row of `frame` (already `ordered`), registering semantic texts
    in `state`."""
    p = engine.policy
    n = frame.height
    ts_us = frame.select(pl.col("ts").dt.epoch("us").alias("t"))["t"].to_numpy()
    cost_array = frame["cost_usd"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    none = [None] * n
    minus_one = [-1] * n
    caches = p.exact_cache is not None or p.semantic_cache is not None
    tokens = frame["input_tokens"].fill_null(0).cast(pl.Int64) + frame["output_tokens"].fill_null(0).cast(pl.Int64)
    # Big columns stay compact (Series, numpy); the replay pass makes lists a chunk at a time.
    columns: dict[str, object] = {
        "id": frame["id"],
        "ts_us": ts_us,
        "cost_usd": cost_array,
        "latency_ms": frame["latency_ms"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        "ok": (frame["outcome"] == "ok").fill_null(False).to_numpy() if caches else np.zeros(n, dtype=bool),
        "tokens": tokens.to_numpy() if p.rate_limits else np.zeros(n, dtype=np.int64),
        "model": shared_strings(frame["model"]),
    }

    # Exact cache.
    columns["exact_key"] = none
    columns["exact_seen_before"] = [False] * n
    columns["exact_excluded"] = none
    if p.exact_cache:
        prompt = pl.col("prompt_hash")
        streamed = pl.col("stream").fill_null(False) if "stream" in frame.columns else pl.lit(False)
        part = pl.when(streamed).then(prompt + pl.lit(STREAMED)).otherwise(prompt)  # see facts.STREAMED
        key = (
            pl.when(prompt.is_null() | (prompt == ""))
            .then(None)
            .otherwise(state_key_expr(scope_expr(p.exact_cache.scope), part))
        )
        keys = frame.select(key.alias("k"))["k"]
        columns["exact_key"] = keys
        columns["exact_seen_before"] = (keys.is_not_null() & ~keys.is_first_distinct()).to_numpy()
        columns["exact_excluded"] = shared_strings(exclusion_reasons(frame, p.exact_cache.rules))

    # Semantic cache.
    columns["semantic_pid"] = minus_one
    columns["semantic_row"] = minus_one
    columns["semantic_excluded"] = none
    if p.semantic_cache:
        s = p.semantic_cache
        reasons = shared_strings(exclusion_reasons(frame, s.rules))
        texts = frame["prompt_text"].to_list() if "prompt_text" in frame.columns else none
        reasons = [r if r is not None or t else "no_prompt_text" for r, t in zip(reasons, texts, strict=True)]
        eligible = [may_store(r) for r in reasons]  # looked up, or stored as a source only
        partitions = frame.select(
            scope_expr(s.scope).alias("scope"),
            requested_model_expr().alias("model"),
            (pl.col("system_prompt").fill_null("") if "system_prompt" in frame.columns else pl.lit("")).alias("system"),
            # A streamed answer answers streamed requests only, a JSON answer JSON requests (the
            # form enforce mode can replay).
            (pl.col("stream").fill_null(False) if "stream" in frame.columns else pl.lit(False)).alias("stream"),
        )
        index = state.semantic
        keys = partitions.rows()
        pids = [index.partition(k) if ok else -1 for k, ok in zip(keys, eligible, strict=True)]
        index.register_many([t for t, ok in zip(texts, eligible, strict=True) if ok])
        rows = index.text_rows
        columns["semantic_pid"] = pids
        columns["semantic_row"] = [rows[t] if ok else -1 for t, ok in zip(texts, eligible, strict=True)]
        columns["semantic_excluded"] = reasons

    # Routing: the first rule that matches; not routed when its target cannot price the row.
    pricing = PricingRows.from_frame(frame) if (p.routing or p.batch or any(b.to for b in p.budgets)) else None
    route = np.full(n, -1, dtype=np.int64)
    for index, match in enumerate(engine.routing):
        route[(route == -1) & match.mask(frame)] = index
    movable = _movable(engine, frame, [(r.to, r.to_provider) for r in p.routing])
    for index in range(len(p.routing)):
        route[(route == index) & ~movable[index]] = -2  # matched, but already there or cannot serve it
    route[route == -2] = -1
    route_cost = np.full(n, np.nan)
    for index, rule in enumerate(p.routing):
        rows = np.flatnonzero(route == index)
        if len(rows):
            route_cost[rows] = engine.pricer.costs_at(pricing.take(rows), rule.to, rule.to_provider)
    route[np.isnan(route_cost)] = -1
    columns["route"] = route
    columns["route_cost"] = route_cost
    routed_to = [p.routing[r].to if r >= 0 else None for r in route.tolist()]
    columns["route_model"] = [t if t is not None else m for t, m in zip(routed_to, columns["model"], strict=True)]
    routed_provider = [p.routing[r].to_provider if r >= 0 else None for r in route.tolist()]

    # Batch: the first batch policy that matches a request not already sent as a batch.
    batch = np.full(n, -1, dtype=np.int64)
    if p.batch:
        open_rows = ~frame["batch"].fill_null(False).to_numpy()
        for index, match in enumerate(engine.batch):
            batch[(batch == -1) & open_rows & match.mask(frame)] = index
    batch_cost = np.full(n, np.nan)
    current = np.where(route >= 0, route_cost, cost_array)
    for index, policy in enumerate(p.batch):
        rows = np.flatnonzero(batch == index)
        if len(rows):
            batch_cost[rows] = engine.pricer.batch_costs(
                pricing.take(rows),
                current[rows],
                [routed_to[r] for r in rows],
                [routed_provider[r] for r in rows],
                policy.discount,
            )
    batch[np.isnan(batch_cost)] = -1
    columns["batch"] = batch
    columns["batch_cost"] = batch_cost
    batched = batch >= 0

    # Budgets: (scope value, window) where the budget applies, the downgrade cost.
    for b, (budget, match) in enumerate(zip(p.budgets, engine.budget_matches, strict=True)):
        applies = match.mask(frame)
        windows = pl.Series(_window_ids(frame, ts_us, budget.window))
        keys = frame.select(
            pl.when(pl.Series(applies)).then(state_key_expr(scope_expr(budget.scope), pl.lit(windows))).alias("k")
        )["k"]
        columns[f"budget_key.{b}"] = shared_strings(keys)
        downgrade = np.full(n, np.nan)
        if budget.to:
            applies = applies & _movable_after_routing(engine, frame, route, budget.to, budget.to_provider)
            rows = np.flatnonzero(applies)
            if len(rows) == n:  # the budget applies to every request: no subset to copy
                downgrade = engine.pricer.costs_at(pricing, budget.to, budget.to_provider, batch=batched)
            elif len(rows):
                downgrade[rows] = engine.pricer.costs_at(
                    pricing.take(rows), budget.to, budget.to_provider, batch=batched[rows]
                )
        columns[f"downgrade_cost.{b}"] = downgrade

    # Rate limits: the scope value where the limit applies.
    for r, (limit, match) in enumerate(zip(p.rate_limits, engine.rate_matches, strict=True)):
        applies = match.mask(frame).tolist()
        scope = _scope_values(frame, limit.scope)
        columns[f"rate_key.{r}"] = [s if a else None for s, a in zip(scope, applies, strict=True)]
    return FrameFacts(columns, len(p.budgets), len(p.rate_limits))
