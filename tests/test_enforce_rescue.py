"""Fallback rules rescuing calls that never got an answer, and rescued streams delivered event by
event: the real openai SDK -> `llm-shadow proxy --forward --mode enforce|shadow` -> upstreams
the client names (a closed port, a port that never answers, fake providers).

In forward mode the client's base URL picks the upstream, so one proxy serves a dead upstream
and a live one. The SDK never retries by itself (max_retries=0): every retry seen is the
proxy's. Each test sends its own feature (`feature` fixture), which the rules match."""

import json
import os
import socket
from pathlib import Path

import anthropic
import httpx
import openai
import polars as pl
import pytest

from analysis.pricing.table import PriceTable
from analysis.simulate.policy import parse_policy
from analysis.simulate.simulator import simulate
from analysis.store.datadir import Store, query_frame
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY

BACKUP_KEY = "sk-backup-upstream-456"
POLICY = """
[[fallback]]
name = "only-5xx"
feature = "test_only_5xx*"
on = ["5xx"]
retries = 1
backoff_ms = 10

[[fallback]]
name = "dead-end"
feature = "test_nothing_answers*"
retries = 1
backoff_ms = 10
chain = [{{ to = "gpt-4o-mini", to_url = "{closed}/closed" }}]

[[fallback]]
name = "claude-rescue"
feature = "test_anthropic*"
model = "claude*"
retries = 0

[[fallback.chain]]
to = "claude-haiku-4-5"
to_url = "{backup}/backup"
to_api_key_env = "LLM_SHADOW_TEST_RESCUE_KEY"

[[budget]]
name = "tiny"
scope = "feature"
feature = "test_a_client_that_leaves*"
window = "day"
limit_usd = 0.000001

[[fallback]]
name = "rescue"
feature = "test_*"
retries = 1
backoff_ms = 10
timeout_s = 1
chain = [{{ to = "gpt-4o-mini", to_url = "{backup}/backup", to_api_key_env = "LLM_SHADOW_TEST_RESCUE_KEY" }}]
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Proxied:
    def __init__(self, proxy: RunningProxy, data_dir: Path, backup: FakeProvider):
        self.proxy, self.data_dir, self.backup = proxy, data_dir, backup

    def openai(self, upstream: str, feature: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{upstream}/v1",
            api_key=API_KEY,
            max_retries=0,
            default_headers={"x-shadow-feature": feature},
            http_client=httpx.Client(proxy=self.proxy.url, trust_env=False, timeout=60),
        )

    def post(self, upstream: str, feature: str) -> httpx.Response:
        body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {API_KEY}",
            "x-shadow-feature": feature,
        }
        with httpx.Client(proxy=self.proxy.url, trust_env=False, timeout=60) as client:
            return client.post(f"{upstream}/v1/chat/completions", content=body, headers=headers)

    def query(self, sql: str, params: list) -> list[dict]:
        if not (self.data_dir / "records").exists():
            return []
        with Store(self.data_dir).connect() as con:
            return query_frame(con, sql, params).to_dicts()

    def rows(self, feature: str, n: int) -> list[dict]:
        sql = "SELECT * FROM requests WHERE feature = ? ORDER BY ts, id"
        rows = wait_for(lambda: len(found := self.query(sql, [feature])) >= n and found, timeout=60)
        assert rows and len(rows) == n, f"expected {n} rows for {feature}; proxy said:\n" + "".join(
            self.proxy.output[-20:]
        )
        return rows

    def decisions(self, feature: str, n: int) -> list[dict]:
        sql = (
            "SELECT d.* FROM decisions d JOIN requests r USING (id) WHERE r.feature = ? AND d.kind = 'fallback' "
            "ORDER BY d.ts, d.reason"
        )
        if n == 0:  # nothing to wait for: call rows() first
            return self.query(sql, [feature])
        return wait_for(lambda: len(rows := self.query(sql, [feature])) >= n and rows, timeout=60) or []

    def calls(self, feature: str) -> list:
        return [r for r in self.backup.requests if r.headers.get("x-shadow-feature") == feature]


def start(backup: FakeProvider, tmp: Path, mode: str, closed: str) -> Proxied:
    os.environ["LLM_SHADOW_TEST_RESCUE_KEY"] = BACKUP_KEY  # read by the proxy started now
    policy = tmp / "policy.toml"
    policy.write_text(POLICY.format(backup=backup.url, closed=closed))
    data_dir = tmp / "data"
    args = ["--forward", "--port", "0", "--confdir", str(tmp / "confdir"), "--policy", str(policy)]
    args += ["--mode", mode, "--force", "-v"]  # -v: a line per recorded call
    return Proxied(RunningProxy(llm_shadow_proxy_command(args, data_dir)), data_dir, backup)


@pytest.fixture(scope="module")
def enforcing(backup, tmp_path_factory, closed):
    proxied = start(backup, tmp_path_factory.mktemp("enforce"), "enforce", closed)
    yield proxied
    proxied.proxy.stop()


@pytest.fixture(scope="module")
def shadowing(backup, tmp_path_factory, closed):
    proxied = start(backup, tmp_path_factory.mktemp("shadow"), "shadow", closed)
    yield proxied
    proxied.proxy.stop()


def test_refused_connection_is_rescued_by_the_chain(enforcing, closed, feature):
    raw = enforcing.openai(closed, feature).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=rescue"
    [rescue] = enforcing.calls(feature)
    assert rescue.target == "/backup/v1/chat/completions"
    assert rescue.headers["authorization"] == f"Bearer {BACKUP_KEY}"
    assert json.loads(rescue.body)["model"] == "gpt-4o-mini"
    rows = enforcing.rows(feature, 3)  # the client's call, the retry, the rescue
    assert [(r["status"], r["outcome"], r["model_requested"]) for r in rows] == [
        (None, "connect_error", "gpt-4o"),
        (None, "connect_error", "gpt-4o"),
        (200, "ok", "gpt-4o-mini"),
    ]
    assert rows[-1]["cost_usd"] > 0 and rows[-1]["output_tokens"] > 0
    decisions = enforcing.decisions(feature, 2)
    assert [(d["action"], d["model_to"], d["mode"]) for d in decisions] == [
        ("retry", "gpt-4o", "enforce"),
        ("fallback", "gpt-4o-mini", "enforce"),
    ]
    assert {d["id"] for d in decisions} == {rows[0]["id"]}
    assert [d["matched_id"] for d in decisions] == [r["id"] for r in rows[1:]]
    assert decisions[0]["reason"].startswith("after connect_error: attempt 1 retry gpt-4o: connect_error")
    lines = [line for line in enforcing.proxy.output if line.startswith("llm-shadow: POST 127.0.0.1")]
    assert sum("/v1/chat/completions -> - connect_error" in line for line in lines) >= 2
    assert any("/backup/v1/chat/completions -> 200 ok" in line for line in lines)  # -v shows every attempt


def test_upstream_that_never_answers_is_rescued_after_the_rules_timeout(enforcing, silent, feature):
    raw = enforcing.openai(silent, feature).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=rescue"
    rows = enforcing.rows(feature, 3)
    assert [(r["status"], r["outcome"]) for r in rows] == [(None, "timeout"), (None, "timeout"), (200, "ok")]
    assert [d["action"] for d in enforcing.decisions(feature, 2)] == ["retry", "fallback"]


def test_rescued_stream_reaches_the_client_event_by_event(enforcing, primary, feature):
    """The backup sends its first event, then waits for the test: the client holds the first
    event while the backup has not yet sent its last one."""
    primary.fail_next(503, times=2, model="gpt-4o")  # the call and its retry
    gate = enforcing.backup.gate(feature)
    client = enforcing.openai(primary.url, feature)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-gate": feature},
    ) as response:
        assert response.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=rescue"
        events = response.iter_lines()
        first = next(line for line in events if line.startswith("data: "))
        assert feature not in enforcing.backup.finished  # the backup is still holding its last events
        gate.set()
        rest = [line for line in events if line.startswith("data: ")]
    assert json.loads(first[6:])["choices"][0]["delta"] is not None
    assert rest[-1] == "data: [DONE]"
    assert feature in enforcing.backup.finished
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "")
        for c in (json.loads(line[6:]) for line in [first, *rest[:-1]])
        if c["choices"]
    )
    assert text
    rows = enforcing.rows(feature, 3)
    assert [r["status"] for r in rows] == [503, 503, 200]
    rescue = rows[-1]  # recorded from the SSE events as they went by: tokens and cost from the usage chunk
    assert rescue["model_requested"] == "gpt-4o-mini" and rescue["outcome"] == "ok"
    assert rescue["input_tokens"] > 0 and rescue["output_tokens"] > 0 and rescue["cost_usd"] > 0


def test_when_nothing_answers_the_client_gets_a_502_in_its_providers_shape(enforcing, closed, feature):
    feature = feature.replace("test_", "test_nothing_answers_", 1)
    client = enforcing.openai(closed, feature)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-llm-shadow-decision"] == "fallback=exhausted; policy=dead-end"
    assert raised.value.body["code"] == "upstream_unavailable"  # the OpenAI error shape, read by the SDK
    assert raised.value.body["message"].startswith("llm-shadow: no upstream answered: ")
    rows = enforcing.rows(feature, 3)
    assert [r["outcome"] for r in rows] == ["connect_error"] * 3
    assert [d["action"] for d in enforcing.decisions(feature, 2)] == ["retry", "fallback"]


def test_a_rule_that_does_not_handle_connect_errors_leaves_mitmproxys_502(enforcing, closed, feature):
    feature = feature.replace("test_", "test_only_5xx_", 1)
    answer = enforcing.post(closed, feature)
    assert answer.status_code == 502 and "x-llm-shadow-decision" not in answer.headers
    [row] = enforcing.rows(feature, 1)
    assert (row["status"], row["outcome"]) == (None, "connect_error")
    assert enforcing.decisions(feature, 0) == []


def test_shadow_mode_gives_the_same_502_and_logs_the_plan(shadowing, closed, feature):
    """A refused connection: the client gets mitmproxy's own 502, as for a call no rule covers;
    the rule's plan is a decisions row; `simulate` gives the same row from the recording."""
    covered = shadowing.post(closed, feature)
    uncovered = shadowing.post(closed, "other-" + feature)
    assert covered.status_code == uncovered.status_code == 502
    assert covered.content == uncovered.content
    assert [k for k in covered.headers if k != "date"] == [k for k in uncovered.headers if k != "date"]
    assert "x-llm-shadow-decision" not in covered.headers
    assert shadowing.calls(feature) == []
    [row] = shadowing.rows(feature, 1)
    assert row["outcome"] == "connect_error"
    [decision] = shadowing.decisions(feature, 1)
    assert (decision["id"], decision["mode"], decision["action"], decision["model_to"], decision["matched_id"]) == (
        row["id"],
        "shadow",
        "retry",
        "gpt-4o",
        None,
    )
    assert (
        decision["reason"]
        == f"connect_error: retry 1 time, then fall back to gpt-4o-mini at {shadowing.backup.url}/backup"
    )
    policy = parse_policy(POLICY.format(backup=shadowing.backup.url, closed=closed), "p.toml")
    requests = Store(shadowing.data_dir).requests_frame().filter(pl.col("feature") == feature)
    simulated = simulate(policy, requests, prices=PriceTable.load()).fallback_decisions
    columns = ("id", "policy", "kind", "action", "matched_id", "model_to", "reason")
    assert [tuple(d[c] for c in columns) for d in simulated] == [tuple(decision[c] for c in columns)]


