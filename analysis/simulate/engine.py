"""The decision for one request under a policy: pure functions over (request, policy state).

`PolicyEngine(policy, pricer).decide(record, state)` is what enforce mode will call once per
request. It works in two steps:

1. `facts(record)`: everything about the request that does not depend on earlier traffic:
   cache keys and whether the request may be cached (and if not, why), the routing rule that
   matches and the cost at its target, the batch price, the budget and rate-limit keys. The
   simulator computes the same facts for a whole frame at once, vectorised
   (analysis.simulate.batch.frame_facts); a test checks both ways agree on every field.
2. The part that depends on history (analysis.simulate.replay), in the documented order: exact
   cache, semantic cache, routing, batch, budgets, rate limits. It is one implementation,
   which the simulator runs over a million requests and `decide` over one.

Money is explained in analysis.simulate.replay: the baseline is the recorded cost_usd, each
policy is credited with the cost it removed at its step, and the steps add up to the total
saving, so overlapping policies are never counted twice.
"""

import numpy as np

from analysis.simulate.cacheability import exclusion_reason, may_store
from analysis.simulate.embedders import Embedder, make_embedder
from analysis.simulate.facts import (
    STREAMED,
    EngineState,
    Facts,
    OneRequestFacts,
    number_or_none,
    one_request_layout,
    state_key,
    to_microseconds,
    window_of,
)
from analysis.simulate.matching import CompiledMatch, Record, requested_model, scope_column, scope_value
from analysis.simulate.policy import Policy
from analysis.simulate.pricer import Pricer, PricingRows
from analysis.simulate.replay import Decision, Trace, decision_row, replay
from analysis.simulate.state import MemoryBackend, StateBackend


