"""Why one request got its decision: each policy in order, what it looked at, what it did.

A decision can depend on every request before it (a cache entry, a budget's spend, a rate
window), so `explain` replays the traffic up to the request (the simulator's own pass), reads
the state at that moment, then decides the request itself. The steps say which rule fired and
why, in words, with the numbers that made the difference: the cached request and its age,
the similarity against the threshold, each routing condition, the spend against the limit.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from analysis.simulate.engine import Decision, PolicyEngine
from analysis.simulate.facts import EPOCH, split_state_key, window_start
from analysis.simulate.fallback import Fallbacks, failure_kind
from analysis.simulate.replay import decision_row, replay
from analysis.simulate.simulator import ContentsSource, replay_frames
from reports.format import usd  # explanations are text for people: money is written as everywhere else


class RequestNotFound(LookupError):
    """No recorded request has that id (in the range simulated)."""


@dataclass
class Step:
    policy: str  # policy name, or the stage ("routing") when no policy of it applied
    kind: str  # exact_cache, semantic_cache, routing, batch, budget, rate_limit, fallback
    outcome: str  # hit, miss, excluded, fired, no match, blocked, downgraded, throttled, ...
    reasons: list[str]


@dataclass
class Explanation:
    request: dict[str, Any]
    decision: Decision
    steps: list[Step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.request.items()},
            "decision": asdict(self.decision),
            "steps": [asdict(s) for s in self.steps],
        }


def _time(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _conditions(reasons: list[tuple[str, bool]]) -> list[str]:
    return [f"{'yes' if ok else 'NO '}  {text}" for text, ok in reasons] or ["no conditions: matches every request"]


REQUEST_FIELDS = [
    "id",
    "ts",
    "provider",
    "endpoint",
    "model_requested",
    "model",
    "team",
    "feature",
    "key_id",
    "user",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "latency_ms",
    "outcome",
    "stream",
    "temperature",
    "n",
    "has_tools",
    "has_images",
    "prompt_hash",
]


def explain(engine: PolicyEngine, requests: pl.DataFrame, contents: ContentsSource, request_id: str) -> Explanation:
    """The decision for request `request_id` under `engine`'s policy, with its reasons."""
    positions = requests.sort(["ts", "id"]).with_row_index("_position").filter(pl.col("id") == request_id)
    if positions.height == 0:
        raise RequestNotFound(f"no request with id {request_id!r} in the range simulated")
    index = int(positions["_position"][0])
    run = replay_frames(engine, requests, contents, stop=index)
    p, facts, state = engine.policy, run.facts.columns, run.state
    record = run.requests.row(index, named=True)
    now = facts["ts_us"][index]
    steps: list[Step] = []

    exact = p.exact_cache
    answered = False
    if exact is not None:
        key = facts["exact_key"][index]
        reason = facts["exact_excluded"][index]
        if reason is not None:
            detail = {
                "no_prompt_hash": "the request has no prompt_hash",
                "temperature": f"temperature {record['temperature']} is not 0 (allow_sampling = false)",
                "temperature_unset": "the request sets no temperature, so the provider samples "
                "(allow_unset_temperature = false)",
                "n": f"n = {record['n']} asks for several answers (allow_sampling = false)",
                "tools": "the request offers tools, whose calls can have effects (allow_tools = false)",
                "streaming": "the request streams (allow_streaming = false); its answer is still stored",
            }[reason]
            seen = " An identical request came earlier." if facts["exact_seen_before"][index] else ""
            steps.append(Step(exact.name, "exact_cache", "excluded", [f"not cacheable: {detail}.{seen}"]))
        else:
            entry = state.exact.entries.get(key)
            scope_value, _ = split_state_key(key)
            where = f"scope {exact.scope}" + ("" if exact.scope == "global" else f" = {scope_value!r}")
            if entry is None:
                evicted = key in state.exact.evicted
                why = (
                    "an identical response was stored but pushed out by LRU (max_entries)"
                    if evicted
                    else "no identical earlier request was answered"
                )
                steps.append(Step(exact.name, "exact_cache", "miss", [f"{why} ({where})."]))
            elif now < entry[0]:
                steps.append(
                    Step(
                        exact.name,
                        "exact_cache",
                        "miss",
                        [
                            f"identical request {entry[2]} was still in flight: its answer arrived at "
                            f"{_time(entry[0])} ({where})."
                        ],
                    )
                )
            elif now >= entry[1]:
                steps.append(
                    Step(
                        exact.name,
                        "exact_cache",
                        "miss",
                        [
                            f"identical request {entry[2]} was answered at {_time(entry[0])}, but its entry expired "
                            f"at {_time(entry[1])} (ttl {exact.ttl_seconds} s, {where})."
                        ],
                    )
                )
            else:
                age = (now - entry[0]) / 1e6
                steps.append(
                    Step(
                        exact.name,
                        "exact_cache",
                        "hit",
                        [
                            f"same prompt_hash answered by request {entry[2]} at {_time(entry[0])}, {age:,.0f} s "
                            f"earlier (ttl {exact.ttl_seconds} s, {where}): the stored answer is replayed; saves the "
                            f"recorded cost and {record['latency_ms'] or 0:,.0f} ms."
                        ],
                    )
                )
                answered = True

    semantic = p.semantic_cache
    if semantic is not None and not answered:
        reason = facts["semantic_excluded"][index]
        if reason is not None:
            steps.append(Step(semantic.name, "semantic_cache", "excluded", [f"not cacheable: {reason}."]))
        else:
            found = state.semantic.nearest(facts["semantic_pid"][index], facts["semantic_row"][index], now)
            if found is None:
                steps.append(
                    Step(
                        semantic.name,
                        "semantic_cache",
                        "miss",
                        ["no stored prompt of the same scope, model and system prompt came near (LSH buckets)."],
                    )
                )
            else:
                similarity, _, entry = found
                hit = similarity >= semantic.threshold
                steps.append(
                    Step(
                        semantic.name,
                        "semantic_cache",
                        "hit" if hit else "miss",
                        [
                            f"nearest stored prompt: request {entry[2]}, cosine similarity {similarity:.4f} "
                            f"{'>=' if hit else '<'} threshold {semantic.threshold}"
                            + (": its answer is replayed (quality unverified)." if hit else ".")
                        ],
                    )
                )
                answered = hit

    if answered:
        steps.append(
            Step("-", "routing", "not reached", ["answered from the cache: no routing, budget or rate limit applies."])
        )
    else:
        steps += _routing_steps(engine, record, facts, index)
        budget_steps = _budget_steps(engine, state, facts, index)
        steps += budget_steps
        if all(s.outcome != "blocked" for s in budget_steps):
            steps += _rate_steps(engine, state, facts, index, now)

    steps += _fallback_steps(engine, record)
    replay(engine, run.facts, state, run.trace, index, index + 1)
    decision = decision_row(engine, run.facts, run.trace, index)
    shown = {k: record.get(k) for k in REQUEST_FIELDS}
    return Explanation(shown, decision, steps)


