"""The decision for one request under a policy: pure functions over (request, policy state).

`PolicyEngine(policy, pricer).decide(record, state)` is what enforce mode will call once per
request, and what the simulator calls, in effect, a million times. It works in two steps:

1. `facts(record)`: everything about the request that does not depend on earlier traffic:
   cache keys and whether the request may be cached (and if not, why), the routing rule that
   matches and the cost at its target, the batch price, the budget and rate-limit keys. The
   batch simulator (analysis.simulate.batch) computes the same `Facts` for a whole frame with
   vectorised polars; a test checks both ways agree.
2. `apply(facts, state)`: the part that depends on history, in the documented order: exact
   cache, semantic cache, routing, batch, budgets, rate limits. A cache hit ends the request
   (nothing is routed, charged or throttled); a blocked request stores nothing and charges
   nothing.

Money: the baseline is the recorded cost_usd, what was actually paid (provider prompt-cache
discounts included), so a cache hit saves exactly that. Each step's saving is the cost before
it minus the cost after it, credited to the policy that made the step; the steps add up to the
total saving, so overlapping policies are never counted twice. A request with no recorded cost
(unpriced) goes through every policy but carries no money (None). A throttled request keeps its
cost: a throttled client retries, so throttling prevents bursts, not spend.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from analysis.simulate.cacheability import exclusion_reason
from analysis.simulate.embedders import Embedder, HashingEmbedder
from analysis.simulate.matching import CompiledMatch, Record, requested_model, scope_value
from analysis.simulate.policy import Policy
from analysis.simulate.pricer import Pricer
from analysis.simulate.semantic import SemanticIndex
from analysis.simulate.state import BudgetWindows, RateWindows, ResponseCache

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000


def to_microseconds(ts: datetime) -> int:
    """A timezone-aware (or UTC-naive) datetime as integer microseconds since the epoch."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // timedelta(microseconds=1)


def window_of(ts_us: int, window: str) -> int:
    """Number of the calendar window (UTC) holding `ts_us`: hours or days since the epoch, or
    year * 12 + month - 1."""
    if window == "hour":
        return ts_us // HOUR_US
    if window == "day":
        return ts_us // DAY_US
    moment = EPOCH + timedelta(microseconds=ts_us)
    return moment.year * 12 + moment.month - 1


