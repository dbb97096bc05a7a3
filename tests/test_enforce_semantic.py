"""The semantic cache in enforce mode, end to end: the real openai and anthropic SDKs ->
`llm-shadow proxy --policy --mode enforce` -> the fake provider.

A paraphrase of an answered prompt is answered with that answer's stored bytes (as JSON or as a
stream, the form it was stored in) without reaching the upstream; a prompt not embedded within
`lookup_timeout_ms` goes to the upstream, counted; in shadow mode no byte changes. The policy
scopes the cache by feature, so each test (its own `feature`) has its own entries. The embedder
is `hashing` (offline, no model): "how do I cancel my credit card" and "how can I cancel my
credit card" are 0.84 similar under it, above the 0.8 threshold.
"""

import json
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY
from tests.test_enforce import Proxied, raw_call

# A generous lookup budget: the test machine is shared and loaded, and these tests are about
# answers, not the clock (the budget itself is tested with 0 ms, below).
POLICY = """
[cache.semantic]
name = "semantic"
threshold = 0.8
embedder = "hashing"
scope = "feature"
allow_streaming = true
lookup_timeout_ms = {timeout_ms}
"""
ASKED = "how do I cancel my credit card"
PARAPHRASE = "how can I cancel my credit card"
HIT = "semantic_cache=hit; policy=semantic"


def start(provider: FakeProvider, tmp: Path, mode: str, timeout_ms: int = 60_000) -> Proxied:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY.format(timeout_ms=timeout_ms))
    data_dir = tmp / "data"
    args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", mode, "--force"]
    return Proxied(provider, RunningProxy(llm_shadow_proxy_command(args, data_dir)), data_dir)


@pytest.fixture(scope="module")
def provider():
    with FakeProvider() as p:
        yield p


@pytest.fixture(scope="module")
def enforcing(provider, tmp_path_factory):
    proxied = start(provider, tmp_path_factory.mktemp("enforce"), "enforce")
    yield proxied
    proxied.proxy.stop()


def ask(client: openai.OpenAI, prompt: str, stream: bool = False):
    """(text, response headers) of one chat call."""
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, temperature=0)
        return raw.parse().choices[0].message.content, raw.headers
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True}
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        return text, response.headers


def semantic_decisions(proxied: Proxied, rows: list[dict]) -> list[dict]:
    return [d for d in proxied.decisions([r["id"] for r in rows]) if d["kind"] == "semantic_cache"]


@pytest.mark.parametrize("stream", [False, True])
def test_paraphrase_is_answered_from_the_semantic_cache(enforcing, feature, stream):
    client = enforcing.openai(feature)
    first, first_headers = ask(client, ASKED, stream)
    second, second_headers = ask(client, PARAPHRASE, stream)
    assert first and second == first
    assert "x-llm-shadow-decision" not in first_headers
    assert second_headers["x-llm-shadow-decision"] == HIT
    assert second_headers["content-type"] == first_headers["content-type"]  # JSON as JSON, SSE as SSE
    assert len(enforcing.upstream_calls(feature)) == 1  # the paraphrase never reached the upstream
    one, two = enforcing.rows(feature, 2)
    assert (one["outcome"], two["outcome"]) == ("ok", "cached")
    assert two["stream"] is stream and two["cost_usd"] == 0.0 and two["cost_source"] == "not_sent"
    miss, hit = semantic_decisions(enforcing, [one, two])
    assert (miss["action"], hit["action"], hit["mode"]) == ("miss", "hit", "enforce")
    assert hit["matched_id"] == one["id"]
    assert hit["saving_usd"] == pytest.approx(one["cost_usd"])
    assert hit["reason"].startswith("similarity 0.")


def test_stats_says_semantic_savings_are_unverified(enforcing, feature):
    client = enforcing.openai(feature)
    ask(client, ASKED)
    ask(client, PARAPHRASE)
    enforcing.rows(feature, 2)
    stats = CliRunner().invoke(app, ["stats", "--data", str(enforcing.data_dir)], env={"COLUMNS": "200"})
    assert stats.exit_code == 0, stats.output
    [line] = [x for x in stats.output.splitlines() if "semantic_cache" in x and " hit " in x]
    assert "enforce" in line and "unverified" in line


