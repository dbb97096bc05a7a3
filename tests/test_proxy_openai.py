"""End to end: the real openai SDK -> `llm-shadow proxy` (real mitmdump) -> the fake provider.

Checks the pass-through promise (bytes in and out unchanged, streams forwarded chunk by chunk)
and the records, field by field.
"""

import json
import socket
import time

import httpx
import openai
import pytest

from analysis.pricing.table import PriceTable
from analysis.store.datadir import Store
from tests.conftest import wait_for

API_KEY = "sk-test-secret-123"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def records(data_dir, n: int, timeout: float = 15.0) -> list[dict]:
    """Wait until the data dir holds at least n requests rows; return them in time order."""

    def read():
        rows = Store(data_dir).requests_frame().to_dicts()
        return rows if len(rows) >= n else None

    rows = wait_for(read, timeout)
    assert rows is not None, f"fewer than {n} records appeared"
    return rows


def contents(data_dir) -> list[dict]:
    return Store(data_dir).contents_frame().to_dicts()


@pytest.fixture
def proxied(provider, start_proxy):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    return proxy, client


def gpt_4o_mini_cost(input_tokens: int, output_tokens: int) -> float:
    price = PriceTable.load().resolve("gpt-4o-mini-2024-07-18", "openai")
    rates = price.effective_rates()
    # The published gpt-4o-mini prices: $0.15 and $0.60 per million tokens.
    assert (rates["input"], rates["output"]) == (0.15, 0.60)
    return input_tokens * 0.15e-6 + output_tokens * 0.60e-6


def test_json_chat_is_recorded_field_by_field(provider, proxied, data_dir):
    _, client = proxied
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        temperature=0,
        user="end-user-7",
        extra_headers={"x-shadow-team": "support", "x-shadow-feature": "faq-bot"},
    )
    [row] = records(data_dir, 1)
    assert response.choices[0].message.content.startswith("Hello!")
    usage = response.usage
    assert row["provider"] == "openai_compatible"  # 127.0.0.1 is not a known provider host
    assert row["endpoint"] == "chat"
    assert row["host"] == "127.0.0.1"
    assert row["path"] == "/v1/chat/completions"
    assert row["method"] == "POST"
    assert row["status"] == 200
    assert row["outcome"] == "ok"
    assert row["stream"] is False
    assert row["model_requested"] == "gpt-4o-mini"
    assert row["model"] == response.model == "gpt-4o-mini-2024-07-18"
    assert row["input_tokens"] == usage.prompt_tokens
    assert row["output_tokens"] == usage.completion_tokens
    assert row["cached_input_tokens"] == 0
    assert row["reasoning_tokens"] == 0
    assert row["usage_source"] == "provider"
    assert row["cost_source"] == "computed"
    assert row["cost_usd"] == pytest.approx(gpt_4o_mini_cost(usage.prompt_tokens, usage.completion_tokens))
    assert row["price_version"] == PriceTable.load().version
    assert row["latency_ms"] > 0
    assert row["ttft_ms"] is None
    assert row["request_bytes"] == len(provider.requests[-1].body)
    assert row["response_bytes"] > 0
    assert row["team"] == "support"
    assert row["feature"] == "faq-bot"
    assert row["user"] == "end-user-7"
    assert row["temperature"] == 0
    assert row["has_tools"] is False
    assert row["key_id"].startswith("key_")
    assert len(row["prompt_hash"]) >= 16
    [content] = contents(data_dir)
    assert content["id"] == row["id"]
    assert "capital of France" in content["prompt_text"]
    assert content["response_text"] == response.choices[0].message.content


def test_the_api_key_is_never_stored(proxied, data_dir):
    _, client = proxied
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    records(data_dir, 1)
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_streamed_chat_with_usage(proxied, data_dir):
    _, client = proxied
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    [row] = records(data_dir, 1)
    assert row["stream"] is True
    assert row["usage_source"] == "provider"
    assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert 0 < row["ttft_ms"] <= row["latency_ms"]
    assert contents(data_dir)[0]["response_text"] == text


def test_streamed_chat_without_usage_is_estimated(proxied, data_dir):
    _, client = proxied
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [row] = records(data_dir, 1)
    from analysis.parsers.tokens import count_tokens

    assert row["usage_source"] == "estimated"
    assert row["output_tokens"] == count_tokens(text, "gpt-4o-mini")
    assert row["input_tokens"] > 0
    assert row["cost_source"] == "computed"


def test_tool_calls(proxied, data_dir):
    _, client = proxied
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=tools)
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=tools, stream=True, stream_options={"include_usage": True}
    )
    list(stream)
    rows = records(data_dir, 2)
    assert [r["has_tools"] for r in rows] == [True, True]
    assert [r["usage_source"] for r in rows] == ["provider", "provider"]
    assert rows[1]["ttft_ms"] is not None


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (429, openai.RateLimitError, "rate_limited"),
        (500, openai.InternalServerError, "server_error"),
        (400, openai.BadRequestError, "client_error"),
    ],
)
def test_upstream_errors_pass_through_and_are_recorded(proxied, data_dir, status, error, outcome):
    _, client = proxied
    with pytest.raises(error) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-status": str(status)}
        )
    assert raised.value.status_code == status
    [row] = records(data_dir, 1)
    assert (row["status"], row["outcome"]) == (status, outcome)
    assert row["error"].endswith(f"fake error {status}")
    assert row["input_tokens"] is None and row["cost_usd"] is None