def _fallback_steps(engine: PolicyEngine, record: dict) -> list[Step]:
    """What a fallback rule would have done about the request's failed answer (the plan the
    proxy would carry out; `simulate` judges its attempts by the recorded traffic)."""
    fallbacks = Fallbacks(engine.policy)
    kind = failure_kind(record.get("status"), record.get("outcome"))
    if not fallbacks or kind is None:
        return []
    plan = fallbacks.plan(record, record.get("status"), record.get("outcome"))
    if plan is None:
        return [Step("-", "fallback", "no match", [f"the answer failed ({kind}); no fallback rule handles it."])]
    live = "" if kind in ("429", "5xx") else " Not rescuable live: the call's own attempt got no answer."
    return [Step(plan.rule.name, "fallback", plan.attempts[0].action, [f"{plan.describe()}.{live}"])]


def _routing_steps(engine: PolicyEngine, record: dict, facts: dict, index: int) -> list[Step]:
    p = engine.policy
    steps = []
    routed = facts["route"][index]
    for position, (rule, match) in enumerate(zip(p.routing, engine.routing, strict=True)):
        reasons = _conditions(match.explain(record))
        if position == routed:
            cost = facts["route_cost"][index]
            reasons.append(
                f"sent to {rule.to}: {usd(cost)} at its list price for the same tokens, no provider prompt-cache "
                "discount (quality unverified)."
            )
            steps.append(Step(rule.name, "routing", "fired", reasons))
            break
        if match.matches(record):
            reasons.append(
                f"matched, but {rule.to} cannot price this request (no price or no token counts): not routed."
            )
            steps.append(Step(rule.name, "routing", "not priced", reasons))
            break
        steps.append(Step(rule.name, "routing", "no match", reasons))
    batch = facts["batch"][index]
    if batch >= 0:
        policy = p.batch[batch]
        steps.append(
            Step(
                policy.name,
                "batch",
                "batched",
                _conditions(engine.batch[batch].explain(record))
                + [
                    f"priced at the batch rate: {usd(facts['batch_cost'][index])}; the answer comes asynchronously "
                    "(up to 24 h)."
                ],
            )
        )
    return steps


