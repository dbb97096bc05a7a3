"""Accounting end to end with the real anthropic SDK: the SDK -> `llm-shadow proxy` -> the fake provider.

Messages JSON and streamed (the SDK's `messages.stream()` helper and raw `create(stream=True)`),
message batches and errors. Each test reads the usage from the SDK's response object and maps
it to llm-shadow's convention with the arithmetic written out. Anthropic's convention differs
from ours: its input_tokens EXCLUDES cache reads and cache writes, so ours is the sum
input_tokens + cache_read_input_tokens + cache_creation_input_tokens; cache writes split into
5-minute and 1-hour ones (cache_creation.ephemeral_5m/1h_input_tokens), priced apart.

The fake provider listens on 127.0.0.1, so calls are recorded with provider
`anthropic_compatible` (an unknown host speaking the Anthropic shape, recognised by the SDK's
anthropic-version header); Claude models still get Anthropic's list prices.
"""

import json

import anthropic
import pytest

from analysis.parsers.tokens import count_tokens
from tests.sdk_support import (
    API_KEY,
    assert_cost,
    assert_successful_call,
    assert_tokens,
    rates,
    recording_proxy,
)

PROVIDER = "anthropic_compatible"
MODEL = "claude-sonnet-4-6"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM = [
    {"type": "text", "text": "You answer geography questions.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
]
# A call that read 4,000 tokens from the cache and wrote 1,500 (1,000 for 5 minutes, 500 for
# an hour), in Anthropic's shape: input_tokens are only the 120 uncached ones.
CACHED_USAGE = {
    "input_tokens": 120,
    "cache_read_input_tokens": 4000,
    "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    "output_tokens": 300,
}


@pytest.fixture(scope="module")
def shadow(tmp_path_factory):
    with recording_proxy(tmp_path_factory.mktemp("sdk-anthropic") / "data") as running:
        yield running


@pytest.fixture
def client(shadow, feature) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=shadow.url, api_key=API_KEY, max_retries=0, default_headers={"x-shadow-feature": feature}
    )


def fake_usage(usage: dict, start: dict | None = None) -> dict[str, str]:
    headers = {"x-fake-usage": json.dumps(usage)}
    if start is not None:
        headers["x-fake-start-usage"] = json.dumps(start)
    return headers


def our_tokens(usage) -> dict:
    """An Anthropic SDK Usage in llm-shadow's convention."""
    return {
        "input": usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens,
        "cached": usage.cache_read_input_tokens,
        "cache_write": usage.cache_creation_input_tokens,
        "cache_write_1h": usage.cache_creation.ephemeral_1h_input_tokens,
        "output": usage.output_tokens,
        "reasoning": usage.output_tokens_details.thinking_tokens if usage.output_tokens_details else 0,
    }


def assert_call(row: dict, *, model: str, stream: bool, endpoint: str = "messages", path: str = "/v1/messages") -> None:
    assert (row["provider"], row["endpoint"], row["path"]) == (PROVIDER, endpoint, path)
    assert (row["model_requested"], row["model"]) == (MODEL, model)
    assert_successful_call(row, stream=stream)


def sonnet_rates() -> dict[str, float]:
    sonnet = rates(MODEL, PROVIDER)
    # Claude Sonnet 4.6's published prices: $3 input, $0.30 cache read, $3.75 5-minute cache
    # write (1.25x input), $6 1-hour cache write (2x input), $15 output.
    assert (
        sonnet["input"],
        sonnet["cached_input"],
        sonnet["cache_write"],
        sonnet["cache_write_1h"],
        sonnet["output"],
    ) == (3.00, 0.30, 3.75, 6.00, 15.00)
    return sonnet


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_messages_json_with_cache_reads_and_writes(shadow, client, feature, gzip):
    compressed = {"x-fake-gzip": "1"} if gzip else {}  # the API gzips JSON answers
    message = client.messages.create(
        model=MODEL,
        max_tokens=512,
        system=SYSTEM,
        messages=MESSAGES,
        extra_headers={**fake_usage(CACHED_USAGE), **compressed},
    )
    row = shadow.row(feature)
    usage = message.usage
    assert_call(row, model=message.model, stream=False)
    assert_tokens(row, **our_tokens(usage))
    # 120 uncached + 4000 read + 1500 written
    assert (
        row["input_tokens"]
        == usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        == 5620
    )
    assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (1500, 500)
    sonnet_rates()
    # 120 x 3.00 + 4000 x 0.30 + 1000 x 3.75 + 500 x 6.00 + 300 x 15.00
    # = 360 + 1200 + 3750 + 3000 + 4500 = 12810 dollars per million tokens
    assert_cost(row, 12810e-6)
    content = shadow.content(row["id"])
    assert content["response_text"] == message.content[0].text
    assert content["system_prompt"] == "You answer geography questions."


