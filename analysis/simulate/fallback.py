"""Fallback rules: what to do when an answer fails, decided the same way live and simulated.

A `[[fallback]]` rule (analysis.simulate.policy.FallbackRule) matches requests like a routing
rule, and reacts to the failures it lists in `on`: a 429, a 5xx, a timeout, a connection that
could not be made. Its plan is a list of attempts: `retries` times the same model on the same
upstream, each after an exponential backoff with jitter, then each step of its `chain` (another
model, or another upstream speaking the same wire format with its own key), at once.

`Fallbacks.plan(record, status, outcome)` is the one decision: the simulator calls it for each
recorded failure (analysis.simulate.fallback_replay), the proxy for each live one
(analysis.enforce.fallback), so both follow the same rule, the same `on` list and the same
attempts. Only what happens to each attempt differs: live, the upstream answers; simulated,
the recorded traffic says whether the target was answering at that time.
"""

import random
from dataclasses import dataclass
from typing import Any

from analysis.simulate.matching import CompiledMatch, Record, requested_model
from analysis.simulate.policy import FallbackRule, Policy

RETRY, FALLBACK = "retry", "fallback"  # the `action` of an attempt's row in `decisions`
JITTER_LOW = 0.5  # a backoff waits between half and all of its nominal time ("equal jitter")


def failure_kind(status: int | None, outcome: str | None) -> str | None:
    """What went wrong with a call, in the words of a rule's `on`: "429", "5xx", "timeout",
    "connect_error"; None for anything a fallback does not handle (an answer, a client error,
    a client that left, a stream cut after it started)."""
    if status == 429:
        return "429"
    if status is not None and 500 <= status <= 599:
        return "5xx"
    if status is None and outcome in ("timeout", "connect_error"):
        return outcome
    return None


def handles(rule: FallbackRule, kind: str, status: int | None) -> bool:
    """Whether `rule` reacts to a failure of `kind` (with this status)."""
    return kind in rule.on or (kind == "5xx" and str(status) in rule.on)


@dataclass(frozen=True)
class Attempt:
    """One call a fallback sends: the same target again (retry) or a chain step (fallback)."""

    number: int  # 1 for the first attempt after the failed call
    action: str  # RETRY | FALLBACK
    model: str
    provider: str | None
    url: str | None  # another upstream's base URL; None: the failed call's own upstream
    api_key_env: str | None
    backoff_s: float  # the nominal wait before this attempt (jitter takes it down to half)

    def wait(self, rng: random.Random) -> float:
        """The wait before this attempt, with jitter."""
        return self.backoff_s * rng.uniform(JITTER_LOW, 1.0)


@dataclass(frozen=True)
class Plan:
    """The fallback decision for one failed call."""

    rule: FallbackRule
    kind: str
    status: int | None
    attempts: tuple[Attempt, ...]

    def describe(self) -> str:
        """In words, for the `reason` of a decision row."""
        what = f"{self.kind} ({self.status})" if self.status is not None else self.kind
        steps = []
        if self.rule.retries:
            steps.append(f"retry {self.rule.retries} time{'s' if self.rule.retries > 1 else ''}")
        for target in self.rule.chain:
            where = f" at {target.to_url}" if target.to_url else ""
            steps.append(f"fall back to {target.to}{where}")
        return f"{what}: {', then '.join(steps)}"


def attempts_of(rule: FallbackRule, model: str | None, provider: str | None = None) -> tuple[Attempt, ...]:
    """The attempts of `rule` for a call to `model`: the retries, then the chain."""
    found: list[Attempt] = []
    for i in range(rule.retries):
        backoff = rule.backoff_ms / 1000 * (2**i)
        found.append(Attempt(len(found) + 1, RETRY, model or "", provider, None, None, backoff))
    for target in rule.chain:
        found.append(
            Attempt(len(found) + 1, FALLBACK, target.to, target.to_provider, target.to_url, target.to_api_key_env, 0.0)
        )
    return tuple(found)


class Fallbacks:
    """The fallback rules of a policy, ready to decide failed calls."""

    def __init__(self, policy: Policy):
        self.rules = policy.fallbacks
        self.matches = [CompiledMatch(rule.match) for rule in self.rules]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, record: Record) -> FallbackRule | None:
        """The first rule whose conditions hold for the request (as routing picks its rule)."""
        for rule, match in zip(self.rules, self.matches, strict=True):
            if match.matches(record):
                return rule
        return None

    def plan(self, record: Record, status: int | None, outcome: str | None) -> Plan | None:
        """What to do about a call of `record` that ended with `status` / `outcome`: None when
        it did not fail in a way a rule matching it reacts to."""
        kind = failure_kind(status, outcome)
        if kind is None:
            return None
        rule = self.rule_for(record)
        if rule is None or not handles(rule, kind, status):
            return None
        return Plan(rule, kind, status, attempts_of(rule, requested_model(record), record.get("provider")))


def planned_row(plan: Plan, call_id: str, ts: Any, mode: str) -> dict:
    """The `decisions` row of a failure the rule decided about without acting (shadow mode,
    simulate): the first attempt of the plan, and the whole plan in words."""
    first = plan.attempts[0]
    return decision_row(call_id, ts, mode, plan.rule.name, first.action, first.model, None, plan.describe())


def decision_row(
    call_id: str,
    ts: Any,
    mode: str,
    policy: str,
    action: str,
    model_to: str | None,
    attempt_id: str | None,
    reason: str,
) -> dict:
    """A `decisions` row of kind fallback: `call_id` is the call that failed, `attempt_id` the
    row in `requests` of the attempt that was sent (enforce mode)."""
    return {
        "id": call_id,
        "ts": ts,
        "mode": mode,
        "policy": policy,
        "kind": "fallback",
        "action": action,
        "matched_id": attempt_id,
        "model_to": model_to,
        "saving_usd": None,
        "reason": reason,
    }
