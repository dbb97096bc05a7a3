"""Which entries of a policy enforce mode can act on, and why not.

The simulator models every policy over recorded traffic, but a live proxy can only do what one
call allows: it can rewrite a call's model or send it to another upstream only in the wire
format the client speaks, and it cannot batch a call the client waits for. `not_enforceable`
lists what a policy asks beyond that; enforce mode refuses such a policy at start
(analysis.enforce.live) and the simulator's notes name the entries, so the answer is known
before anyone flips the switch. Entries with `mode = "shadow"` are only logged and are left out.
"""

import os
from typing import Any

from analysis.simulate.policy import ChainTarget, FallbackRule, Policy


def model_family(name: str) -> str:
    """The wire format a model is served in: anthropic (claude*), gemini (gemini*), or openai
    (every OpenAI-compatible server)."""
    lowered = name.lower().rsplit("/", 1)[-1]
    if lowered.startswith("claude"):
        return "anthropic"
    if lowered.startswith(("gemini", "gemma")):
        return "gemini"
    return "openai"


def wire_family(wire_format: str) -> str:
    if wire_format.startswith("anthropic"):
        return "anthropic"
    if wire_format.startswith("gemini"):
        return "gemini"
    return "openai"


def not_enforceable(policy: Policy, check_environment: bool = True) -> list[tuple[Any, str | None, str]]:
    """What enforce mode cannot do, as (entry, key, why): a routing rule or a budget downgrade
    whose target speaks another wire format than the traffic it matches (or a fallback chain step
    that does), a routing rule or chain step whose upstream key is not in the environment, a
    semantic cache or a batch policy acting live.
    Entries with `mode = "shadow"` are only logged and are left out. The simulator lists these
    too, so a policy is known to be enforceable before anyone tries."""
    found: list[tuple[Any, str | None, str]] = []
    for entry in policy.batch:
        if entry.mode == "enforce":
            found.append((entry, None, 'batching cannot act on live calls: add mode = "shadow"'))
    movers: list[tuple[Any, str]] = [(r, r.to) for r in policy.routing]
    movers += [(b, b.to) for b in policy.budgets if b.to]
    for entry, target in movers:
        if entry.mode != "enforce":
            continue
        patterns = dict(entry.match.text).get("model", ())
        families = {model_family(p) for p in patterns if not p.startswith("*")}
        if any(f != model_family(target) for f in families):
            found.append(
                (
                    entry,
                    "to",
                    f"{target!r} speaks the {model_family(target)} wire format, the matched models "
                    f"{', '.join(sorted(families))}: not enforceable (rewrite needs the same wire format)",
                )
            )
        key_env = getattr(entry, "to_api_key_env", None)
        if check_environment and key_env and not os.environ.get(key_env):
            found.append((entry, "to_api_key_env", f"the environment variable {key_env} is not set"))
    for rule in policy.fallbacks:  # a chain step resends the same request: same wire format, its own key
        if rule.mode != "enforce":
            continue
        for step in rule.chain:
            if (why := other_wire_format(step, rule)) is not None:
                found.append((rule, "chain", why))
            if check_environment and step.to_api_key_env and not os.environ.get(step.to_api_key_env):
                found.append((rule, "chain", f"the environment variable {step.to_api_key_env} is not set"))
    return found


def other_wire_format(step: ChainTarget, rule: FallbackRule) -> str | None:
    """Why a fallback chain step cannot resend the calls `rule` matches (their wire format is
    not the step's model's); None when it can."""
    patterns = dict(rule.match.text).get("model", ())
    families = {model_family(p) for p in patterns if not p.startswith("*")}
    if any(f != model_family(step.to) for f in families):
        return (
            f"{step.to!r} speaks the {model_family(step.to)} wire format, the matched models "
            f"{', '.join(sorted(families))}: not enforceable (a fallback resends the same request)"
        )
    return None


def check_enforceable(policy: Policy) -> None:
    """Raise a PolicyError (with the line at fault) for the first thing enforce mode cannot do."""
    for entry, key, why in not_enforceable(policy):
        raise policy.error(entry.origin, key, why)
