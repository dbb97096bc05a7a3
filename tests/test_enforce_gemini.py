"""Enforce mode with the real google-genai SDK: the SDK -> `llm-shadow proxy --policy --mode
enforce` -> the fake provider (the policy of tests/test_enforce.py).

A repeated deterministic call is answered from the exact cache without reaching the upstream,
as JSON and as a stream, with the same text; a spent budget raises the SDK's ClientError with
our message in Gemini's error shape (code 429, RESOURCE_EXHAUSTED); a full rate limit gives
`Retry-After`. What reached the upstream is read from the fake provider's log; what the proxy
decided, from `requests` and `decisions`.
"""

import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import RunningProxy, llm_shadow_proxy_command
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY
from tests.test_enforce import POLICY, Proxied

MODEL = "gemini-2.5-flash"
QUESTION = "What is the capital of France?"
DETERMINISTIC = types.GenerateContentConfig(temperature=0)
SAMPLED = types.GenerateContentConfig(temperature=0.5)


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enforce-gemini")
    (tmp / "policy.toml").write_text(POLICY)
    with FakeProvider() as provider:
        args = ["--upstream", f"{provider.url}@0", "--policy", str(tmp / "policy.toml"), "--mode", "enforce", "--force"]
        proxy = RunningProxy(llm_shadow_proxy_command(args, tmp / "data"))
        try:
            yield Proxied(provider, proxy, tmp / "data")
        finally:
            proxy.stop()


def client(enforcing: Proxied, feature: str, **headers: str) -> genai.Client:
    options = types.HttpOptions(
        base_url=enforcing.proxy.url,
        headers={"x-shadow-feature": feature, **headers},
        retry_options=types.HttpRetryOptions(attempts=1),  # one attempt: the test sees each refusal
    )
    return genai.Client(api_key=API_KEY, http_options=options)


def test_repeated_request_is_answered_from_the_cache(enforcing, feature):
    gemini = client(enforcing, feature)
    first = gemini.models.generate_content(model=MODEL, contents=QUESTION, config=DETERMINISTIC)
    second = gemini.models.generate_content(model=MODEL, contents=QUESTION, config=DETERMINISTIC)
    assert first.text and second.text == first.text
    assert second.sdk_http_response.headers["x-llm-shadow-decision"] == "exact_cache=hit; policy=exact"
    assert len(enforcing.upstream_calls(feature)) == 1
    one, two = enforcing.rows(feature, 2)
    assert (one["outcome"], two["outcome"]) == ("ok", "cached")
    assert one["cost_usd"] > 0 and two["cost_usd"] == 0.0
    decisions = enforcing.decisions([one["id"], two["id"]])
    assert [(d["kind"], d["action"], d["mode"]) for d in decisions] == [
        ("exact_cache", "miss", "enforce"),
        ("exact_cache", "hit", "enforce"),
    ]
    assert decisions[1]["matched_id"] == one["id"]
    assert decisions[1]["saving_usd"] == pytest.approx(one["cost_usd"])


def test_repeated_stream_is_answered_from_the_cache_as_a_stream(enforcing, feature):
    gemini = client(enforcing, feature)

    def text() -> tuple[str, int]:
        chunks = list(gemini.models.generate_content_stream(model=MODEL, contents=QUESTION, config=DETERMINISTIC))
        return "".join(c.text or "" for c in chunks), len(chunks)

    (first, first_chunks), (second, second_chunks) = text(), text()
    assert first and second == first
    assert second_chunks == first_chunks > 1  # the stored events, replayed as a stream
    assert len(enforcing.upstream_calls(feature)) == 1
    rows = enforcing.rows(feature, 2)
    assert [r["outcome"] for r in rows] == ["ok", "cached"]
    assert rows[1]["stream"] is True


def test_budget_block_raises_the_sdk_error_in_gemini_shape(enforcing, feature):
    gemini = client(enforcing, feature, **{"x-shadow-team": f"capped-{feature}"})
    gemini.models.generate_content(model=MODEL, contents=QUESTION, config=SAMPLED)
    with pytest.raises(errors.ClientError) as refused:
        gemini.models.generate_content(model=MODEL, contents=QUESTION, config=SAMPLED)
    error = refused.value
    assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
    assert "budget 'capped-team' is spent" in error.message
    assert error.response.headers["x-llm-shadow-decision"] == "budget=block; policy=capped-team"
    assert len(enforcing.upstream_calls(feature)) == 1
    ok, blocked = enforcing.rows(feature, 2)
    assert (ok["outcome"], blocked["outcome"], blocked["status"]) == ("ok", "blocked", 429)


def test_rate_limit_refuses_with_retry_after(enforcing, feature):
    name = f"test_rate_limit-{feature}"
    gemini = client(enforcing, name)
    for _ in range(2):
        gemini.models.generate_content(model=MODEL, contents=QUESTION, config=SAMPLED)
    with pytest.raises(errors.ClientError) as refused:
        gemini.models.generate_content(model=MODEL, contents=QUESTION, config=SAMPLED)
    error = refused.value
    assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
    assert "rate limit 'two-a-minute' is full" in error.message
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert len(enforcing.upstream_calls(name)) == 2
    assert [r["outcome"] for r in enforcing.rows(name, 3)] == ["ok", "ok", "throttled"]
