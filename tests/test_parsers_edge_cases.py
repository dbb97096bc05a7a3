"""Parser behaviour the recorded cassettes do not show: cut streams, estimation, error bodies,
Azure deployments, provider variants, batches, Gemini's JSON-array stream.

Where a figure comes from a provider's real answer outside the cassette set it is said so.
"""

import dataclasses
import json

import pytest

from analysis.parsers import common, parse, read_request
from analysis.parsers.common import contains_image
from analysis.parsers.detect import detect
from analysis.parsers.exchange import FRESH_FIELDS, Exchange, Parsed, Usage, new_parsed
from analysis.parsers.tokens import count_tokens

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}


def make_exchange(
    host: str,
    path: str,
    request: dict | None,
    chunks: list[bytes],
    status: int = 200,
    headers: dict | None = None,
    method: str = "POST",
) -> Exchange:
    target = detect(host, path, {"anthropic-version": "2023-06-01"}, method)
    assert target is not None, path
    return Exchange(
        provider=target.provider,
        endpoint=target.endpoint,
        wire_format=target.wire_format,
        method=method,
        host=host,
        path=path,
        request_body=json.dumps(request).encode() if request is not None else b"",
        status=status,
        response_headers=headers if headers is not None else (SSE if len(chunks) > 1 else JSON),
        response_chunks=[(0.5 + i, chunk) for i, chunk in enumerate(chunks)],
    )


def sse(*events: dict | str, event_names: list[str] | None = None) -> list[bytes]:
    """One chunk per event: `data: <json>\\n\\n` (with `event:` lines when named)."""
    chunks = []
    for i, event in enumerate(events):
        data = event if isinstance(event, str) else json.dumps(event)
        name = f"event: {event_names[i]}\n" if event_names else ""
        chunks.append(f"{name}data: {data}\n\n".encode())
    return chunks


CHAT_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello in French."},
    ],
    "stream": True,
}


def chat_chunk(content: str | None = None, role: str | None = None, finish: str | None = None) -> dict:
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


# --- OpenAI chat: estimation -----------------------------------------------------------------


def test_stream_without_usage_is_estimated_with_tiktoken():
    chunks = sse(
        chat_chunk("", role="assistant"),
        chat_chunk("Bonjour"),
        chat_chunk(" le monde"),
        chat_chunk(finish="stop"),
        "[DONE]",
    )
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", CHAT_REQUEST, chunks))
    assert parsed.complete and parsed.stream
    assert parsed.response_text == "Bonjour le monde"
    assert parsed.usage.source == "estimated"
    # o200k_base: "You are terse." = 4 tokens, "user: Say hello in French." = 7 tokens
    assert parsed.usage.input_tokens == 4 + 7
    # o200k_base: "Bonjour le monde" = 3 tokens
    assert parsed.usage.output_tokens == 3
    assert parsed.first_token_at == 1.5  # the "Bonjour" chunk, not the role-only first chunk


def test_stream_cut_before_the_usage_chunk_is_estimated_and_incomplete():
    request = dict(CHAT_REQUEST, stream_options={"include_usage": True})
    chunks = sse(chat_chunk("", role="assistant"), chat_chunk("Bonjour"))
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", request, chunks))
    assert parsed.complete is False
    assert parsed.usage.source == "estimated"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (4 + 7, 1)
    # the estimate matches the encoding's own count
    assert parsed.usage.output_tokens == count_tokens("Bonjour", "gpt-4o-mini")


def test_stream_usage_in_the_last_chunk_without_stream_options():
    # Mistral sends usage beside the finish_reason without being asked.
    last = chat_chunk("!", finish="stop")
    last["usage"] = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    chunks = sse(chat_chunk("Salut", role="assistant"), last, "[DONE]")
    parsed = parse(make_exchange("api.mistral.ai", "/v1/chat/completions", CHAT_REQUEST, chunks))
    assert parsed.usage.source == "provider"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (12, 3)
    assert parsed.first_token_at == 0.5


def test_stream_with_nothing_to_count_has_no_usage():
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", {}, [b"", b""]))
    assert parsed.usage.source == "none"
    assert parsed.complete is False


