"""What the fallback rules would have done with the failures recorded in the traffic.

For each recorded call that failed (a 429, a 5xx, a timeout, a connection that could not be
made), `Fallbacks.plan` (analysis.simulate.fallback, the code the proxy runs too) gives the
attempts its rule would have sent. Each attempt is then judged by the recorded traffic
itself: a target (upstream host and model) is taken to be answering at the attempt's time if
the last call recorded to it before that time was answered, failing if that call failed.
A retry of the failed upstream is therefore a rescue only when the recorded traffic shows the
upstream answering again within the backoff. A target with no recorded call at all is assumed
to answer, and counted apart (`rescued_assumed`), so the figure can be read with and without
that assumption.

The cost of a rescue is an estimate: the failed call's tokens (a failure usually has none: the
tokens of the next answered call with the same prompt_hash, the client's own retry, stand in)
priced at the rescuing attempt's model. Failed attempts cost nothing (a 429 or 5xx is not
billed). Attempts' own durations are not added to the waits, only the backoffs.

The proxy rescues every one of these kinds live (analysis.enforce.fallback: in enforce mode it
sends a call a rule covers itself, so a timeout or a refused connection is its own to rescue),
and shadow mode logs the plan of each, as `rows` gives them here.
"""

import bisect
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import polars as pl

from analysis.simulate.enforceable import other_wire_format
from analysis.simulate.fallback import Fallbacks, Plan, failure_kind, planned_row
from analysis.simulate.matching import requested_model
from analysis.simulate.policy import Policy
from analysis.simulate.pricer import Pricer, PricingRows

FAILED = (
    (pl.col("status") == 429)
    | pl.col("status").is_between(500, 599)
    | (pl.col("status").is_null() & pl.col("outcome").is_in(["timeout", "connect_error"]))
)
ESTIMATE_NOTE = (
    "Estimates: an attempt is judged by the recorded traffic (a target answers if the last call recorded "
    "to it before the attempt was answered; a target never recorded is assumed to answer, counted apart); "
    "a rescue costs the failed call's tokens, or those of the client's own answered retry of the same "
    "prompt, at the rescuing model's list price; failed attempts cost nothing."
)


class _Timeline:
    """Recorded calls per (host, model): when each started and whether it was answered."""

    def __init__(self, frame: pl.DataFrame):
        self.calls: dict[tuple[str | None, str | None], tuple[list[int], list[bool]]] = {}
        if frame.height == 0:
            return
        rows = frame.select(
            "host",
            pl.coalesce(pl.when(pl.col("model_requested") != "").then(pl.col("model_requested")), "model").alias("m"),
            pl.col("ts").dt.epoch("us").alias("t"),
            (pl.col("outcome") == "ok").fill_null(False).alias("ok"),
        )
        for (host, model), group in rows.group_by("host", "m", maintain_order=True):
            group = group.sort("t")
            self.calls[(host, model)] = (group["t"].to_list(), group["ok"].to_list())

    def state(self, host: str | None, model: str | None, at_us: int) -> bool | None:
        """Whether the last call to (host, model) started at or before `at_us` was answered;
        None when none was recorded."""
        found = self.calls.get((host, model))
        if found is None:
            return None
        times, ok = found
        i = bisect.bisect_right(times, at_us)
        return ok[i - 1] if i else None


def _target(plan_attempt, failed_host: str | None) -> tuple[str | None, str]:
    host = urlsplit(plan_attempt.url).hostname if plan_attempt.url else failed_host
    return host, plan_attempt.model


def replay_fallbacks(
    policy: Policy, requests: pl.DataFrame, pricer: Pricer | None, rows: list[dict] | None = None
) -> dict[str, Any] | None:
    """The fallback section of a simulation result (None when the policy has no fallback rule):
    per rule, the failures it handled, how many its attempts would have rescued and at what
    estimated cost. `requests` is the recorded frame (any order). `rows`, when given, gets the
    `decisions` rows shadow mode writes for the same failures (the plan of each failure a rule
    handles: analysis.simulate.fallback.planned_row), for the parity test."""
    fallbacks = Fallbacks(policy)
    if not fallbacks:
        return None
    frame = requests.sort("ts", "id") if requests.height else requests
    failed = frame.filter(FAILED)
    timeline = _Timeline(frame) if failed.height else None
    donors = _answered_by_prompt(frame) if failed.height else {}
    stats = {rule.name: _empty(rule) for rule in policy.fallbacks}
    unhandled: Counter[str] = Counter()
    for record in failed.iter_rows(named=True):
        kind = failure_kind(record["status"], record["outcome"])
        plan = fallbacks.plan(record, record["status"], record["outcome"])
        if plan is None or kind is None:
            unhandled[kind or "other"] += 1
            continue
        _count(stats[plan.rule.name], plan, record, timeline, donors, pricer)
        if rows is not None:
            rows.append(planned_row(plan, record["id"], record["ts"], "shadow"))
    rules = [_finish(stats[rule.name]) for rule in policy.fallbacks]
    return {
        "failures": failed.height,
        "handled": sum(r["failures"] for r in rules),
        "unhandled": dict(unhandled),
        "rules": rules,
        "note": ESTIMATE_NOTE,
    }


