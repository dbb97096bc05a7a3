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
    rows: list[dict] = []
    request_id = decision["id"]

    def add(
        name: str,
        kind: str,
        action: str,
        matched_id: str | None = None,
        model_to: str | None = None,
        model_from: str | None = None,
        saving_usd: float | None = None,
        reason: str | None = None,
    ) -> None:
        rows.append(
            {
                "id": request_id,
                "ts": ts,
                "mode": mode_of(name),
                "policy": name,
                "kind": kind,
                "action": action,
                "matched_id": matched_id,
                "model_to": model_to,
                "model_from": model_from,
                "saving_usd": saving_usd,
                "reason": reason,
            }
        )

    saving = decision.get("saving_cache") if cache_saving is None else cache_saving
    for kind, cache in (("exact_cache", policy.exact_cache), ("semantic_cache", policy.semantic_cache)):
        status = decision.get(kind)
        if cache is None or status is None:
            continue
        if status == "hit":
            reason = None
            if kind == "semantic_cache" and decision.get("similarity") is not None:
                reason = f"similarity {decision['similarity']:.4f}"
            add(cache.name, kind, "hit", matched_id=decision.get("cache_source_id"), saving_usd=saving, reason=reason)
        elif status == "excluded":
            add(cache.name, kind, "miss", reason=f"excluded: {decision.get('cache_excluded')}")
        else:
            add(cache.name, kind, "miss", reason=None if status == "miss" else status)
    if decision.get("disposition") in ("exact_hit", "semantic_hit"):
        return rows
    routed_by = decision.get("routed_by")
    if routed_by:
        rule = next(r for r in policy.routing if r.name == routed_by)
        add(routed_by, "routing", "route", model_to=rule.to, model_from=decision.get("model"))
    if decision.get("batch_by"):
        add(decision["batch_by"], "batch", "batch", reason="batch API candidate")
    # The budget that acted, and before it any that only logged (mode = "shadow" in enforce mode).
    budget_by, logged = decision.get("budget_by"), decision.get("budget_logged")
    if budget_by or logged:
        logged_names = set(logged.split(",")) if logged else ()
        for budget in policy.budgets:
            if budget.name != budget_by and budget.name not in logged_names:
                continue
            reason = f"{budget.window} spend had reached limit_usd {budget.limit_usd:g}"
            action = decision.get("budget_action") if budget.name == budget_by else budget.action
            if action == "downgrade":
                add(
                    budget.name,
                    "budget",
                    "downgrade",
                    model_to=budget.to,
                    model_from=decision.get("model"),
                    reason=reason,
                )
            else:
                add(budget.name, "budget", "block", reason=reason)
    throttled_by = decision.get("throttled_by")
    if throttled_by:
        limit = next(r for r in policy.rate_limits if r.name == throttled_by)
        parts = []
        if limit.requests_per_minute is not None:
            parts.append(f"{limit.requests_per_minute} requests")
        if limit.tokens_per_minute is not None:
            parts.append(f"{limit.tokens_per_minute} tokens")
        add(throttled_by, "rate_limit", "throttle", reason=f"window full ({' or '.join(parts)} a minute)")
    return rows


def header_value(kind: str, action: str, policy: str) -> str:
    """The `x-llm-shadow-decision` header of a response the proxy answered or changed."""
    return f"{kind}={action}; policy={policy}"