def test_non_json_error_body_becomes_the_error():
    exchange = make_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        CHAT_REQUEST,
        [b"<html><body>502 Bad Gateway</body></html>"],
        status=502,
        headers={"content-type": "text/html"},
    )
    parsed = parse(exchange)
    assert parsed.error == "<html><body>502 Bad Gateway</body></html>"
    assert parsed.usage.source == "none"


def test_json_error_body_on_a_streaming_request():
    error = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    exchange = make_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        CHAT_REQUEST,
        [json.dumps(error).encode()],
        status=429,
    )
    parsed = parse(exchange)
    assert parsed.error == "requests: Rate limit reached"
    assert parsed.stream is False  # the answer was not streamed
    assert parsed.usage.source == "none"


def test_unreadable_request_body_is_not_fatal():
    exchange = make_exchange("api.openai.com", "/v1/chat/completions", None, [b'{"choices": []}'])
    exchange.request_body = b"\xff\xfe not json"
    parsed = parse(exchange)
    assert parsed.model_requested is None and parsed.error is None


# --- OpenAI chat: provider variants ----------------------------------------------------------


def test_azure_model_requested_from_the_deployment():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    response = {
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    }
    exchange = make_exchange(
        "myres.openai.azure.com",
        "/openai/deployments/prod-gpt4o/chat/completions",
        body,
        [json.dumps(response).encode()],
    )
    parsed = parse(exchange)
    assert exchange.provider == "azure"
    assert parsed.model_requested == "prod-gpt4o"
    assert parsed.model == "gpt-4o-2024-08-06"
    assert parsed.canonical_request["model"] == "prod-gpt4o"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_a_json_answer_is_read_in_every_encoding_json_reads(encoding):
    # common.response_json decodes UTF-8 itself (the fast path) and leaves other encodings
    # (a byte-order mark, UTF-16, UTF-32) to json.loads, which reads them as before.
    response = {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour à vous"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
    body = json.dumps(response, ensure_ascii=False).encode(encoding)
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", {"model": "gpt-4o-mini"}, [body]))
    assert parsed.error is None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.source) == (12, 4, "provider")
    assert parsed.response_text == "Bonjour à vous"


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1}', b' \r\n{"a": 1}\n\t ', b'{"a": 1} x', b'{"a": 1}\x0b', b"[1, 2]", b'"a"', b"{", b"<html>", b"\xff{}"],
)
def test_a_response_body_reads_as_json_loads_reads_it(body):
    # common.response_json reads UTF-8 with the decoder itself (its fast path): spaces around the
    # value, more after it and bytes that are not UTF-8 must give what json.loads gives.
    try:
        expected = json.loads(body)
    except ValueError:
        expected = None
    exchange = make_exchange("api.openai.com", "/v1/chat/completions", {}, [body])
    assert common.response_json(exchange) == expected


def test_an_answer_without_usage_is_estimated_from_its_text_even_when_settling():
    # read_text=False (enforce mode's settlement) skips the answer's text only when the provider
    # reported the usage: here the estimate needs it, and equals a whole parse's.
    response = {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour, comment allez-vous ?"}}],
    }
    exchange = make_exchange("api.openai.com", "/v1/chat/completions", CHAT_REQUEST, [json.dumps(response).encode()])
    whole = parse(exchange)
    settled = parse(exchange, read_request(exchange), read_text=False)
    assert whole.usage.source == "estimated" and whole.usage.output_tokens
    assert settled == whole


def test_deepseek_prompt_cache_hit_tokens():
    # DeepSeek's documented usage shape (no DeepSeek chat cassette in the recorded set).
    response = {
        "model": "deepseek-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_cache_hit_tokens": 64,
            "prompt_cache_miss_tokens": 36,
        },
    }
    exchange = make_exchange(
        "api.deepseek.com",
        "/chat/completions",
        {"model": "deepseek-chat"},
        [json.dumps(response).encode()],
    )
    usage = parse(exchange).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (100, 64, 20)


