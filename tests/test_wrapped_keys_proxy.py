"""Wrapped keys end to end: the real openai and anthropic SDKs hold an `lsk-...` key, two
`llm-shadow proxy --mode shadow` processes on one data directory swap it for the real key, and
the fake provider records what it received.

The real keys exist only in the proxies' environment (as `keys create --provider-key-env`
names them). Each test creates its own key through the registry the proxies read.
"""

import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from analysis.shared_state.keys import FileKeys, KeyRegistry
from analysis.store.datadir import Store, query_frame
from tests.conftest import ROOT, RunningProxy, llm_shadow_proxy_command, subprocess_env, wait_for
from tests.fake_provider import FakeProvider

REAL_OPENAI_KEY = "sk-real-openai-key-never-seen-by-the-app"
REAL_ANTHROPIC_KEY = "sk-ant-real-key-never-seen-by-the-app"
ENV = {"LLM_SHADOW_TEST_OPENAI_KEY": REAL_OPENAI_KEY, "LLM_SHADOW_TEST_ANTHROPIC_KEY": REAL_ANTHROPIC_KEY}
POLICY = """
[cache.exact]
name = "exact"
scope = "feature"
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Fleet:
    """One fake provider, one data directory, proxies in front of it."""

    def __init__(self, provider: FakeProvider, data_dir: Path, proxies: list[RunningProxy]):
        self.provider, self.data_dir, self.proxies = provider, data_dir, proxies
        self.registry = KeyRegistry(FileKeys(data_dir))

    def upstream(self, marker: str) -> list:
        """Requests the provider received whose body carries `marker`."""
        return [r for r in self.provider.requests if marker.encode() in r.body]

    def rows(self, key_id: str, n: int = 1) -> list[dict]:
        def found():
            if not (self.data_dir / "records").exists():
                return []
            with Store(self.data_dir).connect() as con:
                rows = query_frame(con, "SELECT * FROM requests WHERE key_id = ? ORDER BY ts", [key_id]).to_dicts()
            return len(rows) >= n and rows

        rows = wait_for(found)
        assert rows, f"no row for {key_id}; proxy said:\n" + "".join(self.proxies[0].output[-20:])
        return rows


def start_proxies(provider: FakeProvider, tmp: Path, mode: str, count: int) -> list[RunningProxy]:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    args = ["--upstream", f"{provider.url}@0", "--mode", mode, "--force"]
    if mode != "observe":
        args += ["--policy", str(policy)]
    return [RunningProxy(llm_shadow_proxy_command(args, tmp / "data"), **ENV) for _ in range(count)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wrapped")
    with FakeProvider() as provider:
        proxies = start_proxies(provider, tmp, "shadow", 2)
        try:
            yield Fleet(provider, tmp / "data", proxies)
        finally:
            for p in proxies:
                p.stop()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_openai_sdk_upstream_gets_the_real_key_and_the_row_the_key_attribution(fleet, feature):
    record, wrapped = fleet.registry.create("support", "LLM_SHADOW_TEST_OPENAI_KEY", feature="faq-bot", user="ann")
    client = openai.OpenAI(base_url=f"{fleet.proxies[0].url}/v1", api_key=wrapped, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask(feature))
    assert raw.parse().choices[0].message.content
    [received] = fleet.upstream(feature)
    assert received.headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    assert wrapped not in str(received.headers)
    assert REAL_OPENAI_KEY.encode() not in raw.content and REAL_OPENAI_KEY not in str(raw.headers)
    [row] = fleet.rows(record.key_id)
    assert (row["team"], row["feature"], row["user"], row["status"]) == ("support", "faq-bot", "ann", 200)


def test_anthropic_sdk_key_is_swapped(fleet, feature):
    record, wrapped = fleet.registry.create("research", "LLM_SHADOW_TEST_ANTHROPIC_KEY")
    client = anthropic.Anthropic(
        base_url=fleet.proxies[1].url, api_key=wrapped, max_retries=0, default_headers={"x-shadow-feature": feature}
    )
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=ask(feature))
    assert message.content[0].text
    [received] = fleet.upstream(feature)
    # The SDK sends its key as Authorization: Bearer (anthropic 2.x) or x-api-key (1.x).
    sent = received.headers.get("x-api-key") or received.headers["authorization"].removeprefix("Bearer ")
    assert sent == REAL_ANTHROPIC_KEY
    [row] = fleet.rows(record.key_id)
    assert (row["team"], row["feature"]) == ("research", feature)  # the key sets no feature: the header's


@pytest.mark.parametrize(
    ("header", "path", "real"),
    [
        ("x-api-key", "/v1/messages", REAL_ANTHROPIC_KEY),
        ("x-goog-api-key", "/v1beta/models/gemini-2.5-flash:generateContent", REAL_ANTHROPIC_KEY),
        ("api-key", "/v1/chat/completions", REAL_OPENAI_KEY),
    ],
)
def test_each_providers_key_header_is_swapped(fleet, feature, header, path, real):
    env = "LLM_SHADOW_TEST_ANTHROPIC_KEY" if real == REAL_ANTHROPIC_KEY else "LLM_SHADOW_TEST_OPENAI_KEY"
    record, wrapped = fleet.registry.create("t", env)
    if "gemini" in path:
        body = {"contents": [{"role": "user", "parts": [{"text": feature}]}]}
    else:
        body = {"model": "claude-sonnet-4-6", "max_tokens": 20, "messages": ask(feature)}
    headers = {header: wrapped, "anthropic-version": "2023-06-01"}
    answer = httpx.post(f"{fleet.proxies[0].url}{path}", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    [received] = fleet.upstream(feature)
    assert received.headers[header] == real
    assert fleet.rows(record.key_id)[0]["team"] == "t"


def test_unknown_key_is_refused_in_each_providers_shape_without_the_upstream(fleet, feature):
    bogus = "lsk-0123456789ab-not-a-real-secret"
    client = openai.OpenAI(base_url=f"{fleet.proxies[0].url}/v1", api_key=bogus, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="not a valid wrapped key"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature))
    claude = anthropic.Anthropic(base_url=fleet.proxies[0].url, api_key=bogus, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError, match="not a valid wrapped key"):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=ask(feature))
    assert fleet.upstream(feature) == []


def test_expired_key_is_refused(fleet, feature):
    _, wrapped = fleet.registry.create("t", "LLM_SHADOW_TEST_OPENAI_KEY", expires_in_s=1, now=time.time() - 10)
    client = openai.OpenAI(base_url=f"{fleet.proxies[0].url}/v1", api_key=wrapped, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="has expired"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature))
    assert fleet.upstream(feature) == []


def test_revocation_reaches_every_proxy_within_a_second(fleet, feature):
    record, wrapped = fleet.registry.create("support", "LLM_SHADOW_TEST_OPENAI_KEY")
    clients = [openai.OpenAI(base_url=f"{p.url}/v1", api_key=wrapped, max_retries=0) for p in fleet.proxies]
    for client in clients:
        client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature))
    revoke = [sys.executable, str(ROOT / "cli.py"), "keys", "revoke", record.key_id, "--data", str(fleet.data_dir)]
    assert subprocess.run(revoke, env=subprocess_env(), capture_output=True, timeout=60).returncode == 0
    time.sleep(1.0)
    for client in clients:
        with pytest.raises(openai.AuthenticationError, match="was revoked"):
            client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature + "-after"))
    assert fleet.upstream(feature + "-after") == []


def test_key_budget_refuses_after_the_call_that_spent_it(fleet, feature):
    record, wrapped = fleet.registry.create("t", "LLM_SHADOW_TEST_OPENAI_KEY", budget_usd=0.000001, window="day")
    client = openai.OpenAI(base_url=f"{fleet.proxies[0].url}/v1", api_key=wrapped, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature))  # spends more than the budget
    with pytest.raises(openai.RateLimitError, match=f"{record.key_id} has spent its daily budget"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature + "-second"))
    assert fleet.upstream(feature + "-second") == []
    first, refused = fleet.rows(record.key_id, 2)
    assert first["cost_usd"] > 0.000001 and (refused["outcome"], refused["cost_usd"]) == ("blocked", 0.0)


def test_raw_provider_key_passes_unchanged(fleet, feature):
    client = openai.OpenAI(base_url=f"{fleet.proxies[0].url}/v1", api_key="sk-raw-app-key", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=ask(feature))
    [received] = fleet.upstream(feature)
    assert received.headers["authorization"] == "Bearer sk-raw-app-key"


def test_observe_mode_passes_a_wrapped_key_unchanged(tmp_path, feature):
    with FakeProvider() as provider:
        [proxy] = start_proxies(provider, tmp_path, "observe", 1)
        try:
            _, wrapped = KeyRegistry(FileKeys(tmp_path / "data")).create("t", "LLM_SHADOW_TEST_OPENAI_KEY")
            body = {"model": "gpt-4o-mini", "messages": ask(feature)}
            answer = httpx.post(
                f"{proxy.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {wrapped}"}
            )
            assert answer.status_code == 200
            assert [r.headers["authorization"] for r in provider.requests] == [f"Bearer {wrapped}"]
        finally:
            proxy.stop()
