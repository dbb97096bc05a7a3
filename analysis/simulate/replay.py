"""The one pass over requests in time order: the only part of a policy that needs history.

Given the facts of every request (columns, see `FrameFacts`), `replay` walks the requests in
order and decides what depends on earlier ones, in the documented order: exact cache, semantic
cache, budgets, rate limits; then it charges the budgets and stores the response. Its per-request
work is a handful of list reads and dict operations on the state objects, so a million requests
take seconds. Everything that does not depend on history (routing, batch prices, savings) is
then computed for all rows at once by `decisions_frame`.

One request (enforce mode, `PolicyEngine.decide`) goes through exactly this code with columns
of length one, so there is a single implementation of each rule.

Money, per request, with cost0 the recorded cost:
    after routing   c1 = cost at the routing target        (cost0 when not routed)
    after batch     c2 = c1 at the batch price              (c1 when not batched)
    after budgets   c3 = 0 when blocked, the downgrade target's cost when downgraded, else c2
    saving_routing = cost0 - c1, saving_batch = c1 - c2, saving_budget = c2 - c3 (downgrades)
A cache hit costs 0 and saves cost0 (saving_cache); nothing else applies to it. A blocked
request costs 0 but gets no answer: its whole cost0 is `blocked_spend_usd`, spend prevented,
not a saving (nor is it routed or batched). The four savings and the blocked spend add up to
cost0 - simulated cost, so nothing is counted twice, and no saving is claimed for a request left unanswered.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from analysis.simulate.facts import EngineState, FrameFacts, OneRequestFacts

if TYPE_CHECKING:
    from analysis.simulate.engine import PolicyEngine

DECISION_SCHEMA = {
    "id": pl.Utf8,
    "disposition": pl.Utf8,  # upstream | exact_hit | semantic_hit | blocked
    "exact_cache": pl.Utf8,  # hit | miss | miss_in_flight | miss_expired | miss_evicted | excluded
    "semantic_cache": pl.Utf8,  # hit | miss | excluded
    "cache_excluded": pl.Utf8,  # why a cache could not answer (analysis.simulate.cacheability)
    "excluded_duplicate": pl.Boolean,  # ... although an identical request came earlier
    "cache_policy": pl.Utf8,  # the cache that answered
    "cache_source_id": pl.Utf8,  # the request whose stored response answered
    "similarity": pl.Float64,  # best similarity the semantic cache found
    "semantic_source_id": pl.Utf8,  # the request whose stored prompt was that nearest one (hit or not)
    "routed_by": pl.Utf8,
    "batch_by": pl.Utf8,
    "budget_by": pl.Utf8,
    "budget_action": pl.Utf8,  # block | downgrade
    "budget_tripped": pl.Utf8,  # budgets whose limit this request's cost reached
    "budget_logged": pl.Utf8,  # budgets that only log (enforce mode, mode = "shadow") and would have acted
    "throttled_by": pl.Utf8,
    "model": pl.Utf8,  # as recorded
    "model_after": pl.Utf8,
    "quality": pl.Utf8,  # same | unverified
    "cost_usd": pl.Float64,  # as recorded (NULL: unpriced)
    "simulated_cost_usd": pl.Float64,
    "saving_cache": pl.Float64,
    "saving_routing": pl.Float64,
    "saving_batch": pl.Float64,
    "saving_budget": pl.Float64,  # downgrades only
    "latency_saved_ms": pl.Float64,
    "blocked_spend_usd": pl.Float64,  # what a blocked request would have cost: prevented, unanswered
}


@dataclass
class Decision:
    """What the policies would have done with one request (fields: DECISION_SCHEMA).

    Not frozen, though nothing changes a decision once made: a frozen dataclass's __init__
    sets its 28 fields through object.__setattr__, about five times the cost of plain
    assignments, paid by enforce mode on every request."""

    id: str
    disposition: str
    exact_cache: str | None
    semantic_cache: str | None
    cache_excluded: str | None
    excluded_duplicate: bool
    cache_policy: str | None
    cache_source_id: str | None
    similarity: float | None
    semantic_source_id: str | None
    routed_by: str | None
    batch_by: str | None
    budget_by: str | None
    budget_action: str | None
    budget_tripped: str | None
    budget_logged: str | None
    throttled_by: str | None
    model: str | None
    model_after: str | None
    quality: str
    cost_usd: float | None
    simulated_cost_usd: float | None
    saving_cache: float | None
    saving_routing: float | None
    saving_batch: float | None
    saving_budget: float | None
    latency_saved_ms: float
    blocked_spend_usd: float | None


SMALL_TRACE = 64  # up to this many requests, a trace is kept in lists (see Trace)


@dataclass(init=False)  # its own __init__: one call, not __init__ and __post_init__ (one per live decision)
class Trace:
    """What the pass decided, one entry per request (defaults: nothing happened)."""

    n: int
    disposition: list
    exact_cache: list
    semantic_cache: list
    cache_source_id: list
    similarity: list
    nearest_source: list
    budget_index: np.ndarray  # the last budget that acted
    budget_action: list
    downgrade_index: np.ndarray  # the last budget that downgraded
    budget_tripped: list
    budget_logged: list
    throttled_index: np.ndarray
    charged: np.ndarray  # USD charged to the budgets (budget alerts read it)

    def __init__(self, n: int) -> None:
        self.n = n
        self.disposition = ["upstream"] * n
        # Copies of one list of Nones: a copy costs half a `[None] * n` (a live decision makes
        # a trace of one request per call).
        nones = [None] * n
        self.exact_cache, self.semantic_cache = nones, nones.copy()
        self.cache_source_id, self.similarity, self.nearest_source = nones.copy(), nones.copy(), nones.copy()
        self.budget_action, self.budget_tripped, self.budget_logged = nones.copy(), nones.copy(), nones.copy()
        # Indexes, mostly -1: numpy arrays cost a byte or two per request, a list eight (but
        # making an array costs more than the few requests of a live decision: lists for those).
        if n <= SMALL_TRACE:
            unset = [-1] * n
            self.budget_index, self.downgrade_index, self.throttled_index = unset, unset.copy(), unset.copy()  # type: ignore[assignment]
            self.charged = [0.0] * n  # type: ignore[assignment]
        else:
            self.budget_index = np.full(n, -1, dtype=np.int16)
            self.downgrade_index = np.full(n, -1, dtype=np.int16)
            self.throttled_index = np.full(n, -1, dtype=np.int16)
            self.charged = np.zeros(n)

    def clear(self, i: int) -> None:
        """Row `i` back to the defaults above (nothing happened): enforce mode decides every
        request with the one trace of one row its engine keeps."""
        self.disposition[i] = "upstream"
        self.exact_cache[i] = self.semantic_cache[i] = None
        self.cache_source_id[i] = self.similarity[i] = self.nearest_source[i] = None
        self.budget_action[i] = self.budget_tripped[i] = self.budget_logged[i] = None
        self.budget_index[i] = self.downgrade_index[i] = self.throttled_index[i] = -1
        self.charged[i] = 0.0


def replay(
    engine: "PolicyEngine",
    facts: "FrameFacts | OneRequestFacts",
    state: EngineState,
    trace: Trace,
    start: int = 0,
    stop: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decide rows [start, stop) of `facts` in order, updating `state` and filling `trace`.

    The loop body is written for speed (local names, bound methods): it runs once per request.
    It reads each request as one row (`facts.rows`, REPLAY_COLUMNS and the values after them);
    the budgets and rate limits it walks are prepared once per engine and state (`replay_steps`).
    """
    p = engine.policy
    stop = len(facts) if stop is None else stop
    exact = state.exact
    exact_lookup = exact.lookup if exact is not None else None
    exact_store = exact.store if exact is not None else None
    semantic = state.semantic
    threshold = p.semantic_cache.threshold if p.semantic_cache else 2.0
    steps = state.replay_steps
    if steps is None or steps[0] is not engine:  # looked at inline: enforce mode replays once per call
        steps = replay_steps(engine, state)
    _, checks, charges, rates = steps
    budget_names = engine.budget_names

    t = trace
    disposition, exact_status, semantic_status = t.disposition, t.exact_cache, t.semantic_cache
    source, similarity, tripped = t.cache_source_id, t.similarity, t.budget_tripped  # three: no tuple made
    logged, nearest, charged = t.budget_logged, t.nearest_source, t.charged
    step = 65_536
    chunk = start
    while chunk < stop:  # not a range and min() per chunk: enforce mode replays one request per call
        end = chunk + step if chunk + step < stop else stop
        # This chunk's requests as rows of plain Python values (a million Python objects at once
        # would cost memory); a one-request frame gives its one row as it is.
        for i, (
            request_id,
            now,
            ok,
            tokens,
            batch,
            model,
            exact_key,
            exact_excluded,
            semantic_pid,
            semantic_row,
            semantic_excluded,
            arrival,
            cost,
            budget_keys,
            downgrade_costs,
            rate_keys,
        ) in enumerate(facts.rows(chunk, end), chunk):
            # 1. exact cache
            exact_ok = False
            if exact_lookup is not None:
                exact_ok = exact_excluded is None or exact_excluded == "streaming"  # cacheability.may_store
                if exact_excluded is None:
                    status, entry = exact_lookup(exact_key, now)
                    exact_status[i] = status
                    if status == "hit":
                        disposition[i] = "exact_hit"
                        source[i] = entry[2]
                        continue
                else:
                    exact_status[i] = "excluded"
            # 2. semantic cache
            semantic_ok = False
            if semantic is not None:
                semantic_ok = semantic_excluded is None or semantic_excluded == "streaming"
                if semantic_excluded is None:
                    found = semantic.nearest(semantic_pid, semantic_row, now)
                    semantic_status[i] = "miss"
                    if found is not None:
                        similarity[i] = found[0]
                        nearest[i] = found[2][2]
                        if found[0] >= threshold:
                            semantic.use(semantic_pid, found[1])
                            semantic_status[i] = "hit"
                            disposition[i] = "semantic_hit"
                            source[i] = found[2][2]
                            continue
                else:
                    semantic_status[i] = "excluded"
            # 3. budgets: stopped when the window has already spent the limit (`cost`: after
            # routing and batch, NaN when unpriced)
            if checks:
                blocked = False
                for b, spent_in, limit, block, target, logs_only in checks:
                    key = budget_keys[b]
                    if key is None or spent_in(key) < limit:
                        continue
                    downgrade_cost = downgrade_costs[b]
                    if not block and (model == target or downgrade_cost != downgrade_cost):  # NaN: unpriced
                        continue
                    if logs_only:  # noted, not applied: the budgets after it are still checked
                        name = budget_names[b]
                        logged[i] = name if logged[i] is None else f"{logged[i]},{name}"
                    elif block:
                        blocked = True
                        t.budget_index[i], t.budget_action[i] = b, "block"
                        break
                    else:
                        model = target
                        cost = downgrade_cost if cost == cost else cost
                        t.budget_index[i], t.budget_action[i], t.downgrade_index[i] = b, "downgrade", b
                if blocked:
                    disposition[i] = "blocked"
                    continue
            # 4. rate limits (batch traffic goes through the batch API's own quota)
            if rates and batch < 0:
                applying = [(r, rate_keys[r], windows) for r, windows in rates if rate_keys[r] is not None]
                if len(applying) == 1:
                    # One window: check and admit in one step, atomic in a shared backend, so
                    # proxies sharing it cannot all take the last slot.
                    r, key, windows = applying[0]
                    if not windows.admit_if_room(key, now, tokens):
                        t.throttled_index[i] = r
                else:
                    throttled = False
                    for r, key, windows in applying:
                        if windows.full(key, now):
                            t.throttled_index[i] = r
                            throttled = True
                            break
                    if not throttled:
                        for _, key, windows in applying:
                            windows.admit(key, now, tokens)
            # Charge the budgets, store the response.
            if charges:
                spend = cost if cost == cost else 0.0  # NaN: unpriced, charges nothing
                charged[i] = spend
            if charges and spend:  # a zero charge changes nothing (and would cost a live proxy a Redis round trip)
                for b, charge, name in charges:
                    key = budget_keys[b]
                    if key is not None and charge(key, spend):
                        tripped[i] = name if tripped[i] is None else f"{tripped[i]},{name}"
            if ok:
                if exact_ok:
                    exact_store(exact_key, arrival, request_id)
                if semantic_ok:
                    semantic.store(semantic_pid, semantic_row, arrival, request_id)
        if progress is not None:
            progress(end - chunk)
        chunk = end