def test_a_client_that_leaves_during_the_rescue_is_recorded_once(enforcing, silent, feature):
    """The client gives up while the proxy waits for a silent upstream: the proxy finishes the
    rescue it started (each attempt recorded, the budget charged with it), and the client's call
    has one row, not two."""
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}", "x-shadow-feature": feature}
    with httpx.Client(proxy=enforcing.proxy.url, trust_env=False, timeout=0.3) as client:
        with pytest.raises(httpx.TimeoutException):
            client.post(f"{silent}/v1/chat/completions", content=body, headers=headers)
    assert [d["action"] for d in enforcing.decisions(feature, 2)] == ["retry", "fallback"]
    rows = enforcing.rows(feature, 3)
    assert [(r["status"], r["outcome"]) for r in rows] == [
        (None, "client_disconnected"),
        (None, "timeout"),
        (200, "ok"),
    ]
    assert rows[0]["path"] == "/v1/chat/completions"  # the client's request, not the relay's
    assert len(enforcing.calls(feature)) == 1
    with pytest.raises(openai.RateLimitError, match="budget 'tiny' is spent"):  # the rescue was charged
        enforcing.openai(enforcing.backup.url, feature).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    answer = enforcing.openai(enforcing.backup.url, feature + "-after").chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert answer.choices[0].message.content  # the proxy goes on serving