def test_messages_stream_helper(shadow, client, feature):
    with client.messages.stream(
        model=MODEL, max_tokens=512, system=SYSTEM, messages=MESSAGES, extra_headers=fake_usage(CACHED_USAGE)
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    row = shadow.row(feature)
    assert_call(row, model=message.model, stream=True)
    assert_tokens(row, **our_tokens(message.usage))
    assert row["input_tokens"] == 5620
    sonnet_rates()
    assert_cost(row, 12810e-6)
    assert shadow.content(row["id"])["response_text"] == text


def test_raw_stream_with_revised_input_and_thinking_tokens(shadow, client, feature):
    # Server tools ran: message_delta's cumulative counts revise message_start's input. Newer
    # models also say how many of the output tokens were thinking.
    final = {
        "input_tokens": 180,
        "cache_read_input_tokens": 2048,
        "cache_creation_input_tokens": 0,
        "output_tokens": 350,
        "output_tokens_details": {"thinking_tokens": 200},
    }
    events = list(
        client.messages.create(
            model=MODEL,
            max_tokens=1024,
            messages=MESSAGES,
            stream=True,
            extra_headers=fake_usage(final, start={"input_tokens": 100}),
        )
    )
    start = next(e for e in events if e.type == "message_start").message.usage
    delta = next(e for e in events if e.type == "message_delta").usage
    assert (start.input_tokens, delta.input_tokens) == (100, 180)
    row = shadow.row(feature)
    assert_call(row, model=MODEL, stream=True)
    # The last value of each count wins: 180 uncached + 2048 read; 350 output, 200 of it thinking.
    assert_tokens(
        row,
        input=delta.input_tokens + delta.cache_read_input_tokens + delta.cache_creation_input_tokens,
        cached=delta.cache_read_input_tokens,
        output=delta.output_tokens,
        reasoning=delta.output_tokens_details.thinking_tokens,
    )
    assert row["input_tokens"] == 2228
    sonnet_rates()
    # 180 x 3.00 + 2048 x 0.30 + 350 x 15.00 (thinking is billed as output)
    # = 540 + 614.4 + 5250 = 6404.4
    assert_cost(row, 6404.4e-6)


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (529, anthropic.OverloadedError, "server_error"),
        (429, anthropic.RateLimitError, "rate_limited"),
    ],
)
def test_errors(shadow, client, feature, status, error, outcome):
    with pytest.raises(error):
        client.messages.create(
            model=MODEL, max_tokens=64, messages=MESSAGES, extra_headers={"x-fake-status": str(status)}
        )
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"]) == (status, outcome, False)
    kind = "overloaded_error" if status == 529 else "rate_limit_error"
    assert row["error"] == f"{kind}: fake error {status}"
    assert (row["input_tokens"], row["usage_source"], row["cost_usd"], row["cost_source"]) == (
        None,
        "none",
        None,
        "none",
    )


def test_an_error_answered_to_a_stream(shadow, client, feature):
    with pytest.raises(anthropic.OverloadedError):
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=MESSAGES, extra_headers={"x-fake-status": "529"}
        ) as stream:
            stream.get_final_message()
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"], row["ttft_ms"]) == (529, "server_error", False, None)
    assert (row["usage_source"], row["cost_source"]) == ("none", "none")


def test_message_batch_results(shadow, client, feature):
    per_message = {
        "input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 800,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 500},
        "output_tokens": 150,
    }
    requests = [
        {
            "custom_id": f"request-{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"question {i}"}],
            },
        }
        for i in range(2)
    ]
    batch = client.messages.batches.create(requests=requests)
    results = list(client.messages.batches.results(batch.id, extra_headers=fake_usage(per_message)))
    create_row, retrieve_row, results_row = shadow.row(feature, n=3)

    assert (create_row["endpoint"], create_row["method"], create_row["batch"]) == ("batches", "POST", True)
    assert create_row["model_requested"] == "claude-haiku-4-5"
    assert (create_row["usage_source"], create_row["cost_source"]) == ("none", "none")
    assert (retrieve_row["method"], retrieve_row["path"]) == ("GET", f"/v1/messages/batches/{batch.id}")
    assert (retrieve_row["usage_source"], retrieve_row["cost_source"]) == ("none", "none")

    assert results_row["path"] == f"/v1/messages/batches/{batch.id}/results"
    assert (results_row["batch"], results_row["model"], results_row["outcome"]) == (True, "claude-haiku-4-5", "ok")
    summed = {}
    for result in results:
        for name, value in our_tokens(result.result.message.usage).items():
            summed[name] = summed.get(name, 0) + value
    assert_tokens(results_row, **summed)
    # Two messages of 100 uncached + 2000 read + 800 written (300 for 5 minutes, 500 for 1 hour).
    assert (results_row["input_tokens"], results_row["cached_input_tokens"]) == (5800, 4000)
    assert (results_row["cache_write_tokens"], results_row["cache_write_1h_tokens"]) == (1600, 1000)
    haiku = rates("claude-haiku-4-5", PROVIDER, service="batch")
    # Batch prices are half; the cache multipliers (1.25x, 2x) apply to the batch input price.
    assert (haiku["input"], haiku["cached_input"], haiku["cache_write"], haiku["cache_write_1h"], haiku["output"]) == (
        0.50,
        0.05,
        0.625,
        1.00,
        2.50,
    )
    # 200 x 0.50 + 4000 x 0.05 + 600 x 0.625 + 1000 x 1.00 + 300 x 2.50
    # = 100 + 200 + 375 + 1000 + 750 = 2425
    assert_cost(results_row, 2425e-6)


