"""A policy decision as rows of the `decisions` relation, the same way live and simulated.

`PolicyEngine.decide` gives one `Decision` per request (the simulator gives the same fields
for every request as a frame). `decision_rows` turns either into rows of `decisions`: one per
policy entry that looked at the request and had something to say. A cache that is configured
looks at every request (hit or miss, with the miss kind or the exclusion rule as the reason);
routing, batch, budgets and rate limits give a row when they acted (route, batch, block,
downgrade, throttle). The parity test compares these rows between `simulate`, shadow mode and
enforce mode, so the function is shared rather than written twice.
"""

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from analysis.simulate.policy import Policy

PARITY_COLUMNS = ("id", "policy", "kind", "action", "matched_id", "model_to")
EXACT, SEMANTIC = "exact_cache", "semantic_cache"
HITS = ("exact_hit", "semantic_hit")


def decision_rows(
    decision: Mapping[str, Any],
    policy: Policy,
    ts: datetime | None,
    mode_of: Callable[[str], str],
    cache_saving: float | None = None,
) -> list[dict]:
    """Rows of `decisions` for one request's decision (a Decision's fields as a mapping).

    `mode_of(name)` says whether the entry acted (enforce) or only decided (shadow);
    `cache_saving` is what a cache hit saved (the stored answer's cost); by default the
    decision's own saving_cache (the simulator's figure)."""
    # Enforce mode logs one decision per request: the fields are read by key (every caller passes
    # all of them: a Decision's, or a row of decisions_frame), not with a method call each; a
    # cache's row (one per request) is made with positional arguments by a module function (a
    # closure made per call, with keyword arguments to match, cost half as much again).
    request_id = decision["id"]
    rows: list[dict] = []
    for kind in (EXACT, SEMANTIC):  # a constant tuple: no (kind, cache) pairs made per call
        cache = policy.exact_cache if kind == EXACT else policy.semantic_cache
        status = decision[kind]
        if cache is None or status is None:
            continue
        name = cache.name
        matched = saving = reason = None
        if status == "hit":
            action = "hit"
            matched = decision["cache_source_id"]
            if kind == SEMANTIC and decision["similarity"] is not None:
                reason = f"similarity {decision['similarity']:.4f}"
            saving = decision["saving_cache"] if cache_saving is None else cache_saving
        else:
            action = "miss"
            if status == "excluded":
                reason = f"excluded: {decision['cache_excluded']}"
            elif status != "miss":
                reason = status
        rows.append(_row(request_id, ts, mode_of(name), name, kind, action, matched, None, None, saving, reason))
    if decision["disposition"] in HITS:
        return rows
    routed_by = decision["routed_by"]
    if routed_by:
        rule = next(r for r in policy.routing if r.name == routed_by)
        mode = mode_of(routed_by)
        rows.append(_row(request_id, ts, mode, routed_by, "routing", "route", None, rule.to, decision["model"]))
    batch_by = decision["batch_by"]
    if batch_by:
        reason = "batch API candidate"
        rows.append(_row(request_id, ts, mode_of(batch_by), batch_by, "batch", "batch", reason=reason))
    # The budget that acted, and before it any that only logged (mode = "shadow" in enforce mode).
    budget_by, logged = decision["budget_by"], decision["budget_logged"]
    if budget_by or logged:
        logged_names = set(logged.split(",")) if logged else ()
        for budget in policy.budgets:
            name = budget.name
            if name != budget_by and name not in logged_names:
                continue
            reason = f"{budget.window} spend had reached limit_usd {budget.limit_usd:g}"
            action = decision["budget_action"] if name == budget_by else budget.action
            mode = mode_of(name)
            if action == "downgrade":
                model_from = decision["model"]
                rows.append(
                    _row(request_id, ts, mode, name, "budget", "downgrade", None, budget.to, model_from, None, reason)
                )
            else:
                rows.append(_row(request_id, ts, mode, name, "budget", "block", reason=reason))
    throttled_by = decision["throttled_by"]
    if throttled_by:
        limit = next(r for r in policy.rate_limits if r.name == throttled_by)
        parts = []
        if limit.requests_per_minute is not None:
            parts.append(f"{limit.requests_per_minute} requests")
        if limit.tokens_per_minute is not None:
            parts.append(f"{limit.tokens_per_minute} tokens")
        reason = f"window full ({' or '.join(parts)} a minute)"
        rows.append(_row(request_id, ts, mode_of(throttled_by), throttled_by, "rate_limit", "throttle", reason=reason))
    return rows


def _row(
    request_id: str,
    ts: datetime | None,
    mode: str,
    name: str,
    kind: str,
    action: str,
    matched_id: str | None = None,
    model_to: str | None = None,
    model_from: str | None = None,
    saving_usd: float | None = None,
    reason: str | None = None,
) -> dict:
    """One row of `decisions`."""
    return {
        "id": request_id,
        "ts": ts,
        "mode": mode,
        "policy": name,
        "kind": kind,
        "action": action,
        "matched_id": matched_id,
        "model_to": model_to,
        "model_from": model_from,
        "saving_usd": saving_usd,
        "reason": reason,
    }


def header_value(kind: str, action: str, policy: str) -> str:
    """The `x-llm-shadow-decision` header of a response the proxy answered or changed."""
    return f"{kind}={action}; policy={policy}"
