"""Fallback rules end to end: the real openai SDK -> `llm-shadow proxy --mode enforce|shadow`
-> two fake providers, the primary upstream and a backup.

The primary is told to fail (`FakeProvider.fail_next`) without touching the client's request;
the SDK never retries by itself (max_retries=0), so every retry seen is the proxy's. What
reached each upstream is read from the fake providers' logs, what was recorded from `requests`
and `decisions`. Each test sends its own feature, which the rule matches (`test_*`), and
the primary's failures name the model, so the tests do not see each other's calls."""

import json
import os
import threading
from pathlib import Path

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

BACKUP_KEY = "sk-backup-upstream-789"
POLICY = """
[[fallback]]
name = "slow-backoff"
feature = "test_backoff*"
retries = 1
backoff_ms = 8000

[[fallback]]
name = "through-dead-upstreams"
feature = "test_dead*"
retries = 0
timeout_s = 1
chain = [
  {{ to = "gpt-4o-mini", to_url = "{closed}/closed" }},
  {{ to = "gpt-4o-mini", to_url = "{silent}/silent" }},
  {{ to = "gpt-4o-mini", to_url = "{backup}/backup", to_api_key_env = "LLM_SHADOW_TEST_BACKUP_KEY" }},
]

[[budget]]
name = "tiny"
scope = "feature"
feature = "test_budget*"
window = "day"
limit_usd = 0.000001

[[fallback]]
name = "to-backup"
feature = "test_*"
on = ["429", "5xx"]
retries = 2
backoff_ms = 20
timeout_s = 10
chain = [{{ to = "gpt-4o-mini", to_url = "{backup}/backup", to_api_key_env = "LLM_SHADOW_TEST_BACKUP_KEY" }}]
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Proxied:
    def __init__(self, primary: FakeProvider, backup: FakeProvider, proxy: RunningProxy, data_dir: Path):
        self.primary, self.backup, self.proxy, self.data_dir = primary, backup, proxy, data_dir

    def openai(self, feature: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.proxy.url}/v1",
            api_key=API_KEY,
            max_retries=0,
            default_headers={"x-shadow-feature": feature},
        )

    def calls(self, provider: FakeProvider, feature: str) -> list:
        return [r for r in provider.requests if r.headers.get("x-shadow-feature") == feature]

    def query(self, sql: str, params: list) -> list[dict]:
        if not (self.data_dir / "records").exists():
            return []
        with Store(self.data_dir).connect() as con:
            return query_frame(con, sql, params).to_dicts()

    def rows(self, feature: str, n: int) -> list[dict]:
        sql = "SELECT * FROM requests WHERE feature = ? ORDER BY ts, id"
        # A generous wait: the recorder's worker process starts slowly on a loaded machine.
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
        if n == 0:  # nothing to wait for: the call's own row is there already (see rows)
            return self.query(sql, [feature])
        found = wait_for(lambda: len(rows := self.query(sql, [feature])) >= n and rows, timeout=60)
        return found or []


def start(primary: FakeProvider, backup: FakeProvider, tmp: Path, mode: str, closed: str, silent: str) -> Proxied:
    os.environ["LLM_SHADOW_TEST_BACKUP_KEY"] = BACKUP_KEY  # read by the proxy started now
    policy = tmp / "policy.toml"
    policy.write_text(POLICY.format(backup=backup.url, closed=closed, silent=silent))
    data_dir = tmp / "data"
    args = ["--upstream", f"{primary.url}@0", "--policy", str(policy), "--mode", mode, "--force"]
    return Proxied(primary, backup, RunningProxy(llm_shadow_proxy_command(args, data_dir)), data_dir)


@pytest.fixture(scope="module")
def enforcing(primary, backup, tmp_path_factory, closed, silent):
    proxied = start(primary, backup, tmp_path_factory.mktemp("enforce"), "enforce", closed, silent)
    yield proxied
    proxied.proxy.stop()


@pytest.fixture(scope="module")
def shadowing(primary, backup, tmp_path_factory, closed, silent):
    proxied = start(primary, backup, tmp_path_factory.mktemp("shadow"), "shadow", closed, silent)
    yield proxied
    proxied.proxy.stop()


def test_503_falls_back_to_the_second_upstream(enforcing, feature):
    enforcing.primary.fail_next(503, times=3, model=feature)  # the call and both retries
    raw = enforcing.openai(feature).chat.completions.with_raw_response.create(model=feature, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=to-backup"
    assert len(enforcing.calls(enforcing.primary, feature)) == 3
    [rescue] = enforcing.calls(enforcing.backup, feature)
    assert rescue.target == "/backup/v1/chat/completions"
    assert rescue.headers["authorization"] == f"Bearer {BACKUP_KEY}"
    assert json.loads(rescue.body)["model"] == "gpt-4o-mini"
    rows = enforcing.rows(feature, 4)  # every attempt is a call of its own
    assert [r["status"] for r in rows] == [503, 503, 503, 200]
    assert rows[-1]["model_requested"] == "gpt-4o-mini" and rows[-1]["cost_usd"] > 0
    assert rows[-1]["host"] == "127.0.0.1" and rows[-1]["path"] == "/backup/v1/chat/completions"
    assert {r["key_id"] for r in rows} == {rows[0]["key_id"]}  # the client's key, not the backup's
    decisions = enforcing.decisions(feature, 3)
    assert [(d["action"], d["model_to"], d["mode"]) for d in decisions] == [
        ("retry", feature, "enforce"),
        ("retry", feature, "enforce"),
        ("fallback", "gpt-4o-mini", "enforce"),
    ]
    assert {d["id"] for d in decisions} == {rows[0]["id"]}  # about the client's call
    assert [d["matched_id"] for d in decisions] == [r["id"] for r in rows[1:]]  # each attempt's own row


def test_budget_is_charged_with_the_rescue(enforcing, feature):
    """The failed call cost nothing; the attempt that answered did, and the budget counts it: the
    next call is refused without reaching an upstream."""
    enforcing.primary.fail_next(503, times=3, model=feature)
    client = enforcing.openai(feature)
    raw = client.chat.completions.with_raw_response.create(model=feature, messages=MESSAGES)
    assert raw.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=to-backup"
    with pytest.raises(openai.RateLimitError, match="budget 'tiny' is spent"):
        client.chat.completions.create(model=feature, messages=MESSAGES)
    assert len(enforcing.calls(enforcing.primary, feature)) == 3
    assert len(enforcing.calls(enforcing.backup, feature)) == 1


def test_retries_then_success(enforcing, feature):
    enforcing.primary.fail_next(429, times=2, model=feature)
    raw = enforcing.openai(feature).chat.completions.with_raw_response.create(model=feature, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-llm-shadow-decision"] == "fallback=retry; policy=to-backup"
    assert len(enforcing.calls(enforcing.primary, feature)) == 3
    assert enforcing.calls(enforcing.backup, feature) == []
    rows = enforcing.rows(feature, 3)
    assert [r["outcome"] for r in rows] == ["rate_limited", "rate_limited", "ok"]
    assert [d["action"] for d in enforcing.decisions(feature, 2)] == ["retry", "retry"]


def test_stream_rescued_before_its_first_byte(enforcing, feature):
    enforcing.primary.fail_next(503, times=1, model=feature)
    stream = enforcing.openai(feature).chat.completions.create(model=feature, messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    direct = openai.OpenAI(base_url=f"{enforcing.primary.url}/v1", api_key=API_KEY, max_retries=0)
    expected = "".join(
        c.choices[0].delta.content or ""
        for c in direct.chat.completions.create(model=feature, messages=MESSAGES, stream=True)
        if c.choices
    )
    assert text == expected and text
    assert [r["status"] for r in enforcing.rows(feature, 2)] == [503, 200]


def test_no_fallback_after_a_streams_first_byte(enforcing, feature):
    enforcing.primary.fail_next(503, times=2, model="unused")  # nothing the proxy should reach for
    client = enforcing.openai(feature)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=feature, messages=MESSAGES, stream=True, extra_headers={"x-fake-cut": "2"}
        ):
            pass
    [row] = enforcing.rows(feature, 1)
    assert row["status"] == 200 and row["outcome"] == "upstream_cut"
    assert len(enforcing.calls(enforcing.primary, feature)) == 1
    assert enforcing.calls(enforcing.backup, feature) == []
    assert enforcing.decisions(feature, 0) == []
    enforcing.primary.failures.pop("unused")


def test_dead_upstreams_that_refuse_or_time_out_are_passed_down_the_chain(enforcing, feature):
    enforcing.primary.fail_next(502, times=1, model=feature)
    raw = enforcing.openai(feature).chat.completions.with_raw_response.create(model=feature, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-llm-shadow-decision"] == "fallback=fallback; policy=through-dead-upstreams"
    assert len(enforcing.calls(enforcing.backup, feature)) == 1
    rows = enforcing.rows(feature, 4)
    assert [(r["status"], r["outcome"]) for r in rows] == [
        (502, "server_error"),
        (None, "connect_error"),
        (None, "timeout"),
        (200, "ok"),
    ]
    reasons = [d["reason"] for d in enforcing.decisions(feature, 3)]
    assert reasons[0].startswith("after 5xx (502): attempt 1 fallback gpt-4o-mini at http://127.0.0.1:")
    assert [r.rsplit(": ", 1)[1] for r in reasons] == ["connect_error", "timeout", "200"]


def test_backoff_holds_up_no_other_call(enforcing, feature):
    """While one call waits out its backoff (4 to 8 s), another call through the same proxy is
    answered: the wait is asyncio's, not the event loop's."""
    enforcing.primary.fail_next(503, times=1, model=feature)
    waiting: dict[str, object] = {}

    def slow_call() -> None:
        client = enforcing.openai(feature)
        waiting["raw"] = client.chat.completions.with_raw_response.create(model=feature, messages=MESSAGES)

    thread = threading.Thread(target=slow_call)
    thread.start()
    assert wait_for(lambda: len(enforcing.calls(enforcing.primary, feature)) == 1, timeout=60)
    answer = enforcing.openai(feature + "-other").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content
    assert thread.is_alive() and "raw" not in waiting  # still in its backoff
    thread.join(60)
    assert waiting["raw"].headers["x-llm-shadow-decision"] == "fallback=retry; policy=slow-backoff"
    assert len(enforcing.calls(enforcing.primary, feature)) == 2


def test_shadow_mode_changes_no_byte(shadowing, feature):
    body = json.dumps({"model": feature, "messages": MESSAGES}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}", "x-shadow-feature": feature}
    shadowing.primary.fail_next(503, times=1, model=feature)
    direct = httpx.post(f"{shadowing.primary.url}/v1/chat/completions", content=body, headers=headers)
    shadowing.primary.fail_next(503, times=1, model=feature)
    proxied = httpx.post(f"{shadowing.proxy.url}/v1/chat/completions", content=body, headers=headers)
    assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content) == (503, direct.content)
    assert "x-llm-shadow-decision" not in proxied.headers
    assert len(shadowing.calls(shadowing.primary, feature)) == 2  # the direct call and the proxied one, no retry
    assert shadowing.calls(shadowing.backup, feature) == []
    [row] = shadowing.rows(feature, 1)
    [decision] = shadowing.decisions(feature, 1)
    assert (decision["id"], decision["mode"], decision["action"], decision["model_to"]) == (
        row["id"],
        "shadow",
        "retry",
        feature,
    )
    assert decision["reason"] == "5xx (503): retry 2 times, then fall back to gpt-4o-mini at " + (
        f"{shadowing.backup.url}/backup"
    )


def test_simulate_decides_the_failures_shadow_mode_saw_as_shadow_mode_did(shadowing, feature):
    """Parity: the plan `simulate` gives each recorded 429 or 5xx equals the row shadow mode
    logged for it live (id, policy, kind, action, model_to), the same code deciding both."""
    client = shadowing.openai(feature)
    shadowing.primary.fail_next(503, times=1, model=feature)
    shadowing.primary.fail_next(429, times=1, model=feature + "-b")
    for model in (feature, feature + "-b", "gpt-4o-mini"):
        try:
            client.chat.completions.create(model=model, messages=MESSAGES)
        except openai.APIStatusError:
            pass  # shadow mode: the failed answers reach the client
    rows = shadowing.rows(feature, 3)
    live = shadowing.decisions(feature, 2)
    policy = parse_policy(POLICY.format(backup=shadowing.backup.url, closed="http://x", silent="http://y"), "p.toml")
    requests = Store(shadowing.data_dir).requests_frame().filter(pl.col("feature") == feature)
    simulated = simulate(policy, requests, prices=PriceTable.load()).fallback_decisions
    columns = ("id", "policy", "kind", "action", "matched_id", "model_to")
    assert sorted(tuple(d[c] for c in columns) for d in live) == sorted(tuple(d[c] for c in columns) for d in simulated)
    assert {d["id"] for d in simulated} == {r["id"] for r in rows if r["status"] != 200}
    assert len(simulated) == 2