def test_xai_reasoning_outside_completion_tokens():
    # Figures from the recorded xAI (gRPC) cassette test_xai_request_tool_call.xai.yaml:
    # prompt 351, completion 53, reasoning 223, total 627 = 351 + 53 + 223, cached 148.
    response = {
        "model": "grok-4-fast-reasoning",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": 351,
            "completion_tokens": 53,
            "total_tokens": 627,
            "prompt_tokens_details": {"cached_tokens": 148},
            "completion_tokens_details": {"reasoning_tokens": 223},
        },
    }
    exchange = make_exchange(
        "api.x.ai",
        "/v1/chat/completions",
        {"model": "grok-4-fast-reasoning"},
        [json.dumps(response).encode()],
    )
    usage = parse(exchange).usage
    assert usage.input_tokens == 351
    assert usage.cached_input_tokens == 148
    assert usage.output_tokens == 53 + 223
    assert usage.reasoning_tokens == 223


def test_attribution_from_user_and_metadata():
    body = dict(CHAT_REQUEST, user="u-42", metadata={"team": "search", "feature": "autocomplete"})
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", body, [b"{}"]))
    assert parsed.attribution == {"user": "u-42", "team": "search", "feature": "autocomplete"}


def test_request_facts():
    body = {
        "model": "gpt-4o",
        "temperature": 0.7,
        "n": 2,
        "service_tier": "priority",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    }
    parsed = parse(make_exchange("api.openai.com", "/v1/chat/completions", body, [b"{}"]))
    assert (parsed.temperature, parsed.n, parsed.service_tier) == (0.7, 2, "priority")
    assert parsed.has_tools and parsed.has_images
    assert parsed.prompt_text == "user: What is this?"