class PolicyEngine:
    """A policy ready to decide requests."""

    def __init__(
        self,
        policy: Policy,
        pricer: Pricer | None = None,
        embedder: Embedder | None = None,
        log_only: frozenset[str] = frozenset(),
    ):
        self.policy = policy
        # Budgets named in `log_only` (enforce mode's entries with mode = "shadow") only log: a
        # spent window is noted in the decision (`budget_logged`) but blocks or downgrades
        # nothing, so the budgets after it are still checked and the call is charged. The
        # simulator's own runs let every entry act (what shadow mode logs).
        self.log_only_budgets = frozenset(i for i, b in enumerate(policy.budgets) if b.name in log_only)
        # The budgets and rate limits as the replay loop reads them, prepared once (enforce mode
        # replays one request per call): per budget its limit, whether it blocks, its downgrade
        # target, whether it only logs (analysis.simulate.replay.replay_steps binds them to a state).
        self.budget_names = tuple(b.name for b in policy.budgets)
        self.budget_count, self.rate_count = len(policy.budgets), len(policy.rate_limits)
        # Their indexes, iterated by the replay loop's set-up (a tuple: no range or enumerate made per call).
        self.budget_indexes, self.rate_indexes = tuple(range(self.budget_count)), tuple(range(self.rate_count))
        self.budget_steps = tuple(
            (b, budget.limit_usd, budget.action == "block", budget.to, b in self.log_only_budgets)
            for b, budget in enumerate(policy.budgets)
        )
        self.pricer = pricer
        # The trace of each one-request decision (decide_with_facts), cleared per decision: a
        # new Trace is 13 lists per request. Decisions never run concurrently: each one updates
        # the state that the next one reads.
        self.one_trace = Trace(1)
        # Likewise the one-row frame its facts are read from, loaded with each request's.
        self.one_facts = OneRequestFacts(one_request_layout(self.budget_count, self.rate_count))
        self.routing = [CompiledMatch(rule.match) for rule in policy.routing]
        self.batch = [CompiledMatch(p.match) for p in policy.batch]
        self.budget_matches = [CompiledMatch(b.match) for b in policy.budgets]
        self.rate_matches = [CompiledMatch(r.match) for r in policy.rate_limits]
        # What `observe` reads of the policy on every request, prepared once: enforce mode
        # observes one request per call on the proxy's event loop.
        # Per budget and rate limit (and for the exact cache): the record field its scope reads
        # (None: scope global), the budget's window, and its match (None: it matches every request).
        self.exact_scope = scope_column(policy.exact_cache.scope) if policy.exact_cache else None
        self.budget_checks = tuple(
            (scope_column(b.scope), b.window, None if m.everything else m)
            for b, m in zip(policy.budgets, self.budget_matches, strict=True)
        )
        self.rate_checks = tuple(
            (scope_column(r.scope), None if m.everything else m)
            for r, m in zip(policy.rate_limits, self.rate_matches, strict=True)
        )
        self.downgrades = any(b.to for b in policy.budgets)  # a budget downgrades: its target's cost is needed
        self.no_downgrades = (None,) * len(policy.budgets)
        self.priced_steps = bool(self.routing or self.batch or self.downgrades)
        semantic = policy.semantic_cache
        if embedder is None and semantic is not None:
            embedder = make_embedder(
                semantic.embedder,
                url=semantic.embedder_url,
                model=semantic.embedder_model,
                api_key_env=semantic.embedder_api_key_env,
                data_dir=None,
            )
        self.embedder = embedder
        needs_prices = policy.routing or policy.batch or any(b.action == "downgrade" for b in policy.budgets)
        if needs_prices:
            if pricer is None:
                raise ValueError("this policy routes, batches or downgrades: it needs a price table")
            for rule in policy.routing:
                pricer.check_model(rule.to, rule.to_provider, policy, rule.origin, "to")
            for budget in policy.budgets:
                if budget.to is not None:
                    pricer.check_model(budget.to, budget.to_provider, policy, budget.origin, "to")

    def new_state(self, backend: StateBackend | None = None) -> EngineState:
        """Empty state for this policy, held by `backend` (in memory by default)."""
        p = self.policy
        backend = backend or MemoryBackend()
        state = EngineState()
        if p.exact_cache:
            c = p.exact_cache
            state.exact = backend.response_cache(c.name, c.ttl_seconds * 1_000_000, c.max_entries)
        if p.semantic_cache:
            s = p.semantic_cache
            state.semantic = backend.semantic_index(
                s.name,
                self.embedder,
                ttl_us=s.ttl_seconds * 1_000_000,
                max_entries=s.max_entries,
                bits=s.lsh_bits,
                tables=s.lsh_tables,
                bucket_size=s.bucket_size,
            )
        state.budgets = [backend.budget_windows(b.name, b.limit_usd) for b in p.budgets]
        state.rates = [backend.rate_windows(r.name, r.requests_per_minute, r.tokens_per_minute) for r in p.rate_limits]
        return state

    # -- step 1: facts ---------------------------------------------------------------------
    def observe(self, record: Record, state: EngineState) -> Facts:
        """The facts of one request (a mapping of `requests` columns, plus `system_prompt` and
        `prompt_text` from `contents` when known), after registering it in `state`: the exact
        cache's keys seen and the semantic index change, so call it once per request, in time
        order (as `batch.frame_facts` does for a whole frame)."""
        p, get = self.policy, record.get
        ts_us = to_microseconds(record["ts"])
        model = get("model")
        exact_key = exact_excluded = semantic_excluded = None
        exact_seen_before = False
        semantic_pid = semantic_row = -1
        if p.exact_cache:
            prompt = get("prompt_hash")
            if prompt and get("stream"):
                prompt += STREAMED  # a streamed answer answers streamed requests only
            if prompt:
                column = self.exact_scope
                exact_key = state_key("*" if column is None else get(column), prompt)
            exact_excluded = exclusion_reason(record, p.exact_cache.rules)
            if exact_key is not None and state.exact_seen is not None:
                exact_seen_before = exact_key in state.exact_seen
                state.exact_seen.add(exact_key)
        if p.semantic_cache:
            s = p.semantic_cache
            semantic_excluded = exclusion_reason(record, s.rules)
            if semantic_excluded is None and not get("prompt_text"):
                semantic_excluded = "no_prompt_text"
            if may_store(semantic_excluded):
                partition = (
                    scope_value(record, s.scope),
                    requested_model(record),
                    get("system_prompt") or "",
                    bool(get("stream")),  # a streamed answer answers streamed requests only
                )
                semantic_pid = state.semantic.partition(partition)
                semantic_row = state.semantic.register(record["prompt_text"])
        route, route_cost, route_model = -1, None, model
        batch, batch_cost = -1, None
        row = PricingRows.from_record(record) if self.priced_steps else None
        routed_to = routed_provider = None
        current = get("cost_usd")
        # Not even an empty enumerate when the policy routes nothing (enforce mode: every request).
        for index, match in enumerate(self.routing) if self.routing else ():
            if match.matches(record):
                rule = p.routing[index]
                if not self.pricer.can_move(model, get("model_requested"), get("endpoint"), rule.to, rule.to_provider):
                    break
                cost = number_or_none(self.pricer.costs_at(row, rule.to, rule.to_provider)[0])
                if cost is not None:
                    route, route_cost, route_model = index, cost, rule.to
                    routed_to, routed_provider, current = rule.to, rule.to_provider, cost
                break
        if self.batch and not get("batch"):
            for index, match in enumerate(self.batch):
                if match.matches(record):
                    now_cost = np.array([np.nan if current is None else current])
                    cost = number_or_none(
                        self.pricer.batch_costs(row, now_cost, [routed_to], [routed_provider], p.batch[index].discount)[
                            0
                        ]
                    )
                    if cost is not None:
                        batch, batch_cost = index, cost
                    break
        # A scope's value is `scope_value`'s, read here from the field prepared per budget and
        # rate limit (as for the exact cache above; None: scope global), and a match of every
        # request is not asked: enforce mode observes one request per call.
        budget_keys = tuple(
            [
                state_key("*" if column is None else get(column), window_of(ts_us, window))
                if match is None or match.matches(record)
                else None
                for column, window, match in self.budget_checks
            ]
        )
        if self.downgrades:
            asked = get("model_requested") if routed_to is None else routed_to
            downgrade_costs = tuple(
                [
                    number_or_none(self.pricer.costs_at(row, b.to, b.to_provider, batch=batch >= 0)[0])
                    if b.to
                    and key is not None
                    and self.pricer.can_move(route_model, asked, get("endpoint"), b.to, b.to_provider)
                    else None
                    for b, key in zip(p.budgets, budget_keys, strict=True)
                ]
            )
        else:
            downgrade_costs = self.no_downgrades
        rate_keys = tuple(
            [
                ("*" if column is None else get(column)) if match is None or match.matches(record) else None
                for column, match in self.rate_checks
            ]
        )
        # Positional, in field order, each labelled: keyword arguments cost more to match (enforce
        # mode observes one request per call).
        return Facts(
            record["id"],  # id
            ts_us,  # ts_us
            get("cost_usd"),  # cost_usd
            get("latency_ms"),  # latency_ms
            get("outcome") == "ok",  # ok
            (get("input_tokens") or 0) + (get("output_tokens") or 0),  # tokens
            model,  # model
            exact_key,  # exact_key
            exact_seen_before,  # exact_seen_before
            exact_excluded,  # exact_excluded
            semantic_pid,  # semantic_pid
            semantic_row,  # semantic_row
            semantic_excluded,  # semantic_excluded
            route,  # route
            route_cost,  # route_cost
            route_model,  # route_model
            batch,  # batch
            batch_cost,  # batch_cost
            budget_keys,  # budget_keys
            downgrade_costs,  # downgrade_costs
            rate_keys,  # rate_keys
        )

    # -- step 2: decide -------------------------------------------------------------------
    def decide(self, record: Record, state: EngineState) -> Decision:
        """The decision for `record`, the next request after those `state` has seen (which
        it updates): the simulator's own code (analysis.simulate.replay) on one request."""
        return self.decide_with_facts(record, state)[0]

    def decide_with_facts(self, record: Record, state: EngineState) -> tuple[Decision, Facts]:
        """`decide`, and the request's facts (its cache key, budget and rate keys): enforce
        mode settles the request with them when its answer has come (analysis.enforce.live)."""
        one = self.observe(record, state)
        facts = self.one_facts
        facts.load(one)
        trace = self.one_trace
        trace.clear(0)
        replay(self, facts, state, trace, 0, 1)
        return decision_row(self, facts, trace, 0), one
