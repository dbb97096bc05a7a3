"""The fallback glue's hooks driven without a proxy (mitmproxy.test), for the cases the end to
end tests do not reach: which calls go through the relay, which failures are only logged."""

from datetime import UTC, datetime

import pytest
from mitmproxy.test import tflow, tutils

from addons.fallback import FLOW_FALLBACK, FallbackActor
from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.recording.capture import FLOW_DECISIONS, FLOW_ERROR_DECISIONS
from analysis.simulate.policy import parse_policy

RULE = '[[fallback]]\nname = "f"\nmodel = "gpt-4o"\non = ["5xx"]\nretries = 1\n'


def hooked(policy_text: str, mode: str, status: int, model: str = "gpt-4o"):
    live = LivePolicy(parse_policy(policy_text), mode, PriceTable.load())
    record = {"id": "r1", "ts": datetime.now(UTC), "model_requested": model, "model": model, "provider": "openai"}
    verdict = live.decide(record, "openai_chat")
    flow = tflow.tflow(resp=tutils.tresp(status_code=status))
    flow.response.stream = True  # as the recorder sets it for an answer without a length
    flow.metadata[FLOW_DECISIONS] = tuple(verdict.rows)
    FallbackActor().responseheaders(flow, live, verdict)
    return flow


def test_enforce_mode_leaves_a_failed_answer_to_the_relay():
    """A rule that acts sends its calls through the relay (addons.fallback), which decides there:
    what reaches `responseheaders` is already decided, and goes on as it is."""
    flow = hooked(RULE, "enforce", 503)
    assert flow.response.stream is True
    assert flow.metadata[FLOW_DECISIONS] == ()


@pytest.mark.parametrize(
    "policy, mode, model, relayed",
    [
        (RULE, "enforce", "gpt-4o", True),
        (RULE, "enforce", "gpt-4o-mini", False),  # no rule matches it
        (RULE, "shadow", "gpt-4o", False),
        (RULE.replace("retries", 'mode = "shadow"\nretries'), "enforce", "gpt-4o", False),
    ],
)
def test_only_calls_of_a_rule_that_acts_go_through_the_relay(policy, mode, model, relayed):
    live = LivePolicy(parse_policy(policy), mode, PriceTable.load())
    record = {"id": "r1", "ts": datetime.now(UTC), "model_requested": model, "model": model, "provider": "openai"}
    verdict = live.decide(record, "openai_chat")
    assert (FallbackActor.enforced_rule(live, verdict) is not None) is relayed


def test_a_watching_rule_logs_its_plan_for_a_refused_connection():
    live = LivePolicy(parse_policy(RULE.replace('["5xx"]', '["connect_error"]')), "shadow", PriceTable.load())
    record = {"id": "r1", "ts": datetime.now(UTC), "model_requested": "gpt-4o", "model": "gpt-4o", "provider": "openai"}
    verdict = live.decide(record, "openai_chat")
    flow = tflow.tflow()
    FallbackActor().watch(flow, live, verdict)
    rows = flow.metadata[FLOW_ERROR_DECISIONS]
    assert rows(None, "timeout") == ()  # not a failure this rule handles
    [row] = rows(None, "connect_error")
    assert (row["id"], row["mode"], row["action"], row["reason"]) == (
        "r1",
        "shadow",
        "retry",
        "connect_error: retry 1 time",
    )


@pytest.mark.parametrize(
    "policy, mode", [(RULE, "shadow"), (RULE.replace("retries", 'mode = "shadow"\nretries'), "enforce")]
)
def test_shadow_only_logs_the_plan_and_touches_nothing(policy, mode):
    flow = hooked(policy, mode, 503)
    assert FLOW_FALLBACK not in flow.metadata and flow.response.stream is True
    [row] = flow.metadata[FLOW_DECISIONS]
    assert (row["kind"], row["action"], row["mode"], row["reason"]) == (
        "fallback",
        "retry",
        "shadow",
        "5xx (503): retry 1 time",
    )


@pytest.mark.parametrize("status, model", [(200, "gpt-4o"), (400, "gpt-4o"), (429, "gpt-4o"), (503, "gpt-4o-mini")])
def test_answers_the_rule_does_not_handle_pass_untouched(status, model):
    flow = hooked(RULE, "enforce", status, model)
    assert FLOW_FALLBACK not in flow.metadata and flow.response.stream is True
    assert flow.metadata[FLOW_DECISIONS] == ()