@pytest.mark.parametrize(
    "value, expected",
    [
        ([{"role": "user", "content": "text only"}], False),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_image", "image_url": "u"}]}],
            True,
        ),
        ({"parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}, True),
        ({"parts": [{"file_data": {"mime_type": "application/pdf", "file_uri": "gs://f"}}]}, False),
        ({"fileData": {"mimeType": "text/plain", "nested": [{"type": "image"}]}}, True),  # inside a blob too
        ([{"role": "user", "content": [{"type": "tool_result", "content": [{"type": "image", "source": {}}]}]}], True),
        ([[["deep", {"x": {"y": [{"type": "image_url"}]}}]]], True),
        ([{"inline_data": "not a blob", "mimeType": "image/png"}], False),  # a mime outside a blob
        ("a string", False),
    ],
)
def test_contains_image_finds_an_image_part_at_any_depth(value, expected):
    assert contains_image(value) is expected


def test_legacy_completions():
    response = {
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"index": 0, "text": " world"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    exchange = make_exchange(
        "api.openai.com",
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Hello"},
        [json.dumps(response).encode()],
    )
    parsed = parse(exchange)
    assert exchange.wire_format == "openai_completions"
    assert parsed.prompt_text == "user: Hello"
    assert parsed.response_text == " world"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (1, 1)


def test_embeddings_usage_and_estimate():
    request = {"model": "text-embedding-3-small", "input": ["tiktoken is great!"]}
    with_usage = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    parsed = parse(make_exchange("api.openai.com", "/v1/embeddings", request, [json.dumps(with_usage).encode()]))
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.source) == (
        6,
        0,
        "provider",
    )
    without = parse(make_exchange("localhost", "/v1/embeddings", request, [b'{"data": []}']))
    # cl100k_base: "user: tiktoken is great!" = "user:" framing + 6 tokens
    assert without.usage.source == "estimated"
    assert without.usage.input_tokens == count_tokens("user: tiktoken is great!", "text-embedding-3-small")
    assert without.usage.output_tokens == 0


def test_openai_batches():
    created = {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": "validating",
        "metadata": {"team": "etl"},
    }
    parsed = parse(
        make_exchange(
            "api.openai.com",
            "/v1/batches",
            {
                "input_file_id": "file-1",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"team": "etl"},
            },
            [json.dumps(created).encode()],
        )
    )
    assert parsed.batch and parsed.usage.source == "none"
    assert parsed.attribution == {"team": "etl"}
    done = dict(
        created,
        status="completed",
        model="gpt-4o-mini",
        usage={
            "input_tokens": 500,
            "output_tokens": 80,
            "input_tokens_details": {"cached_tokens": 100},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    )
    polled = parse(
        make_exchange("api.openai.com", "/v1/batches/batch_1", None, [json.dumps(done).encode()], method="GET")
    )
    assert polled.batch and polled.model == "gpt-4o-mini"
    assert (
        polled.usage.input_tokens,
        polled.usage.cached_input_tokens,
        polled.usage.output_tokens,
    ) == (500, 100, 80)


# --- Responses -------------------------------------------------------------------------------

RESPONSES_REQUEST = {
    "model": "gpt-4.1",
    "instructions": "Be brief.",
    "input": "Say hi",
    "stream": True,
}


def responses_events(*kinds_and_data: tuple[str, dict]) -> list[bytes]:
    return sse(
        *[dict(data, type=kind) for kind, data in kinds_and_data],
        event_names=[kind for kind, _ in kinds_and_data],
    )


def test_responses_stream_cut_before_completion():
    chunks = responses_events(
        (
            "response.created",
            {"response": {"model": "gpt-4.1-2025-04-14", "status": "in_progress"}},
        ),
        ("response.output_text.delta", {"item_id": "m1", "output_index": 0, "delta": "Hi"}),
        ("response.output_text.delta", {"item_id": "m1", "output_index": 0, "delta": " there"}),
    )
    parsed = parse(make_exchange("api.openai.com", "/v1/responses", RESPONSES_REQUEST, chunks))
    assert parsed.complete is False
    assert parsed.response_text == "Hi there"
    assert parsed.system_prompt == "Be brief."
    assert parsed.model == "gpt-4.1-2025-04-14"
    assert parsed.usage.source == "estimated"
    # o200k_base: "Be brief." = 3, "user: Say hi" = 4 ; "Hi there" = 2
    assert parsed.usage.input_tokens == count_tokens("Be brief.", "gpt-4.1") + count_tokens("user: Say hi", "gpt-4.1")
    assert parsed.usage.output_tokens == count_tokens("Hi there", "gpt-4.1")
    assert parsed.first_token_at == 1.5


@pytest.mark.parametrize("terminal", ["response.incomplete", "response.failed"])
def test_responses_incomplete_and_failed_end_the_stream(terminal):
    final = {
        "model": "gpt-4.1",
        "status": terminal.split(".")[1],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    if terminal == "response.failed":
        final["error"] = {"code": "server_error", "message": "The model failed."}
    chunks = responses_events(
        ("response.function_call_arguments.delta", {"item_id": "fc1", "delta": '{"a":'}),
        (terminal, {"response": final}),
    )
    parsed = parse(make_exchange("api.openai.com", "/v1/responses", RESPONSES_REQUEST, chunks))
    assert parsed.complete is True
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.source) == (
        10,
        4,
        "provider",
    )
    if terminal == "response.failed":
        assert parsed.error == "server_error: The model failed."
    else:
        assert parsed.error is None


# --- Anthropic -------------------------------------------------------------------------------

ANTHROPIC_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "You are terse."}],
    "messages": [{"role": "user", "content": "Say hello in French."}],
    "metadata": {"user_id": "user-7"},
    "stream": True,
}


def anthropic_events(*events: dict) -> list[bytes]:
    return sse(*events, event_names=[e["type"] for e in events])


