"""A wrapped key's own budget counts every attempt a fallback rule sent for its calls: the real
openai SDK holds an `lsk-...` key with a daily budget -> `llm-shadow proxy --mode enforce`
with a `[[fallback]]` rule -> the fake provider, told to fail (`FakeProvider.fail_next`) so the
proxy retries.

A failed first attempt (503) costs nothing (`cost_usd` null); the retry that answers costs what its usage says
(`x-fake-usage`, set so that each answer costs $0.60 of a $1.00 budget). The key must be refused
exactly once the recorded costs of all its calls' attempts (its rows in `requests`) reach the
limit, as the policy's own budgets count them."""

import json

import openai
import pytest

from analysis.shared_state.keys import FileKeys, KeyRegistry
from analysis.store.datadir import Store, query_frame
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider

REAL_KEY = "sk-real-openai-key-never-seen-by-the-app"
ENV = {"LLM_SHADOW_TEST_OPENAI_KEY": REAL_KEY}
POLICY = """
[[fallback]]
name = "retry-once"
feature = "test_*"
on = ["5xx"]
retries = 1
backoff_ms = 10
"""
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# 4M input tokens of gpt-4o-mini at $0.15 a million: each answered attempt costs $0.60.
USAGE = json.dumps({"prompt_tokens": 4_000_000, "completion_tokens": 0})


def key_rows(data_dir, key_id: str, n: int) -> list[dict]:
    def found():
        if not (data_dir / "records").exists():
            return []
        with Store(data_dir).connect() as con:
            rows = query_frame(con, "SELECT * FROM requests WHERE key_id = ? ORDER BY ts, id", [key_id]).to_dicts()
        return len(rows) >= n and rows

    return wait_for(found, timeout=60) or []


def test_a_wrapped_keys_budget_is_charged_with_every_attempt_of_a_fallback(tmp_path, primary: FakeProvider, feature):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    data_dir = tmp_path / "data"
    args = ["--upstream", f"{primary.url}@0", "--policy", str(policy), "--mode", "enforce", "--force"]
    proxy = RunningProxy(llm_shadow_proxy_command(args, data_dir), **ENV)
    try:
        record, wrapped = KeyRegistry(FileKeys(data_dir)).create(
            "t", "LLM_SHADOW_TEST_OPENAI_KEY", budget_usd=1.0, window="day"
        )
        client = openai.OpenAI(
            base_url=f"{proxy.url}/v1",
            api_key=wrapped,
            max_retries=0,
            default_headers={"x-shadow-feature": feature, "x-fake-usage": USAGE},
        )
        # Answered at once: the call's own cost ($0.60) is the key's.
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        assert raw.status_code == 200 and "x-llm-shadow-decision" not in raw.headers
        # Spent $0.60 of $1.00: admitted; its own attempt fails (503, no cost), the retry answers ($0.60).
        primary.fail_next(503, times=1, model=MODEL)
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        assert raw.status_code == 200
        assert raw.headers["x-llm-shadow-decision"] == "fallback=retry; policy=retry-once"
        # The two answers cost $1.20: the key is spent, and refused without the upstream.
        sent = len(primary.requests)
        with pytest.raises(openai.RateLimitError, match=f"{record.key_id} has spent its daily budget") as refused:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert len(primary.requests) == sent

        rows = key_rows(data_dir, record.key_id, 4)
        assert [(r["status"], r["outcome"]) for r in rows] == [
            (200, "ok"),
            (503, "server_error"),
            (200, "ok"),
            (429, "blocked"),
        ]
        spent = sum(r["cost_usd"] or 0.0 for r in rows)
        assert [r["cost_usd"] for r in rows[:3]] == [pytest.approx(0.60), None, pytest.approx(0.60)]
        assert f"(${spent:.2f} of $1.00)" in str(refused.value)  # what the key counted is what was recorded
    finally:
        proxy.stop()