def test_the_upstream_receives_the_clients_own_headers(enforcing, primary, feature):
    """A call the proxy sends itself carries what the client sent, and nothing of the proxy's
    HTTP client (no Accept-Encoding, User-Agent or Accept the client did not send)."""
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
    host = primary.url.removeprefix("http://")
    request = (
        f"POST {primary.url}/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nX-Shadow-Feature: {feature}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", enforcing.proxy.port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = connection.recv(65536)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200")
    [received] = [r for r in primary.requests if r.headers.get("x-shadow-feature") == feature]
    assert set(received.headers) == {"host", "content-type", "authorization", "x-shadow-feature", "content-length"}
    assert received.body == body


def test_anthropic_stream_to_a_refused_upstream_is_rescued_event_by_event(enforcing, closed, feature):
    """The Anthropic wire format (named SSE events) through the same relay: the real anthropic
    SDK reads the backup's first event while the backup still holds its last."""
    feature = feature.replace("test_", "test_anthropic_", 1)
    gate = enforcing.backup.gate(feature)
    client = anthropic.Anthropic(
        base_url=closed,
        api_key=API_KEY,
        max_retries=0,
        default_headers={"x-shadow-feature": feature, "x-fake-gate": feature},
        http_client=anthropic.DefaultHttpxClient(proxy=enforcing.proxy.url, trust_env=False),
    )
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES) as stream:
        events = iter(stream)
        first = next(events)
        assert first.type == "message_start"
        assert feature not in enforcing.backup.finished  # the backup is still holding its last events
        gate.set()
        for _ in events:
            pass
        message = stream.get_final_message()
    assert message.content[0].text and message.model == "claude-haiku-4-5"
    assert feature in enforcing.backup.finished
    [rescue] = enforcing.calls(feature)
    assert rescue.headers["authorization"] == f"Bearer {BACKUP_KEY}"  # the backup's key, as the SDK sends keys
    rows = enforcing.rows(feature, 2)
    assert [(r["status"], r["outcome"]) for r in rows] == [(None, "connect_error"), (200, "ok")]
    assert {r["provider"] for r in rows} == {"anthropic_compatible"}  # the Anthropic wire format at a local host
    assert rows[1]["output_tokens"] > 0 and rows[1]["cost_usd"] > 0
    assert [d["action"] for d in enforcing.decisions(feature, 1)] == ["fallback"]