def test_anthropic_one_hour_cache_writes():
    response = {
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Bonjour"}],
        "usage": {
            "input_tokens": 20,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 600,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 500},
            "output_tokens": 5,
        },
    }
    body = dict(ANTHROPIC_REQUEST, stream=False)
    parsed = parse(make_exchange("api.anthropic.com", "/v1/messages", body, [json.dumps(response).encode()]))
    usage = parsed.usage
    assert usage.input_tokens == 20 + 1000 + 600
    assert (usage.cached_input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (
        1000,
        600,
        500,
    )
    assert parsed.system_prompt == "You are terse."
    assert parsed.attribution == {"user": "user-7"}


def test_anthropic_cut_stream_keeps_reported_input_and_estimates_output():
    chunks = anthropic_events(
        {
            "type": "message_start",
            "message": {
                "model": "claude-sonnet-4-5-20250929",
                "usage": {
                    "input_tokens": 50,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Bonjour le monde"},
        },
    )
    parsed = parse(make_exchange("api.anthropic.com", "/v1/messages", ANTHROPIC_REQUEST, chunks))
    assert parsed.complete is False
    assert parsed.usage.source == "estimated"
    assert parsed.usage.input_tokens == 50  # reported by message_start, kept
    assert parsed.usage.output_tokens == 3  # cl100k_base: "Bonjour le monde" = 3 tokens
    assert parsed.first_token_at == 2.5


def test_anthropic_stream_fields_are_revised_not_summed():
    chunks = anthropic_events(
        {
            "type": "message_start",
            "message": {
                "model": "claude-x",
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 7}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 12, "output_tokens": 9},
        },
        {"type": "message_stop"},
    )
    parsed = parse(make_exchange("api.anthropic.com", "/v1/messages", ANTHROPIC_REQUEST, chunks))
    assert parsed.complete
    assert parsed.usage.input_tokens == 12 + 5 + 0  # input revised, cache read kept from the start
    assert parsed.usage.output_tokens == 9
    assert parsed.first_token_at == 1.5  # the thinking delta carried output


def test_anthropic_error_event_in_stream():
    chunks = anthropic_events(
        {
            "type": "message_start",
            "message": {"model": "claude-x", "usage": {"input_tokens": 10, "output_tokens": 1}},
        },
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    parsed = parse(make_exchange("api.anthropic.com", "/v1/messages", ANTHROPIC_REQUEST, chunks))
    assert parsed.error == "overloaded_error: Overloaded"
    assert parsed.complete is False


def test_anthropic_batches():
    create = {
        "requests": [
            {
                "custom_id": "a",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            }
        ]
    }
    parsed = parse(
        make_exchange(
            "api.anthropic.com",
            "/v1/messages/batches",
            create,
            [b'{"id": "msgbatch_1", "type": "message_batch"}'],
        )
    )
    assert parsed.batch and parsed.model_requested == "claude-haiku-4-5"
    assert parsed.usage.source == "none"
    lines = [
        {
            "custom_id": "a",
            "result": {
                "type": "succeeded",
                "message": {
                    "model": "claude-haiku-4-5",
                    "usage": {"input_tokens": 10, "cache_read_input_tokens": 2, "output_tokens": 3},
                },
            },
        },
        {
            "custom_id": "b",
            "result": {
                "type": "succeeded",
                "message": {
                    "model": "claude-haiku-4-5",
                    "usage": {"input_tokens": 20, "output_tokens": 4},
                },
            },
        },
        {"custom_id": "c", "result": {"type": "errored", "error": {"type": "invalid_request"}}},
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    results = parse(
        make_exchange(
            "api.anthropic.com",
            "/v1/messages/batches/msgbatch_1/results",
            None,
            [body],
            method="GET",
            headers={"content-type": "application/binary"},
        )
    )
    assert results.batch
    assert (results.usage.input_tokens, results.usage.cached_input_tokens) == (10 + 2 + 20, 2)
    assert results.usage.output_tokens == 3 + 4


# --- Gemini ----------------------------------------------------------------------------------

GEMINI_REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Say hello in French."}]}],
    "systemInstruction": {"parts": [{"text": "You are terse."}]},
    "generationConfig": {"temperature": 0.5, "candidateCount": 1},
}


def gemini_chunk(parts: list[dict], usage: dict, finish: str | None = None) -> dict:
    candidate = {"content": {"role": "model", "parts": parts}}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"}


def test_gemini_json_array_stream():
    elements = [
        gemini_chunk(
            [{"text": "thinking", "thought": True}],
            {"promptTokenCount": 8, "thoughtsTokenCount": 5},
        ),
        gemini_chunk(
            [{"text": "Bonjour"}],
            {"promptTokenCount": 8, "candidatesTokenCount": 1, "thoughtsTokenCount": 5},
        ),
        gemini_chunk(
            [{"text": " le monde"}],
            {"promptTokenCount": 8, "candidatesTokenCount": 3, "thoughtsTokenCount": 5},
            finish="STOP",
        ),
    ]
    body = ("[" + ",\n".join(json.dumps(e) for e in elements) + "]").encode()
    chunks = [body[i : i + 37] for i in range(0, len(body), 37)]
    exchange = make_exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        GEMINI_REQUEST,
        chunks,
        headers=JSON,
    )
    parsed = parse(exchange)
    assert parsed.stream and parsed.complete
    assert parsed.response_text == "Bonjour le monde"
    # last usageMetadata: prompt 8, candidates 3, thoughts 5
    assert (
        parsed.usage.input_tokens,
        parsed.usage.output_tokens,
        parsed.usage.reasoning_tokens,
    ) == (8, 3 + 5, 5)
    assert parsed.model_requested == "gemini-2.5-flash"
    assert parsed.system_prompt == "You are terse."
    assert (parsed.temperature, parsed.n) == (0.5, 1)
    # the first element (a thought) ended in the chunk holding its closing brace
    closing_brace = len(json.dumps(elements[0]))  # body[0] is "[", the element follows
    assert body[closing_brace : closing_brace + 1] == b"}"
    assert parsed.first_token_at == exchange.response_chunks[closing_brace // 37][0]


def test_gemini_cut_array_stream_is_incomplete_and_estimated():
    first = gemini_chunk([{"text": "Bonjour"}], {})
    body = ("[" + json.dumps(first) + ",\n" + json.dumps(first)[:20]).encode()
    exchange = make_exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        GEMINI_REQUEST,
        [body[:30], body[30:]],
        headers=JSON,
    )
    parsed = parse(exchange)
    assert parsed.complete is False
    assert parsed.response_text == "Bonjour"
    assert parsed.usage.source == "estimated"
    assert parsed.usage.output_tokens == count_tokens("Bonjour", "gemini-2.5-flash")


def test_gemini_embed_content_is_estimated():
    request = {"content": {"parts": [{"text": "tiktoken is great!"}]}}
    exchange = make_exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/text-embedding-004:embedContent",
        request,
        [b'{"embedding": {"values": [0.1, 0.2]}}'],
    )
    parsed = parse(exchange)
    assert parsed.model == "text-embedding-004"
    assert parsed.usage.source == "estimated"
    assert parsed.usage.input_tokens == count_tokens("user: tiktoken is great!", "text-embedding-004")
    assert parsed.usage.output_tokens == 0


def test_gemini_error_body():
    error = [{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}]
    exchange = make_exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        GEMINI_REQUEST,
        [json.dumps(error).encode()],
        status=429,
        headers=JSON,
    )
    parsed = parse(exchange)
    assert parsed.error == "429: Resource exhausted."
    assert parsed.usage.source == "none"
    assert parsed.stream is False