def test_a_stored_stream_does_not_answer_a_json_request(enforcing, feature):
    """The stored answer is replayed as it came: a streamed one answers streamed requests only
    (the simulator partitions by form the same way), so a JSON paraphrase goes upstream."""
    client = enforcing.openai(feature)
    streamed, _ = ask(client, ASKED, stream=True)
    answer, headers = ask(client, PARAPHRASE)
    assert answer == streamed and "x-llm-shadow-decision" not in headers
    assert headers["content-type"].startswith("application/json")
    assert len(enforcing.upstream_calls(feature)) == 2
    rows = enforcing.rows(feature, 2)
    assert [r["outcome"] for r in rows] == ["ok", "ok"]
    assert [d["action"] for d in semantic_decisions(enforcing, rows)] == ["miss", "miss"]


def test_anthropic_paraphrase_is_answered_from_the_semantic_cache(enforcing, feature):
    client = enforcing.anthropic(feature)

    def ask_claude(prompt: str):
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            messages=[{"role": "user", "content": prompt}],
            extra_body={"temperature": 0},  # this SDK version's create() takes no temperature
        )
        return raw.parse().content[0].text, raw.headers

    (first, _), (second, headers) = ask_claude(ASKED), ask_claude(PARAPHRASE)
    assert first and second == first and headers["x-llm-shadow-decision"] == HIT
    assert len(enforcing.upstream_calls(feature)) == 1


def test_a_lookup_over_its_budget_goes_to_the_upstream_counted(provider, tmp_path, feature):
    """With lookup_timeout_ms = 0 no call waits for its prompt's embedding (a thread makes it;
    the call never yields before deciding): every new prompt goes upstream, counted as
    semantic_lookup_timeout, and its decisions row says why; only prompts embedded before are
    looked up."""
    proxied = start(provider, tmp_path, "enforce", timeout_ms=0)
    try:
        client = proxied.openai(feature)
        first, _ = ask(client, ASKED)
        second, headers = ask(client, PARAPHRASE)
        assert second == first and "x-llm-shadow-decision" not in headers
        assert len(proxied.upstream_calls(feature)) == 2
        rows = proxied.rows(feature, 2)
        assert [r["outcome"] for r in rows] == ["ok", "ok"]
        decisions = semantic_decisions(proxied, rows)
        assert [d["action"] for d in decisions] == ["miss", "miss"]
        assert all(d["reason"] == "semantic_lookup_timeout: not embedded within 0 ms" for d in decisions)

        def counted() -> int:
            status = [json.loads(p.read_text()) for p in (proxied.data_dir / "status").glob("*-policy.json")]
            return sum(s["problems"].get("semantic_lookup_timeout", 0) for s in status)

        assert wait_for(lambda: counted() == 2), counted()
        stats = CliRunner().invoke(app, ["stats", "--data", str(proxied.data_dir)])
        assert stats.exit_code == 0 and "semantic_lookup_timeout" in stats.output, stats.output

        # The vectors made after their calls went on are kept: the same prompt again is looked up
        # without waiting (a miss: no answer was stored for it, so it is stored now), then is a hit.
        answered = []
        for _ in range(10):  # bounded: on a loaded machine the late vector may come after a call or two
            answer, headers = ask(client, ASKED)
            answered.append(headers.get("x-llm-shadow-decision"))
            if answered[-1]:
                break
        assert answered[-1] == HIT and answer == first, answered
    finally:
        proxied.proxy.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_shadow_mode_changes_no_byte(provider, tmp_path, feature, stream):
    """In shadow mode the paraphrase is a semantic hit in `decisions` only: the client gets the
    upstream's bytes, the upstream the client's."""
    proxied = start(provider, tmp_path, "shadow")
    try:
        headers = {
            "authorization": f"Bearer {API_KEY}",
            "content-type": "application/json",
            "x-shadow-feature": feature,
        }
        for prompt in (ASKED, PARAPHRASE):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "temperature": 0}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            direct = raw_call(provider.url, headers, body)
            received_direct = provider.requests[-1]
            via_proxy = raw_call(proxied.proxy.url, headers, body)
            received_via_proxy = provider.requests[-1]
            assert via_proxy == direct
            assert (received_via_proxy.body, received_via_proxy.target) == (
                received_direct.body,
                received_direct.target,
            )
            assert received_via_proxy.headers == received_direct.headers
        rows = proxied.rows(feature, 2)
        decisions = semantic_decisions(proxied, rows)
        assert [(d["action"], d["mode"]) for d in decisions] == [("miss", "shadow"), ("hit", "shadow")]
        assert decisions[1]["matched_id"] == rows[0]["id"]
    finally:
        proxied.proxy.stop()