def window_start(window_id: int, window: str) -> datetime:
    if window == "hour":
        return EPOCH + timedelta(microseconds=window_id * HOUR_US)
    if window == "day":
        return EPOCH + timedelta(microseconds=window_id * DAY_US)
    return datetime(window_id // 12, window_id % 12 + 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Facts:
    """What the policies need to know about one request, independent of earlier traffic."""

    id: str
    ts_us: int
    cost_usd: float | None
    latency_ms: float | None
    ok: bool  # the request succeeded, so its response could be cached
    tokens: int  # input + output, for tokens-per-minute limits
    model: str | None
    exact_key: tuple | None = None
    exact_excluded: str | None = None
    semantic_pid: int = -1
    semantic_row: int = -1
    semantic_excluded: str | None = None
    route: int = -1  # index of the routing rule that matched
    route_cost: float | None = None
    batch: int = -1  # index of the batch policy that matched
    batch_cost: float | None = None
    budget_keys: tuple = ()  # per budget: (scope value, window) or None when it does not apply
    downgrade_costs: tuple = ()  # per budget: cost at its downgrade model, or None
    rate_keys: tuple = ()  # per rate limit: scope value, or None when it does not apply


@dataclass(slots=True)
class Decision:
    """What the policies would have done with one request, and what it would have cost."""

    id: str
    disposition: str = "upstream"  # upstream | exact_hit | semantic_hit | blocked
    exact_cache: str | None = None  # hit, miss, miss_in_flight, miss_expired, miss_evicted, excluded
    semantic_cache: str | None = None  # hit, miss, excluded
    cache_excluded: str | None = None  # why a cache could not answer (see cacheability)
    excluded_duplicate: bool = False  # ... although an earlier request was identical
    cache_source_id: str | None = None  # the request whose stored response answered
    similarity: float | None = None  # best similarity found by the semantic cache
    routed_by: str | None = None
    batch_by: str | None = None
    budget_by: str | None = None
    budget_action: str | None = None  # block | downgrade
    budget_tripped: str | None = None  # budgets whose limit this request's cost reached
    throttled_by: str | None = None
    model_after: str | None = None
    quality: str = "same"  # same | unverified (another model or a similar, not equal, prompt)
    cost_usd: float | None = None
    simulated_cost_usd: float | None = None
    saving_cache: float | None = None
    saving_routing: float | None = None
    saving_batch: float | None = None
    saving_budget: float | None = None
    latency_saved_ms: float = 0.0
    cache_policy: str | None = None


DECISION_FIELDS = list(Decision.__slots__)


@dataclass
class EngineState:
    """Everything a policy remembers; one per simulation run (or per enforce process)."""

    exact: ResponseCache | None = None
    exact_seen: set = field(default_factory=set)
    semantic: SemanticIndex | None = None
    budgets: list[BudgetWindows] = field(default_factory=list)
    rates: list[RateWindows] = field(default_factory=list)


class PolicyEngine:
    """A policy ready to decide requests."""

    def __init__(self, policy: Policy, pricer: Pricer | None = None, embedder: Embedder | None = None):
        self.policy = policy
        self.pricer = pricer
        self.routing = [CompiledMatch(rule.match) for rule in policy.routing]
        self.batch = [CompiledMatch(p.match) for p in policy.batch]
        self.budget_matches = [CompiledMatch(b.match) for b in policy.budgets]
        self.rate_matches = [CompiledMatch(r.match) for r in policy.rate_limits]
        semantic = policy.semantic_cache
        self.embedder = embedder or (HashingEmbedder() if semantic else None)
        needs_prices = policy.routing or policy.batch or any(b.action == "downgrade" for b in policy.budgets)
        if needs_prices:
            if pricer is None:
                raise ValueError("this policy routes, batches or downgrades: it needs a price table")
            for rule in policy.routing:
                pricer.check_model(rule.to, rule.to_provider, policy, rule.origin, "to")
            for budget in policy.budgets:
                if budget.to is not None:
                    pricer.check_model(budget.to, budget.to_provider, policy, budget.origin, "to")

    def new_state(self) -> EngineState:
        p = self.policy
        state = EngineState()
        if p.exact_cache:
            state.exact = ResponseCache(p.exact_cache.ttl_seconds * 1_000_000, p.exact_cache.max_entries)
        if p.semantic_cache:
            s = p.semantic_cache
            state.semantic = SemanticIndex(
                self.embedder,
                ttl_us=s.ttl_seconds * 1_000_000,
                max_entries=s.max_entries,
                bits=s.lsh_bits,
                tables=s.lsh_tables,
                bucket_size=s.bucket_size,
            )
        state.budgets = [BudgetWindows(b.limit_usd) for b in p.budgets]
        state.rates = [RateWindows(r.requests_per_minute, r.tokens_per_minute) for r in p.rate_limits]
        return state

    # -- step 1: facts ---------------------------------------------------------------------
    def facts(self, record: Record, state: EngineState) -> Facts:
        """The history-independent facts of one request (a mapping of `requests` columns,
        plus `system_prompt` and `prompt_text` from `contents` when known)."""
        p = self.policy
        ts_us = to_microseconds(record["ts"])
        facts = Facts(
            id=record["id"],
            ts_us=ts_us,
            cost_usd=record.get("cost_usd"),
            latency_ms=record.get("latency_ms"),
            ok=record.get("outcome") == "ok",
            tokens=(record.get("input_tokens") or 0) + (record.get("output_tokens") or 0),
            model=record.get("model"),
        )
        if p.exact_cache:
            prompt = record.get("prompt_hash")
            facts.exact_key = (scope_value(record, p.exact_cache.scope), prompt) if prompt else None
            facts.exact_excluded = exclusion_reason(record, p.exact_cache.rules)
        if p.semantic_cache:
            s = p.semantic_cache
            reason = exclusion_reason(record, s.rules)
            if reason is None and not record.get("prompt_text"):
                reason = "no_prompt_text"
            facts.semantic_excluded = reason
            if reason is None:
                partition = (scope_value(record, s.scope), requested_model(record), record.get("system_prompt") or "")
                facts.semantic_pid = state.semantic.partition(partition)
                facts.semantic_row = state.semantic.register(record["prompt_text"])
        model, provider = record.get("model"), record.get("provider")
        for index, match in enumerate(self.routing):
            if match.matches(record):
                rule = p.routing[index]
                cost = self.pricer.cost_at(record, rule.to, rule.to_provider, batch=False)
                if cost is not None:
                    facts.route, facts.route_cost = index, cost
                    model, provider = rule.to, rule.to_provider
                break
        for index, match in enumerate(self.batch):
            if match.matches(record) and not record.get("batch"):
                cost = self.pricer.cost_at(record, model, provider, batch=True, discount=p.batch[index].discount)
                if cost is not None:
                    facts.batch, facts.batch_cost = index, cost
                break
        batched = facts.batch >= 0
        facts.budget_keys = tuple(
            (scope_value(record, b.scope), window_of(ts_us, b.window)) if m.matches(record) else None
            for b, m in zip(p.budgets, self.budget_matches, strict=True)
        )
        facts.downgrade_costs = tuple(
            self.pricer.cost_at(record, b.to, b.to_provider, batch=batched) if b.to and key is not None else None
            for b, key in zip(p.budgets, facts.budget_keys, strict=True)
        )
        facts.rate_keys = tuple(
            scope_value(record, r.scope) if m.matches(record) else None
            for r, m in zip(p.rate_limits, self.rate_matches, strict=True)
        )
        return facts

    # -- step 2: apply ---------------------------------------------------------------------
    def apply(self, f: Facts, state: EngineState, notes: list[str] | None = None) -> Decision:
        """Decide one request given everything before it (`state`, which is updated)."""
        p = self.policy
        now = f.ts_us
        cost = f.cost_usd
        priced = cost is not None
        d = Decision(f.id, cost_usd=cost, model_after=f.model)
        if priced:
            d.saving_cache = d.saving_routing = d.saving_batch = d.saving_budget = 0.0

        # 1. exact cache
        exact = p.exact_cache
        exact_ok = False
        if exact is not None:
            key = f.exact_key
            if f.exact_excluded is not None:
                d.exact_cache = "excluded"
                d.cache_excluded = f.exact_excluded
                d.excluded_duplicate = key is not None and key in state.exact_seen
                if notes is not None:
                    notes.append(f"{exact.name}: not cacheable ({f.exact_excluded})")
            else:
                exact_ok = True
                status, entry = state.exact.lookup(key, now)
                d.exact_cache = status
                if status == "hit":
                    d.disposition = "exact_hit"
                    d.cache_policy = exact.name
                    d.cache_source_id = entry.source_id
                    if notes is not None:
                        age = (now - entry.available_at) / 1e6
                        notes.append(f"{exact.name}: hit, same prompt_hash answered by request {entry.source_id} {age:.0f} s earlier (ttl {exact.ttl_seconds} s, scope {exact.scope})")
                elif notes is not None:
                    notes.append(f"{exact.name}: {status.replace('_', ' ')}")
            if key is not None:
                state.exact_seen.add(key)

        # 2. semantic cache
        semantic = p.semantic_cache
        semantic_ok = False
        if semantic is not None and d.disposition == "upstream":
            if f.semantic_excluded is not None:
                d.semantic_cache = "excluded"
                if d.cache_excluded is None:
                    d.cache_excluded = f.semantic_excluded
                if notes is not None:
                    notes.append(f"{semantic.name}: not cacheable ({f.semantic_excluded})")
            else:
                semantic_ok = True
                found = state.semantic.nearest(f.semantic_pid, f.semantic_row, now)
                d.semantic_cache = "miss"
                if found is not None:
                    similarity, row, entry = found
                    d.similarity = similarity
                    if similarity >= semantic.threshold:
                        state.semantic.use(f.semantic_pid, row)
                        d.semantic_cache = "hit"
                        d.disposition = "semantic_hit"
                        d.cache_policy = semantic.name
                        d.cache_source_id = entry.source_id
                        d.quality = "unverified"
                if notes is not None:
                    if found is None:
                        notes.append(f"{semantic.name}: miss, no stored prompt in the same partition came close")
                    else:
                        verdict = "hit" if d.semantic_cache == "hit" else "miss"
                        notes.append(f"{semantic.name}: {verdict}, nearest stored prompt (request {found[2].source_id}) has similarity {found[0]:.4f}, threshold {semantic.threshold}")

        if d.disposition != "upstream":
            d.latency_saved_ms = f.latency_ms or 0.0
            if priced:
                d.saving_cache = cost
                d.simulated_cost_usd = 0.0
            return d

        # 3. routing
        if f.route >= 0:
            rule = p.routing[f.route]
            d.routed_by = rule.name
            d.model_after = rule.to
            d.quality = "unverified"
            if priced:
                d.saving_routing = cost - f.route_cost
                cost = f.route_cost
            if notes is not None:
                notes.append(f"routing rule {rule.name!r} matched: sent to {rule.to}, cost at its prices ${f.route_cost:.6f} (quality unverified)")
        elif notes is not None and p.routing:
            notes.append("routing: no rule matched")

        # 4. batch
        if f.batch >= 0:
            policy = p.batch[f.batch]
            d.batch_by = policy.name
            if priced:
                d.saving_batch = cost - f.batch_cost
                cost = f.batch_cost
            if notes is not None:
                notes.append(f"batch {policy.name!r}: latency-tolerant, priced at the batch rate ${f.batch_cost:.6f}")

        # 5. budgets
        blocked = False
        for index, key in enumerate(f.budget_keys):
            if key is None:
                continue
            budget = p.budgets[index]
            windows = state.budgets[index]
            if not windows.exhausted(key):
                continue
            if notes is not None:
                notes.append(f"budget {budget.name!r}: {budget.scope} {key[0]!r} had spent ${windows.spent_in(key):.4f} of ${budget.limit_usd:.2f} this {budget.window}")
            if budget.action == "block":
                blocked = True
                d.budget_by, d.budget_action = budget.name, "block"
                if priced:
                    d.saving_budget += cost
                    cost = 0.0
                break
            target_cost = f.downgrade_costs[index]
            if d.model_after != budget.to and target_cost is not None:
                d.budget_by, d.budget_action = budget.name, "downgrade"
                d.model_after = budget.to
                d.quality = "unverified"
                if priced:
                    d.saving_budget += cost - target_cost
                    cost = target_cost

        if blocked:
            d.disposition = "blocked"
            d.simulated_cost_usd = cost
            return d

        # 6. rate limits (batch traffic goes through the batch API's own quota)
        if f.batch < 0:
            for index, key in enumerate(f.rate_keys):
                if key is not None and state.rates[index].full(key, now):
                    d.throttled_by = p.rate_limits[index].name
                    if notes is not None:
                        used = state.rates[index].usage(key, now)
                        limit = p.rate_limits[index]
                        notes.append(f"rate limit {limit.name!r}: {limit.scope} {key!r} already had {used[0]} requests / {used[1]} tokens in the last minute (limits {limit.requests_per_minute} / {limit.tokens_per_minute}): throttled; a client retries, so its cost is kept")
                    break
            if d.throttled_by is None:
                for index, key in enumerate(f.rate_keys):
                    if key is not None:
                        state.rates[index].admit(key, now, f.tokens)

        # Charge the budgets and store the response in the caches.
        spend = cost if priced else 0.0
        tripped = None
        for index, key in enumerate(f.budget_keys):
            if key is not None and state.budgets[index].charge(key, spend):
                name = p.budgets[index].name
                tripped = name if tripped is None else f"{tripped},{name}"
        d.budget_tripped = tripped
        if f.ok:
            available_at = now + int((f.latency_ms or 0.0) * 1000)
            if exact_ok:
                state.exact.store(f.exact_key, available_at, f.id)
            if semantic_ok:
                state.semantic.store(f.semantic_pid, f.semantic_row, available_at, f.id)
        d.simulated_cost_usd = cost
        return d

    def decide(self, record: Record, state: EngineState, notes: list[str] | None = None) -> Decision:
        """The decision for `record`, the next request after those `state` has seen."""
        return self.apply(self.facts(record, state), state, notes)