def test_a_stream_cut_by_the_upstream_keeps_the_reported_input(shadow, client, feature):
    text = []
    # The SDK surfaces the cut as its HTTP library's error (httpx or httpx2, by SDK version).
    with pytest.raises(Exception, match="incomplete chunked read"):
        with client.messages.stream(
            model=MODEL,
            max_tokens=512,
            system=SYSTEM,
            messages=MESSAGES,
            extra_headers={**fake_usage(CACHED_USAGE), "x-fake-cut": "5"},
        ) as stream:
            text.extend(stream.text_stream)
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"]) == (200, "upstream_cut", True)
    # message_start reported the input (120 + 4000 read + 1500 written) before the cut: that is
    # kept; the output is counted from the text that passed (3 words), and the row says so.
    passed = "".join(text)
    assert passed == "Hello! This is"
    output = max(1, count_tokens(passed, MODEL))  # message_start said 1 output token so far
    assert_tokens(row, input=5620, cached=4000, cache_write=1500, cache_write_1h=500, output=output, source="estimated")
    assert_cost(row, (120 * 3.00 + 4000 * 0.30 + 1000 * 3.75 + 500 * 6.00 + output * 15.00) / 1e6)


def test_a_client_that_stops_reading_is_recorded_with_the_reported_input(shadow, client, feature):
    gate = shadow.provider.gate(feature)  # the provider holds the stream after message_start
    stream = client.messages.create(
        model=MODEL,
        max_tokens=512,
        messages=MESSAGES,
        stream=True,
        extra_headers={**fake_usage(CACHED_USAGE), "x-fake-gate": feature},
    )
    first = next(iter(stream))
    assert first.type == "message_start"
    stream.close()  # the user cancelled: the SDK drops the connection
    row = shadow.row(feature)
    gate.set()
    assert (row["status"], row["outcome"], row["stream"]) == (200, "client_disconnected", True)
    assert row["ttft_ms"] is None  # no output token reached the client
    usage = first.message.usage
    assert_tokens(
        row,
        input=usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens,
        cached=usage.cache_read_input_tokens,
        cache_write=usage.cache_creation_input_tokens,
        cache_write_1h=usage.cache_creation.ephemeral_1h_input_tokens,
        output=usage.output_tokens,
        source="estimated",
    )
    assert_cost(row, (120 * 3.00 + 4000 * 0.30 + 1000 * 3.75 + 500 * 6.00 + 1 * 15.00) / 1e6)


def test_no_api_key_is_stored(shadow):
    for path in shadow.data_dir.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


# --- Claude on Vertex AI ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_on_vertex_ai(shadow, feature, stream):
    vertex = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="shadow-test",
        access_token="ya29.fake",
        base_url=f"{shadow.url}/v1",
        max_retries=0,
        default_headers={"x-shadow-feature": feature},
    )
    if stream:
        with vertex.messages.stream(
            model=MODEL, max_tokens=512, messages=MESSAGES, extra_headers=fake_usage(CACHED_USAGE)
        ) as s:
            "".join(s.text_stream)
            message = s.get_final_message()
    else:
        message = vertex.messages.create(
            model=MODEL, max_tokens=512, messages=MESSAGES, extra_headers=fake_usage(CACHED_USAGE)
        )
    row = shadow.row(feature)
    method = "streamRawPredict" if stream else "rawPredict"
    # The model is named in the URL only; the body says anthropic_version and no model.
    assert row["path"] == f"/v1/projects/shadow-test/locations/us-east5/publishers/anthropic/models/{MODEL}:{method}"
    assert (row["endpoint"], row["model_requested"], row["model"]) == ("messages", MODEL, message.model)
    assert_tokens(row, **our_tokens(message.usage))
    sonnet_rates()
    assert_cost(row, 12810e-6)  # as in test_messages_json_with_cache_reads_and_writes
