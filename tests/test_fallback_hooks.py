"""The fallback glue's hooks driven without a proxy (mitmproxy.test), for the cases the end to
end tests do not reach: which failed answers are held back, which only logged."""

from datetime import UTC, datetime

import pytest
from mitmproxy.test import tflow, tutils

from addons.fallback import FLOW_FALLBACK, FallbackActor
from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.recording.capture import FLOW_DECISIONS
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


def test_enforce_mode_holds_back_a_failed_answer():
    flow = hooked(RULE, "enforce", 503)
    assert flow.metadata[FLOW_FALLBACK].plan.rule.name == "f"
    assert flow.response.stream is False  # buffered: it can still be replaced
    assert flow.metadata[FLOW_DECISIONS] == ()  # the attempts log themselves


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
