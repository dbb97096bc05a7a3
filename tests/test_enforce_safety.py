"""Enforce mode's safety: reloading the policy with SIGHUP, and failing open.

A real `llm-shadow proxy --mode enforce` in front of the fake provider: a bad policy file sent
with SIGHUP keeps the running policy (and the proxy says why), a good one takes effect at once
without losing the spend already counted; a request whose decision raises passes to the upstream
unchanged, and the failure is counted where `stats` reads it.
"""

import json
import signal

import httpx
import openai
import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.sdk_support import API_KEY
from tests.test_enforce import MESSAGES

BUDGET = """
[[budget]]
name = "team-cap"
scope = "team"
window = "day"
limit_usd = {limit}
"""


@pytest.fixture
def enforcing(provider, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(BUDGET.format(limit=1000))
    args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", "enforce", "--force"]
    proxy = RunningProxy(llm_shadow_proxy_command(args, tmp_path / "data"))
    yield proxy, policy
    proxy.stop()


def said(proxy: RunningProxy, text: str) -> bool:
    return wait_for(lambda: any(text in line for line in proxy.output), timeout=10)


def test_sighup_reloads_the_policy_and_a_bad_file_keeps_the_running_one(enforcing, provider):
    proxy, policy = enforcing
    client = openai.OpenAI(
        base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0, default_headers={"x-shadow-team": "t"}
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    policy.write_text(BUDGET.format(limit=1000) + "typo = 1\n")
    proxy.process.send_signal(signal.SIGHUP)
    assert said(proxy, "policy reload failed, keeping the running policy")
    assert said(proxy, '"typo": unknown key')
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # still the $1000 budget

    policy.write_text(BUDGET.format(limit=0.000001))  # the two calls made already spent more
    proxy.process.send_signal(signal.SIGHUP)
    assert said(proxy, "policy reloaded")
    with pytest.raises(openai.RateLimitError, match="budget 'team-cap' is spent"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(provider.requests) == 2
    assert proxy.process.poll() is None


def test_a_decision_that_fails_lets_the_call_pass_and_is_counted(enforcing, provider, tmp_path):
    proxy, _ = enforcing
    broken = b"not gzip at all"  # says gzip, is not: the request cannot be read for a decision
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", "content-encoding": "gzip"}
    with httpx.Client() as http:
        answer = http.post(f"{proxy.url}/v1/chat/completions", headers=headers, content=broken)
    assert provider.requests[-1].body == broken  # passed unchanged
    assert answer.status_code == provider_status(provider, headers, broken)
    plain = {k: v for k, v in headers.items() if k != "content-encoding"}
    good = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    with httpx.Client() as http:  # the next call is decided as usual
        assert http.post(f"{proxy.url}/v1/chat/completions", headers=plain, content=good).status_code == 200

    status = tmp_path / "data" / "status"
    counted = wait_for(
        lambda: (
            any("decision_error:ParseFailure" in p.read_text() for p in status.glob("*.json"))
            if status.exists()
            else False
        )
    )
    assert counted, "".join(proxy.output[-20:])
    stats = CliRunner().invoke(app, ["stats", "--data", str(tmp_path / "data")])
    assert "decision_error:ParseFailure=1" in " ".join(stats.output.split())


def provider_status(provider, headers: dict, body: bytes) -> int:
    with httpx.Client() as http:
        return http.post(f"{provider.url}/v1/chat/completions", headers=headers, content=body).status_code