def replay_steps(engine: "PolicyEngine", state: EngineState) -> tuple:
    """(engine, checks, charges, rates): what the replay loop walks per request, with `state`'s
    methods bound: per budget (index, spent_in, limit, blocks, downgrade target, only logs), per
    budget (index, charge, name), per rate limit (index, windows). Kept in the state, where
    `replay` finds them made for its engine: enforce mode replays one request per call with the
    same state."""
    budgets, rates = state.budgets, state.rates
    state.replay_steps = (
        engine,
        tuple(
            (b, budgets[b].spent_in, limit, block, target, logs_only)
            for b, limit, block, target, logs_only in engine.budget_steps
        ),
        tuple((b, budgets[b].charge, engine.budget_names[b]) for b in engine.budget_indexes),
        tuple((r, rates[r]) for r in engine.rate_indexes),
    )
    return state.replay_steps


def _names(names: list[str | None], index: np.ndarray, where: np.ndarray) -> np.ndarray:
    """names[index] where `where` and index >= 0, else None (an object array)."""
    lookup = np.array([*names, None], dtype=object)
    return lookup[np.where(where & (index >= 0), index, len(names))]


def decision_columns(
    engine: "PolicyEngine", facts: FrameFacts, trace: Trace, start: int = 0, stop: int | None = None
) -> Iterator[tuple[str, Any]]:
    """The decisions of rows [start, stop) column by column (DECISION_SCHEMA order): lists,
    or numpy arrays with NaN for a missing number. Columns are made one at a time so a
    million-row run holds one of them, not all, beside the frame being built."""
    p = engine.policy
    stop = len(facts) if stop is None else stop
    rows = slice(start, stop)
    c = facts.columns
    n = stop - start
    cost0 = facts.array("cost_usd", rows)
    route = np.asarray(facts.chunk("route", start, stop), dtype=np.int64)
    batch = np.asarray(facts.chunk("batch", start, stop), dtype=np.int64)
    disposition = np.asarray(trace.disposition[rows], dtype=object)
    hit = (disposition == "exact_hit") | (disposition == "semantic_hit")
    semantic_hit = disposition == "semantic_hit"
    downgrade = np.asarray(trace.downgrade_index[rows], dtype=np.int64)
    served = ~hit
    blocked = disposition == "blocked"
    answered = served & ~blocked  # went upstream: routing and batch apply to these only

    c1 = np.where(route >= 0, facts.array("route_cost", rows), cost0)
    c2 = np.where(batch >= 0, facts.array("batch_cost", rows), c1)
    c3 = c2.copy()
    for b in range(len(p.budgets)):
        chosen = downgrade == b
        if chosen.any():
            c3[chosen] = facts.array(f"downgrade_cost.{b}", rows)[chosen]
    c3[blocked] = 0.0
    priced = ~np.isnan(cost0)

    def money(values: np.ndarray) -> np.ndarray:
        return np.where(priced, values, np.nan)

    exact_status = trace.exact_cache[rows]
    yield "id", c["id"][rows] if isinstance(c["id"], pl.Series) else facts.chunk("id", start, stop)
    yield "disposition", disposition
    yield "exact_cache", exact_status
    yield "semantic_cache", trace.semantic_cache[rows]
    semantic_excluded = c["semantic_excluded"][rows] if p.semantic_cache else [None] * n
    yield (
        "cache_excluded",
        [
            e if e is not None else s
            for e, s in zip(facts.chunk("exact_excluded", start, stop), semantic_excluded, strict=True)
        ],
    )
    seen = np.asarray(facts.chunk("exact_seen_before", start, stop), dtype=bool)
    yield "excluded_duplicate", (np.asarray(exact_status, dtype=object) == "excluded") & seen
    cache_names = [p.exact_cache.name if p.exact_cache else None, p.semantic_cache.name if p.semantic_cache else None]
    yield (
        "cache_policy",
        _names(cache_names, np.where(disposition == "exact_hit", 0, np.where(semantic_hit, 1, -1)), served | hit),
    )
    yield "cache_source_id", trace.cache_source_id[rows]
    yield "similarity", trace.similarity[rows]
    yield "semantic_source_id", trace.nearest_source[rows]
    yield "routed_by", _names([r.name for r in p.routing], route, answered)
    yield "batch_by", _names([b.name for b in p.batch], batch, answered)
    yield "budget_by", _names([b.name for b in p.budgets], np.asarray(trace.budget_index[rows], dtype=np.int64), served)
    yield "budget_action", trace.budget_action[rows]
    yield "budget_tripped", trace.budget_tripped[rows]
    yield "budget_logged", trace.budget_logged[rows]
    yield (
        "throttled_by",
        _names([r.name for r in p.rate_limits], np.asarray(trace.throttled_index[rows], dtype=np.int64), served),
    )
    model = np.asarray(c["model"][rows], dtype=object)
    yield "model", model
    targets = _names([b.to for b in p.budgets], downgrade, served)
    yield (
        "model_after",
        np.where(hit, model, np.where(downgrade >= 0, targets, np.asarray(c["route_model"][rows], dtype=object))),
    )
    unverified = semantic_hit | (answered & ((route >= 0) | (downgrade >= 0)))
    yield "quality", np.where(unverified, "unverified", "same")
    yield "cost_usd", money(cost0)
    yield "simulated_cost_usd", money(np.where(hit, 0.0, c3))
    zero = np.zeros(n)
    yield "saving_cache", money(np.where(hit, cost0, zero))
    yield "saving_routing", money(np.where(answered & (route >= 0), cost0 - c1, zero))
    yield "saving_batch", money(np.where(answered & (batch >= 0), c1 - c2, zero))
    yield "saving_budget", money(np.where(answered, c2 - c3, zero))
    yield "latency_saved_ms", np.where(hit, np.nan_to_num(facts.array("latency_ms", rows)), 0.0)
    yield "blocked_spend_usd", money(np.where(blocked, cost0, zero))