def test_gemini_batch_generate_content():
    request = {"batch": {"displayName": "b", "inputConfig": {"fileName": "files/x"}}}
    exchange = make_exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
        request,
        [b'{"name": "batches/1"}'],
    )
    parsed = parse(exchange)
    assert parsed.batch is True
    assert parsed.usage.source == "none"


def test_error_status_on_an_event_stream_without_an_error_event():
    chunks = [b"data: upstream exploded\n\n", b""]
    exchange = make_exchange("api.openai.com", "/v1/chat/completions", CHAT_REQUEST, chunks, status=500)
    parsed = parse(exchange)
    assert parsed.error == "data: upstream exploded"
    assert parsed.usage.source == "none"


def test_a_new_parsed_is_a_parsed_with_its_defaults_and_shares_no_mutable_field():
    # The parsers start from new_parsed(), a copy of a blank Parsed: equal to Parsed(), and every
    # field with a default_factory (FRESH_FIELDS) a new object, not the blank one's or another's.
    made_anew = tuple(f.name for f in dataclasses.fields(Parsed) if f.default_factory is not dataclasses.MISSING)
    assert FRESH_FIELDS == made_anew
    first, second = new_parsed(), new_parsed()
    assert first == Parsed() and type(first) is Parsed and type(first.usage) is Usage
    for name in FRESH_FIELDS:
        assert getattr(first, name) is not getattr(second, name), name
    first.usage.input_tokens = 3
    first.attribution["team"] = "t"
    first.finish_reasons.append("stop")
    first.other_models.append(("m", Usage()))
    assert new_parsed() == Parsed() and second == Parsed()