def raw_call(base_url: str, headers: dict, body: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """POST with httpx, returning status, raw headers and raw (undecoded) body bytes."""
    with (
        httpx.Client() as http,
        http.stream("POST", f"{base_url}/v1/chat/completions", headers=headers, content=json.dumps(body).encode()) as r,
    ):
        raw = b"".join(r.iter_raw())
        return r.status_code, r.headers.raw, raw


@pytest.mark.parametrize("extra", [{}, {"x-fake-gzip": "1"}, {"x-fake-status": "429"}])
@pytest.mark.parametrize("stream", [False, True])
def test_client_gets_exactly_the_upstream_bytes(provider, proxied, extra, stream):
    proxy, _ = proxied
    body = (
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream, "stream_options": {"include_usage": True}}
        if stream
        else {"model": "gpt-4o-mini", "messages": MESSAGES}
    )
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", "x-custom": "kept", **extra}
    direct = raw_call(provider.url, headers, body)
    received_direct = provider.requests[-1]
    via_proxy = raw_call(proxy.url, headers, body)
    received_via_proxy = provider.requests[-1]
    assert via_proxy == direct
    # ... and the upstream gets exactly what the client sent (the Host header names the upstream).
    assert received_via_proxy.body == received_direct.body
    assert received_via_proxy.method == received_direct.method
    assert received_via_proxy.target == received_direct.target
    assert received_via_proxy.headers == received_direct.headers


def test_stream_chunks_are_forwarded_before_the_upstream_finishes(provider, proxied, data_dir):
    proxy, _ = proxied
    gate = provider.gate("first-token")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {API_KEY}", "x-fake-gate": "first-token"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", f"{proxy.url}/v1/chat/completions", headers=headers, json=body) as r,
    ):
        raw = r.iter_raw()
        first = next(raw)
        # The upstream is blocked until the gate opens: this chunk came through while it waited.
        assert not gate.is_set()
        assert b'"role": "assistant"' in first
        gate.set()
        rest = b"".join(raw)
    assert rest.endswith(b"data: [DONE]\n\n")
    [row] = records(data_dir, 1)
    assert row["outcome"] == "ok" and row["usage_source"] == "provider"


def test_a_stream_cut_by_the_upstream_is_recorded_and_estimated(proxied, data_dir):
    _, client = proxied
    with pytest.raises(openai.APIError):
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-cut": "4"},
        )
        list(stream)
    [row] = records(data_dir, 1)
    assert row["outcome"] == "upstream_cut"
    assert row["usage_source"] == "estimated"
    assert row["output_tokens"] > 0
    assert row["status"] == 200


def test_a_client_that_disconnects_mid_stream_is_recorded(provider, proxied, data_dir):
    proxy, _ = proxied
    gate = provider.gate("hold")
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nx-fake-gate: hold\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(request)
        received = s.recv(65536)
        assert b"200 OK" in received
    gate.set()
    [row] = records(data_dir, 1)
    assert row["outcome"] == "client_disconnected"
    assert row["usage_source"] == "estimated"


def test_non_llm_paths_pass_unrecorded(provider, proxied, data_dir):
    proxy, _ = proxied
    r = httpx.get(f"{proxy.url}/health")
    assert r.status_code == 404  # the fake provider's answer, passed through
    time.sleep(0.6)  # three flush intervals: nothing is written for it
    assert Store(data_dir).requests_frame().height == 0


def test_stats_and_sql_work_while_the_proxy_runs(proxied, data_dir):
    from typer.testing import CliRunner

    from cli import app

    _, client = proxied
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-shadow-team": "growth"}
        )
    records(data_dir, 3)
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "--by", "team", "--format", "json", "--data", str(data_dir)])
    assert result.exit_code == 0, result.output
    [group] = json.loads(result.stdout)
    assert (group["team"], group["calls"]) == ("growth", 3)
    result = runner.invoke(
        app,
        ["sql", "SELECT count(*) AS n FROM requests WHERE outcome = 'ok'", "--format", "csv", "--data", str(data_dir)],
    )
    assert result.stdout.splitlines() == ["n", "3"]


def test_the_recorder_loads_as_a_mitmdump_script(provider, start_mitmdump, data_dir, tmp_path):
    from tests.conftest import ROOT

    # As a user would from a checkout, elsewhere, with nothing on PYTHONPATH (in CI the project
    # is installed, so this then also passes without the script's own path fix).
    args = [
        "-s",
        str(ROOT / "addons" / "recorder.py"),
        "--mode",
        f"reverse:{provider.url}@0",
        "--set",
        f"shadow_data={data_dir}",
        "--set",
        "shadow_flush_ms=200",
    ]
    proxy = start_mitmdump(*args, cwd=tmp_path, project_on_path=False)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [row] = records(data_dir, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
    )