def _budget_steps(engine: PolicyEngine, state, facts: dict, index: int) -> list[Step]:
    steps = []
    for b, budget in enumerate(engine.policy.budgets):
        key = facts[f"budget_key.{b}"][index]
        if key is None:
            steps.append(
                Step(budget.name, "budget", "not applicable", ["the request does not meet the budget's conditions."])
            )
            continue
        scope_value, window = split_state_key(key)
        spent = state.budgets[b].spent_in(key)
        where = f"{budget.scope} {scope_value!r}" if budget.scope != "global" else "all traffic"
        since = window_start(int(window), budget.window).strftime("%Y-%m-%d %H:%M UTC")
        text = f"{where} had spent {usd(spent)} of {usd(budget.limit_usd)} in the {budget.window} from {since}"
        if spent < budget.limit_usd:
            steps.append(Step(budget.name, "budget", "within limit", [text + "."]))
        elif budget.action == "block":
            steps.append(
                Step(budget.name, "budget", "blocked", [text + ": the limit was reached, the request is blocked."])
            )
            break
        else:
            steps.append(
                Step(
                    budget.name,
                    "budget",
                    "downgraded",
                    [text + f": the limit was reached, the request goes to {budget.to} (quality unverified)."],
                )
            )
    return steps


def _rate_steps(engine: PolicyEngine, state, facts: dict, index: int, now: int) -> list[Step]:
    steps = []
    if facts["batch"][index] >= 0 and engine.policy.rate_limits:
        return [Step("-", "rate_limit", "not applicable", ["batch traffic goes through the batch API's own quota."])]
    for r, limit in enumerate(engine.policy.rate_limits):
        key = facts[f"rate_key.{r}"][index]
        if key is None:
            steps.append(
                Step(limit.name, "rate_limit", "not applicable", ["the request does not meet the limit's conditions."])
            )
            continue
        requests, tokens = state.rates[r].usage(key, now)
        full = state.rates[r].full(key, now)
        text = (
            f"{limit.scope} {key!r} had {requests} requests and {tokens:,} tokens in the last minute "
            f"(limits: {limit.requests_per_minute or '-'} requests, {limit.tokens_per_minute or '-'} tokens)"
        )
        if full:
            steps.append(
                Step(
                    limit.name,
                    "rate_limit",
                    "throttled",
                    [text + ": throttled. Its cost is kept: a throttled client retries."],
                )
            )
            break
        steps.append(Step(limit.name, "rate_limit", "admitted", [text + "."]))
    return steps