def decisions_frame(
    engine: "PolicyEngine", facts: FrameFacts, trace: Trace, start: int = 0, stop: int | None = None
) -> pl.DataFrame:
    """The decisions of rows [start, stop) as a frame (DECISION_SCHEMA)."""
    series = []
    for name, values in decision_columns(engine, facts, trace, start, stop):
        dtype = DECISION_SCHEMA[name]
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            series.append(pl.Series(name, values, dtype=dtype, nan_to_null=True))
        elif isinstance(values, np.ndarray) and values.dtype == object:
            series.append(pl.Series(name, values.tolist(), dtype=dtype))
        else:
            series.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(series)


# What decision_row reads of a row, in the order it unpacks them.
DECISION_ROW_COLUMNS = (
    "id",
    "cost_usd",
    "route",
    "batch",
    "route_cost",
    "batch_cost",
    "exact_excluded",
    "semantic_excluded",
    "exact_seen_before",
    "model",
    "route_model",
    "latency_ms",
)


def decision_row(engine: "PolicyEngine", facts: "FrameFacts | OneRequestFacts", trace: Trace, index: int) -> Decision:
    """The decision of row `index` in plain Python values (None for a missing number): what
    `decision_columns` gives for that row, computed without numpy, since enforce mode asks for
    one row per request on the proxy's event loop (tests/test_simulate_properties.py checks
    that both agree on every field of every kind of decision)."""
    p = engine.policy
    i = index
    values = facts.row(DECISION_ROW_COLUMNS, i)  # as Python values
    (
        row_id,
        cost0,
        route,
        batch,
        route_cost,
        batch_cost,
        exact_excluded,
        semantic_excluded,
        seen,
        model,
        route_model,
        latency,
    ) = values
    cost0 = math.nan if cost0 is None else float(cost0)
    disposition = trace.disposition[i]
    exact_hit, semantic_hit = disposition == "exact_hit", disposition == "semantic_hit"
    hit = exact_hit or semantic_hit
    blocked = disposition == "blocked"
    answered = not hit and not blocked
    downgrade = int(trace.downgrade_index[i])
    budget_index, throttled_index = int(trace.budget_index[i]), int(trace.throttled_index[i])

    c1 = (math.nan if route_cost is None else float(route_cost)) if route >= 0 else cost0
    c2 = (math.nan if batch_cost is None else float(batch_cost)) if batch >= 0 else c1
    c3 = c2
    if downgrade >= 0:
        downgrade_cost = facts.row((f"downgrade_cost.{downgrade}",), i)[0]
        c3 = math.nan if downgrade_cost is None else float(downgrade_cost)
    if blocked:
        c3 = 0.0
    # The money fields: all None when the recorded cost is unknown; else each one, None if NaN
    # (checked inline: enforce mode builds one decision per request).
    if cost0 == cost0:  # priced (not NaN)
        money = [
            v if v == v else None
            for v in (
                cost0,
                0.0 if hit else c3,
                cost0 if hit else 0.0,
                cost0 - c1 if answered and route >= 0 else 0.0,
                c1 - c2 if answered and batch >= 0 else 0.0,
                c2 - c3 if answered else 0.0,
                cost0 if blocked else 0.0,
            )
        ]
        cost_usd, simulated, saving_cache, saving_routing, saving_batch, saving_budget, blocked_spend = money
    else:  # (a live request's cost is not known yet: no list made)
        cost_usd = simulated = saving_cache = saving_routing = saving_batch = saving_budget = blocked_spend = None
    exact_status = trace.exact_cache[i]
    excluded = exact_excluded
    if excluded is None and p.semantic_cache:
        excluded = semantic_excluded
    cache_policy = None
    if exact_hit and p.exact_cache:
        cache_policy = p.exact_cache.name
    elif semantic_hit and p.semantic_cache:
        cache_policy = p.semantic_cache.name
    similarity = trace.similarity[i]
    if hit:
        model_after = model
    elif downgrade >= 0:
        model_after = p.budgets[downgrade].to
    else:
        model_after = route_model
    latency = math.nan if latency is None else float(latency)
    # Positional, in field order, each labelled: 28 keyword arguments cost three times as much to
    # match (enforce mode builds one decision per request; the one-request test checks the order).
    return Decision(
        row_id,  # id
        disposition,  # disposition
        exact_status,  # exact_cache
        trace.semantic_cache[i],  # semantic_cache
        excluded,  # cache_excluded
        exact_status == "excluded" and bool(seen),  # excluded_duplicate
        cache_policy,  # cache_policy
        trace.cache_source_id[i],  # cache_source_id
        None if similarity is None or similarity != similarity else float(similarity),  # similarity
        trace.nearest_source[i],  # semantic_source_id
        p.routing[route].name if answered and route >= 0 else None,  # routed_by
        p.batch[batch].name if answered and batch >= 0 else None,  # batch_by
        p.budgets[budget_index].name if not hit and budget_index >= 0 else None,  # budget_by
        trace.budget_action[i],  # budget_action
        trace.budget_tripped[i],  # budget_tripped
        trace.budget_logged[i],  # budget_logged
        p.rate_limits[throttled_index].name if not hit and throttled_index >= 0 else None,  # throttled_by
        model,  # model
        model_after,  # model_after
        "unverified" if semantic_hit or (answered and (route >= 0 or downgrade >= 0)) else "same",  # quality
        cost_usd,  # cost_usd
        simulated,  # simulated_cost_usd
        saving_cache,  # saving_cache
        saving_routing,  # saving_routing
        saving_batch,  # saving_batch
        saving_budget,  # saving_budget
        (latency if latency == latency else 0.0) if hit else 0.0,  # latency_saved_ms
        blocked_spend,  # blocked_spend_usd
    )
