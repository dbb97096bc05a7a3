"""A rate limit's `tokens_per_minute` counts each call's tokens live, as the simulator does.

The simulator admits a call to its one-minute window with its recorded input + output tokens.
Live, those are known only when the call ends: `LivePolicy.settle` adds them to the window,
dated from the call's admission, so the next call sees them. Driven through `LivePolicy` with
the memory backend, then end to end through `llm-shadow proxy --mode enforce` with the openai
SDK against the fake provider.
"""

import json

import openai
import pytest

from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import parse_policy
from analysis.simulate.simulator import simulate
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.enforce_support import T0, chat_record
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY
from tests.simulate_helpers import requests_frame

POLICY = """
[[rate_limit]]
name = "tokens-a-minute"
scope = "feature"
tokens_per_minute = 1500
"""
CALL_TOKENS = (600, 400)  # input, output: 1,000 a call
ANSWER = (b'{"choices": [{"message": {"content": "Paris"}}]}',)


def call(live: LivePolicy, n: int, at: float, ended: float | None = None):
    """Call `n`, decided at `at`; when the proxy sent it, settled with CALL_TOKENS at `ended`."""
    verdict = live.decide(chat_record(n, f"question {n}", at, feature="search"), "openai_chat")
    if verdict.action != "refuse" and ended is not None:
        live.settle(verdict, True, 0.001, ended, 200, (), ANSWER, tokens=sum(CALL_TOKENS))
    return verdict


def test_a_settled_call_fills_the_token_window():
    live = LivePolicy(parse_policy(POLICY), "enforce", PriceTable.load())
    assert call(live, 0, T0, T0 + 1).action == "pass"  # 1,000 tokens from T0
    assert call(live, 1, T0 + 2, T0 + 3).action == "pass"  # 1,000 < 1,500 when decided: 2,000 after
    refused = call(live, 2, T0 + 4)
    assert (refused.action, refused.answered_by, refused.decision.throttled_by) == (
        "refuse",
        "rate_limit",
        "tokens-a-minute",
    )
    assert refused.refusal is not None and refused.refusal.status == 429
    assert dict(refused.refusal.headers)["retry-after"] == "56"  # until the call of T0 leaves the window
    assert call(live, 3, T0 + 61).action == "pass"  # T0's 1,000 tokens have left: 1,000 < 1,500


def test_live_counts_what_the_simulator_counts():
    """The same calls, simulated from their recorded rows, are throttled at the same place."""
    rows = [
        {"t": t, "feature": "search", "input_tokens": CALL_TOKENS[0], "output_tokens": CALL_TOKENS[1]}
        for t in (0, 2, 4, 61)
    ]
    simulated = simulate(parse_policy(POLICY), requests_frame(rows))
    assert simulated.decisions["throttled_by"].to_list() == [None, None, "tokens-a-minute", None]
    live = LivePolicy(parse_policy(POLICY), "enforce", PriceTable.load())
    decided = [call(live, n, T0 + t, T0 + t + 1).decision.throttled_by for n, t in enumerate((0, 2, 4, 61))]
    assert decided == simulated.decisions["throttled_by"].to_list()


def test_a_call_in_flight_counts_no_tokens_yet():
    """The documented exception: tokens arrive with the answer."""
    live = LivePolicy(parse_policy(POLICY), "enforce", PriceTable.load())
    first = call(live, 0, T0)  # not settled yet
    assert call(live, 1, T0 + 1).action == "pass"
    live.settle(first, True, 0.001, T0 + 2, 200, (), ANSWER, tokens=2000)
    assert call(live, 2, T0 + 3).action == "refuse"


def test_the_proxy_refuses_once_the_window_holds_the_tokens(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    usage = json.dumps({"prompt_tokens": CALL_TOKENS[0], "completion_tokens": CALL_TOKENS[1]})
    with FakeProvider() as provider:
        args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", "enforce", "--force"]
        proxy = RunningProxy(llm_shadow_proxy_command(args, tmp_path / "data"))
        try:
            client = openai.OpenAI(
                base_url=f"{proxy.url}/v1",
                api_key=API_KEY,
                max_retries=0,
                default_headers={"x-shadow-feature": "tokens", "x-fake-usage": usage},
            )
            messages = [{"role": "user", "content": "What is the capital of France?"}]
            for _ in range(2):  # 1,000 then 2,000 tokens in the window
                answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                assert answer.usage is not None and answer.usage.total_tokens == sum(CALL_TOKENS)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert "rate limit 'tokens-a-minute' is full" in str(refused.value)
            assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
            assert len(provider.requests) == 2
            assert wait_for(lambda: "throttled" in proxy_outcomes(tmp_path)), "".join(proxy.output[-20:])
        finally:
            proxy.stop()


def proxy_outcomes(tmp_path) -> list[str]:
    from analysis.store.datadir import Store

    frame = Store(tmp_path / "data").requests_frame()
    return frame.sort("ts", "id")["outcome"].to_list() if frame.height else []