def _answered_by_prompt(frame: pl.DataFrame) -> dict[str, tuple[list[int], list[dict]]]:
    """Answered calls with token counts, per prompt_hash, in time order: a failed call's
    stand-in for the tokens its rescue would have used."""
    answered = frame.filter((pl.col("outcome") == "ok") & pl.col("prompt_hash").is_not_null())
    found: dict[str, tuple[list[int], list[dict]]] = defaultdict(lambda: ([], []))
    for row in answered.iter_rows(named=True):
        times, rows = found[row["prompt_hash"]]
        times.append(_us(row["ts"]))
        rows.append(row)
    return dict(found)


def _us(ts) -> int:
    return int(ts.timestamp() * 1_000_000)


def _empty(rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "mode": rule.mode,
        "on": list(rule.on),
        "retries": rule.retries,
        "backoff_ms": rule.backoff_ms,
        "timeout_s": rule.timeout_s,
        "chain": [{k: v for k, v in (("to", t.to), ("to_url", t.to_url)) if v} for t in rule.chain],
        "not_enforceable": [why for t in rule.chain if (why := other_wire_format(t, rule))],
        "failures": 0,
        "by_kind": Counter(),
        "rescued": 0,
        "rescued_by": Counter(),
        "rescued_assumed": 0,
        "not_rescued": 0,
        "client_retried": 0,
        "attempts": 0,
        "estimated_cost_usd": 0.0,
        "unpriced": 0,
        "wait_s": 0.0,
    }


def _count(
    stats: dict[str, Any],
    plan: Plan,
    record: dict[str, Any],
    timeline: "_Timeline | None",
    donors: dict[str, tuple[list[int], list[dict]]],
    pricer: Pricer | None,
) -> None:
    stats["failures"] += 1
    stats["by_kind"][plan.kind] += 1
    start = _us(record["ts"])
    donor = _donor(record, start, donors)
    if donor is not None:
        stats["client_retried"] += 1
    now = start + int((record.get("latency_ms") or 0.0) * 1000)  # the failed answer has come
    waited = 0.0
    host = record.get("host")
    for attempt in plan.attempts:
        now += int(attempt.backoff_s * 1_000_000)
        waited += attempt.backoff_s
        stats["attempts"] += 1
        target_host, model = _target(attempt, host)
        answering = timeline.state(target_host, model, now) if timeline is not None else None
        if answering is False:
            continue
        stats["rescued"] += 1
        label = "retry" if attempt.action == "retry" else f"{model}" + (f" at {target_host}" if attempt.url else "")
        stats["rescued_by"][label] += 1
        if answering is None:
            stats["rescued_assumed"] += 1
        stats["wait_s"] += waited
        cost = _estimate(donor or record, attempt.model, attempt.provider, pricer)
        if cost is None:
            stats["unpriced"] += 1
        else:
            stats["estimated_cost_usd"] += cost
        return
    stats["not_rescued"] += 1


def _donor(record: dict[str, Any], start: int, donors) -> dict[str, Any] | None:
    """The failed call itself when it has token counts, else the next answered call with the
    same prompt (the client's own retry); None when there is neither."""
    if record.get("output_tokens"):
        return record
    found = donors.get(record.get("prompt_hash")) if record.get("prompt_hash") else None
    if found is None:
        return None
    times, rows = found
    i = bisect.bisect_right(times, start)
    return rows[i] if i < len(rows) else None


def _estimate(record: dict[str, Any], model: str, provider: str | None, pricer: Pricer | None) -> float | None:
    if pricer is None or (record.get("input_tokens") is None and record.get("output_tokens") is None):
        return None
    cost = pricer.costs_at(PricingRows.from_record(record), model or requested_model(record) or "", provider)[0]
    return None if np.isnan(cost) else float(cost)


def _finish(stats: dict[str, Any]) -> dict[str, Any]:
    stats["by_kind"] = dict(stats["by_kind"])
    stats["rescued_by"] = dict(stats["rescued_by"])
    return stats
