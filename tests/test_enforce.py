"""Shadow and enforce mode end to end: the real openai and anthropic SDKs -> `llm-shadow proxy
--policy --mode` -> the fake provider.

One fake provider and two proxies (one enforcing, one in shadow) serve the module; every test
sends its own `x-shadow-feature` (the `feature` fixture) and the policy scopes its cache and
limits by feature, so the tests do not see each other's state. What reached the upstream is
read from the fake provider's log; what the proxy decided, from `requests` and `decisions`.
"""

import json
import os
from collections import defaultdict
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from typer.testing import CliRunner

from analysis.simulate.enforceable import check_enforceable
from analysis.simulate.policy import parse_policy
from analysis.store.datadir import Store, query_frame
from cli import app
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY

POLICY = """
[cache.exact]
name = "exact"
ttl = "1h"
scope = "feature"
allow_streaming = true

[[routing]]
name = "to-mini"
feature = "test_routed*"
to = "gpt-4o-mini"

[[budget]]
name = "capped-team"
scope = "team"
team = "capped*"
window = "day"
limit_usd = 0.000001

[[rate_limit]]
name = "two-a-minute"
scope = "feature"
feature = "test_rate_limit*"
requests_per_minute = 2
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Proxied:
    def __init__(self, provider: FakeProvider, proxy: RunningProxy, data_dir: Path):
        self.provider, self.proxy, self.data_dir = provider, proxy, data_dir

    def openai(self, feature: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.proxy.url}/v1",
            api_key=API_KEY,
            max_retries=0,
            default_headers={"x-shadow-feature": feature, **headers},
        )

    def anthropic(self, feature: str, **headers: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.proxy.url,
            api_key=API_KEY,
            max_retries=0,
            default_headers={"x-shadow-feature": feature, **headers},
        )

    def upstream_calls(self, feature: str) -> list:
        return [r for r in self.provider.requests if r.headers.get("x-shadow-feature") == feature]

    def query(self, sql: str, params: list) -> list[dict]:
        with Store(self.data_dir).connect() as con:
            return query_frame(con, sql, params).to_dicts()

    def rows(self, feature: str, n: int) -> list[dict]:
        sql = "SELECT * FROM requests WHERE feature = ? ORDER BY ts, id"
        rows = wait_for(lambda: len(found := self.query(sql, [feature])) >= n and found)
        assert rows and len(rows) == n, f"expected {n} rows for {feature}; proxy said:\n" + "".join(
            self.proxy.output[-20:]
        )
        return rows

    def decisions(self, ids: list[str]) -> list[dict]:
        sql = "SELECT * FROM decisions WHERE list_contains(?, id) ORDER BY ts, id, policy"
        return self.query(sql, [ids])


@pytest.fixture(scope="module")
def provider():
    with FakeProvider() as p:
        yield p


OTHER_UPSTREAM = """
[[routing]]
name = "to-other-upstream"
feature = "test_other_upstream*"
to = "gpt-4o-mini"
to_url = "{url}/proxied"
to_api_key_env = "LLM_SHADOW_TEST_OTHER_KEY"
"""
OTHER_KEY = "sk-other-upstream-456"


@pytest.fixture(scope="module")
def other_provider():
    os.environ["LLM_SHADOW_TEST_OTHER_KEY"] = OTHER_KEY  # read by the proxy started after this
    with FakeProvider() as p:
        yield p
    os.environ.pop("LLM_SHADOW_TEST_OTHER_KEY", None)


def start(provider: FakeProvider, tmp: Path, mode: str, other: FakeProvider) -> Proxied:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY + OTHER_UPSTREAM.format(url=other.url))
    data_dir = tmp / "data"
    args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", mode, "--force"]
    return Proxied(provider, RunningProxy(llm_shadow_proxy_command(args, data_dir)), data_dir)


@pytest.fixture(scope="module")
def enforcing(provider, other_provider, tmp_path_factory):
    proxied = start(provider, tmp_path_factory.mktemp("enforce"), "enforce", other_provider)
    yield proxied
    proxied.proxy.stop()


@pytest.fixture(scope="module")
def shadowing(provider, other_provider, tmp_path_factory):
    proxied = start(provider, tmp_path_factory.mktemp("shadow"), "shadow", other_provider)
    yield proxied
    proxied.proxy.stop()


def test_repeated_request_is_answered_from_the_cache(enforcing, feature):
    client = enforcing.openai(feature)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    second = raw.parse()
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id == first.id  # the stored answer itself
    assert raw.headers["x-llm-shadow-decision"] == "exact_cache=hit; policy=exact"
    assert len(enforcing.upstream_calls(feature)) == 1
    one, two = enforcing.rows(feature, 2)
    assert (one["outcome"], two["outcome"]) == ("ok", "cached")
    assert one["cost_usd"] > 0 and two["cost_usd"] == 0.0 and two["cost_source"] == "not_sent"
    decisions = enforcing.decisions([one["id"], two["id"]])
    assert [(d["id"], d["kind"], d["action"], d["mode"]) for d in decisions] == [
        (one["id"], "exact_cache", "miss", "enforce"),
        (two["id"], "exact_cache", "hit", "enforce"),
    ]
    assert decisions[1]["matched_id"] == one["id"]
    assert decisions[1]["saving_usd"] == pytest.approx(one["cost_usd"])


def test_repeated_stream_is_answered_from_the_cache_as_a_stream(enforcing, feature):
    client = enforcing.openai(feature)

    def text() -> str:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True, stream_options={"include_usage": True}
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    first, second = text(), text()
    assert first and second == first
    assert len(enforcing.upstream_calls(feature)) == 1
    rows = enforcing.rows(feature, 2)
    assert [r["outcome"] for r in rows] == ["ok", "cached"]
    assert rows[1]["stream"] is True


def test_sampled_requests_are_not_cached(enforcing, feature):
    client = enforcing.openai(feature)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.7)
    assert len(enforcing.upstream_calls(feature)) == 2
    rows = enforcing.rows(feature, 2)
    reasons = [d["reason"] for d in enforcing.decisions([r["id"] for r in rows])]
    assert reasons == ["excluded: temperature", "excluded: temperature"]


def test_routed_request_arrives_upstream_with_the_target_model(enforcing, feature):
    client = enforcing.openai(feature)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, temperature=0.5)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-llm-shadow-decision"] == "routing=route; policy=to-mini"
    [sent] = enforcing.upstream_calls(feature)
    assert json.loads(sent.body)["model"] == "gpt-4o-mini"
    [row] = enforcing.rows(feature, 1)
    assert row["model_requested"] == "gpt-4o-mini"
    [routing] = [d for d in enforcing.decisions([row["id"]]) if d["kind"] == "routing"]
    assert (routing["action"], routing["model_to"], routing["policy"]) == ("route", "gpt-4o-mini", "to-mini")


def test_other_upstream_named_by_a_rule_gets_the_call_with_its_own_key(enforcing, other_provider, feature):
    client = enforcing.openai(feature)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, temperature=0.5)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-llm-shadow-decision"] == "routing=route; policy=to-other-upstream"
    assert enforcing.upstream_calls(feature) == []
    [sent] = [r for r in other_provider.requests if r.headers.get("x-shadow-feature") == feature]
    assert sent.target == "/proxied/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OTHER_KEY}"
    assert json.loads(sent.body)["model"] == "gpt-4o-mini"


def test_budget_blocks_right_after_the_call_that_reached_it(enforcing, feature):
    client = enforcing.openai(feature, **{"x-shadow-team": f"capped-{feature}"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.5)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.5)
    assert "budget 'capped-team' is spent" in str(refused.value)
    assert refused.value.response.headers["x-llm-shadow-decision"] == "budget=block; policy=capped-team"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(enforcing.upstream_calls(feature)) == 1
    ok, blocked = enforcing.rows(feature, 2)
    assert (ok["outcome"], blocked["outcome"], blocked["status"]) == ("ok", "blocked", 429)
    assert "budget 'capped-team' is spent" in blocked["error"]
    [decision] = [d for d in enforcing.decisions([blocked["id"]]) if d["kind"] == "budget"]
    assert (decision["action"], decision["policy"]) == ("block", "capped-team")


def test_budget_block_in_the_anthropic_shape(enforcing, feature):
    client = enforcing.anthropic(feature, **{"x-shadow-team": f"capped-{feature}"})
    ask = dict(model="claude-sonnet-4-6", max_tokens=50, messages=MESSAGES, extra_body={"temperature": 0.5})
    client.messages.create(**ask)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(**ask)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "budget 'capped-team' is spent" in refused.value.message
    assert len(enforcing.upstream_calls(feature)) == 1


def test_anthropic_repeated_request_is_answered_from_the_cache(enforcing, feature):
    client = enforcing.anthropic(feature)
    ask = dict(model="claude-sonnet-4-6", max_tokens=50, messages=MESSAGES, extra_body={"temperature": 0})
    first = client.messages.create(**ask)
    second = client.messages.create(**ask)
    assert second.content[0].text == first.content[0].text
    assert len(enforcing.upstream_calls(feature)) == 1


def test_rate_limit_refuses_with_retry_after(enforcing, feature):
    client = enforcing.openai(feature)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.5)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.5)
    assert "rate limit 'two-a-minute' is full" in str(refused.value)
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert len(enforcing.upstream_calls(feature)) == 2
    rows = enforcing.rows(feature, 3)
    assert [r["outcome"] for r in rows] == ["ok", "ok", "throttled"]


def raw_call(base_url: str, headers: dict, body: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    with (
        httpx.Client() as http,
        http.stream("POST", f"{base_url}/v1/chat/completions", headers=headers, content=json.dumps(body).encode()) as r,
    ):
        return r.status_code, r.headers.raw, b"".join(r.iter_raw())


@pytest.mark.parametrize("stream", [False, True])
def test_shadow_mode_changes_no_byte(shadowing, provider, feature, stream):
    """Every policy would act on these calls (cache hit, routing, budget block, throttle):
    in shadow mode the client still gets the upstream's bytes and the upstream the client's."""
    calls = [  # (feature, team, temperature), three calls each
        (f"{feature}-{stream}", None, 0),
        (f"test_routed-shadow-{stream}", None, 0.5),
        (f"test_rate_limit-shadow-{stream}", None, 0.5),
        (f"budget-shadow-{stream}", f"capped-{stream}", 0.5),
    ]
    for name, team, temperature in calls:
        body = {"model": "gpt-4o", "messages": MESSAGES, "temperature": temperature}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", "x-shadow-feature": name}
        if team:
            headers["x-shadow-team"] = team
        for _ in range(3):
            direct = raw_call(provider.url, headers, body)
            received_direct = provider.requests[-1]
            via_proxy = raw_call(shadowing.proxy.url, headers, body)
            received_via_proxy = provider.requests[-1]
            assert via_proxy == direct
            assert received_via_proxy.body == received_direct.body
            assert received_via_proxy.target == received_direct.target
            assert received_via_proxy.headers == received_direct.headers

    def actions(name: str, kind: str) -> list[str]:
        calls = shadowing.rows(name, 3)
        decisions = shadowing.decisions([r["id"] for r in calls])
        assert {d["mode"] for d in decisions} == {"shadow"}
        started = {r["id"]: r["ts"] for r in calls}
        assert [d["ts"] for d in decisions] == [started[d["id"]] for d in decisions]  # dated by their request
        return [d["action"] for d in decisions if d["kind"] == kind]

    assert actions(f"{feature}-{stream}", "exact_cache") == ["miss", "hit", "hit"]
    assert actions(f"test_routed-shadow-{stream}", "routing") == ["route"] * 3
    assert actions(f"test_rate_limit-shadow-{stream}", "rate_limit") == ["throttle"]
    assert actions(f"budget-shadow-{stream}", "budget") == ["block", "block"]


def refused_start(tmp_path: Path, policy_text: str | None, *args: str) -> str:
    """Run `llm-shadow proxy` with a policy that must not start; its error output."""
    options = []
    if policy_text is not None:
        policy = tmp_path / "policy.toml"
        policy.write_text(policy_text)
        options = ["--policy", str(policy)]
    command = ["proxy", "--upstream", "http://127.0.0.1:9", *options, *args, "--data", str(tmp_path / "data")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_a_policy_that_does_not_load_never_starts(tmp_path):
    bad = '[[routing]]\nname = "r"\nto = "gpt-4o-mini"\ntypo = 1\n'
    assert 'policy.toml:4: [[routing]] "typo": unknown key' in refused_start(tmp_path, bad, "--mode", "shadow")
    assert "--mode shadow needs --policy FILE" in refused_start(tmp_path, None, "--mode", "shadow")
    assert "choose one of observe, shadow, enforce" in refused_start(tmp_path, None, "--mode", "act")


def test_enforce_wants_the_observation_window_first(tmp_path):
    policy = 'observe_for = "7d"\n[cache.exact]\nname = "exact"\n'
    said = refused_start(tmp_path, policy, "--mode", "enforce")
    assert "holds 0.0 days of recorded traffic" in said
    assert "observe_for = 7 days" in said and "--force" in said


def test_a_rule_needing_another_wire_format_is_not_enforceable(tmp_path):
    policy = '[[routing]]\nname = "to-claude"\nmodel = "gpt-4o*"\nto = "claude-sonnet-4-6"\n'
    said = refused_start(tmp_path, policy, "--mode", "enforce", "--force")
    assert "policy.toml:4" in said and "not enforceable" in said
    shadowed = policy + 'mode = "shadow"\n'  # the same rule kept in shadow is fine
    check_enforceable(parse_policy(shadowed))


def test_the_simulator_names_what_is_not_enforceable(tmp_path):
    from analysis.simulate.results import _notes

    policy = parse_policy('[[routing]]\nname = "to-claude"\nmodel = "gpt-4o*"\nto = "claude-sonnet-4-6"\n')
    totals = defaultdict(int)  # no figures: only the notes about the policy itself
    assert any(
        n.startswith("Not enforceable live: to-claude: 'claude-sonnet-4-6' speaks") for n in _notes(policy, totals)
    )


def test_stats_shows_what_the_policies_decided(enforcing):
    stats = CliRunner().invoke(app, ["stats", "--data", str(enforcing.data_dir)])
    assert stats.exit_code == 0, stats.output
    text = " ".join(stats.output.split())
    assert "Policy decisions (shadow: would have; enforce: did)" in text
    assert "enforce" in text and "exact_cache" in text and "hit" in text


def test_a_stored_stream_answers_streams_only(enforcing, feature):
    """The cache replays an answer's bytes as they came: a JSON request after a streamed one
    with the same prompt goes upstream (the simulator keys the cache by form the same way);
    the JSON answer then answers the next JSON request."""
    client = enforcing.openai(feature)
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    assert first.parse().choices[0].message.content == text == second.parse().choices[0].message.content
    assert "x-llm-shadow-decision" not in first.headers
    assert second.headers["x-llm-shadow-decision"] == "exact_cache=hit; policy=exact"
    assert len(enforcing.upstream_calls(feature)) == 2
    assert [r["outcome"] for r in enforcing.rows(feature, 3)] == ["ok", "ok", "cached"]
