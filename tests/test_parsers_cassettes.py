"""The parsers on real recorded exchanges (pydantic-ai's VCR cassettes, see tests/cassettes.py).

Every cassette is parsed; the number of exchanges parsed per wire format is pinned so that a
change in detection or parsing that drops some shows up. For a selection, the expected token
figures are copied from the cassette's own usage block, with the mapping to our convention
written out.
"""

import collections
import dataclasses

import pytest

from analysis.parsers import parse, read_request
from analysis.parsers.hashing import prompt_hash
from tests import cassettes
from tests.cassettes import cassette_files, cassette_id, recorded_exchanges

# Exchanges recognised by analysis.parsers.detect and parsed, per wire format, over all 219 cassettes
# (observed when this test was written; xAI cassettes are gRPC, and file-store, token-count and
# Bedrock calls are not LLM-call endpoints we parse).
EXPECTED_PARSED_PER_FORMAT = {
    "gemini": 119,
    "openai_responses": 81,
    "openai_chat": 64,
    "anthropic_messages": 21,
}
EXPECTED_CASSETTE_COUNT = 219


def test_all_cassettes_are_present():
    cassettes.require_cassettes()
    assert len(cassette_files()) == EXPECTED_CASSETTE_COUNT


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_an_answer_read_with_the_request_side_read_before_gives_the_same_facts(path):
    """Enforce mode reads a request before sending it and only its answer when it ends
    (analysis.parsers.parse with request_side): the facts equal a whole parse, and the request
    side is left as it was, so reading an answer into it twice gives the same."""
    for recorded in recorded_exchanges(path):
        exchange = recorded.exchange
        side = read_request(exchange)
        if side is None:
            continue
        before = repr(side)
        where = f"{cassette_id(path)} #{recorded.position}"
        whole = parse(exchange)
        assert parse(exchange, side) == whole, where
        assert parse(exchange, side) == whole, where
        # Settling a call (read_text=False) may leave the answer's text unread, nothing else.
        without_text = parse(exchange, side, read_text=False)
        unread = {"response_text": whole.response_text, "finish_reasons": whole.finish_reasons}
        assert dataclasses.replace(without_text, **unread) == whole, where
        assert repr(side) == before, where


# What analysis.enforce.request_record reads of a request's facts before its answer.
RECORD_FACTS = (
    "model_requested",
    "stream",
    "system_prompt",
    "prompt_text",
    "canonical_request",
    "temperature",
    "n",
    "has_tools",
    "has_images",
    "service_tier",
    "batch",
    "attribution",
)


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_the_request_side_says_what_a_parse_without_an_answer_says(path):
    """Enforce mode decides a request from `read_request`'s facts where the parser reads the
    request apart (analysis.recording.accounting.parse_request_side): they equal those of the
    whole parse of the request with no answer yet, which the decision read before."""
    for recorded in recorded_exchanges(path):
        side = read_request(recorded.exchange)
        if side is None:
            continue
        unanswered = dataclasses.replace(
            recorded.exchange, status=None, response_headers={}, response_chunks=[], duration=0.0
        )
        whole = parse(unanswered)
        where = f"{cassette_id(path)} #{recorded.position}"
        assert {f: getattr(side, f) for f in RECORD_FACTS} == {f: getattr(whole, f) for f in RECORD_FACTS}, where


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_every_recorded_exchange_parses(path):
    for recorded in recorded_exchanges(path):
        exchange = recorded.exchange
        parsed = parse(exchange)
        where = f"{cassette_id(path)} #{recorded.position}"
        usage = parsed.usage
        assert parsed.model, where
        assert parsed.canonical_request is not None, where
        assert len(prompt_hash(parsed.canonical_request)) == 32
        if usage.source != "none":
            assert usage.input_tokens is not None and usage.output_tokens is not None, where
            assert usage.cached_input_tokens + usage.cache_write_tokens <= usage.input_tokens
            assert usage.cache_write_1h_tokens <= usage.cache_write_tokens
            assert usage.reasoning_tokens <= usage.output_tokens, where
        if exchange.status and exchange.status >= 400:
            assert parsed.error, where
        if not parsed.stream:
            assert parsed.complete, where
            assert parsed.first_token_at is None, where
        elif parsed.response_text:
            assert parsed.first_token_at is not None, where
        if parsed.error is None and parsed.complete and exchange.status == 200:
            assert usage.source == "provider", where
            assert parsed.finish_reasons and all(parsed.finish_reasons), where


def test_parsed_count_per_format_is_pinned():
    cassettes.require_cassettes()
    parsed_per_format = collections.Counter()
    for path in cassette_files():
        for recorded in recorded_exchanges(path):
            parse(recorded.exchange)
            parsed_per_format[recorded.exchange.wire_format] += 1
    assert dict(parsed_per_format) == EXPECTED_PARSED_PER_FORMAT


def usage_of(relative: str, position: int = 0):
    parsed = parse(cassettes.exchange(relative, position))
    assert parsed.usage.source == "provider"
    return parsed, parsed.usage


# --- OpenAI Chat Completions ---------------------------------------------------------------


def test_openai_chat_json_reasoning_tokens():
    # usage: prompt_tokens 30, completion_tokens 212 (reasoning_tokens 192), cached_tokens 0
    parsed, usage = usage_of("test_openai/test_system_prompt_role_o1_mini.yaml")
    assert (usage.input_tokens, usage.output_tokens) == (30, 212)
    assert usage.reasoning_tokens == 192  # a part of the 212, not added
    assert usage.cached_input_tokens == 0
    assert parsed.model_requested == "o1-mini"
    assert parsed.model == "o1-mini-2024-09-12"
    assert parsed.service_tier == "default"
    assert parsed.response_text == "The capital of France is **Paris**."
    assert parsed.stream is False and parsed.complete is True


def test_openai_chat_json_cached_and_cache_write_tokens():
    name = "test_openai_prompt_cache/test_openai_chat_prompt_cache_e2e.yaml"
    # first call: prompt_tokens 4020, cache_write_tokens 4012, cached_tokens 0, completion 4
    _, first = usage_of(name, 0)
    assert (first.input_tokens, first.cached_input_tokens, first.cache_write_tokens) == (
        4020,
        0,
        4012,
    )
    # second call: prompt_tokens 4020 of which cached_tokens 4012 (already inside the 4020)
    _, second = usage_of(name, 1)
    assert (second.input_tokens, second.cached_input_tokens, second.output_tokens) == (
        4020,
        4012,
        4,
    )


def test_openai_chat_stream_with_include_usage():
    relative = "test_openai/test_openai_moderation_stream.yaml"
    exchange = cassettes.exchange(relative)
    parsed = parse(exchange)
    # final usage chunk: prompt_tokens 13, completion_tokens 11, reasoning 0, cached 0
    assert parsed.usage.source == "provider"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (13, 11)
    assert parsed.stream and parsed.complete
    assert parsed.response_text == "Paris."
    assert parsed.model == "gpt-5-2025-08-07"
    # first_token_at: the chunk in which the "Paris" event ended (the role-only first chunk
    # carries no output), found here from the raw bytes.
    body = exchange.response_body
    event_end = body.index(b"\n\n", body.index(b'"content":"Paris"')) + 1
    assert parsed.first_token_at == exchange.response_chunks[_chunk_holding(exchange, event_end)][0]


def _chunk_holding(exchange, offset: int) -> int:
    start = 0
    for index, (_, chunk) in enumerate(exchange.response_chunks):
        if start <= offset < start + len(chunk):
            return index
        start += len(chunk)
    raise AssertionError("offset beyond the body")


def test_openai_chat_stream_tool_call_arguments_are_output_text():
    parsed = parse(cassettes.exchange("test_openai/test_run_stream_sync_streams_real_model.yaml", 0))
    assert parsed.response_text == 'get_capital({"country":"UK"})'
    assert parsed.has_tools is True
    # usage chunk: prompt_tokens 53, completion_tokens 15
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (53, 15)


def test_openrouter_cost_and_reasoning():
    parsed, usage = usage_of("test_openrouter/test_openrouter_usage.yaml", 1)
    # usage: prompt_tokens 17, completion_tokens 2177 (reasoning_tokens 960), cost 0.00435825
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (17, 2177, 960)
    assert parsed.provider_cost_usd == pytest.approx(0.00435825)
    assert parsed.model == "openai/gpt-5-mini"


def test_openrouter_stream_cost_and_cached_tokens():
    parsed, usage = usage_of("test_openrouter/test_openrouter_stream_with_native_options.yaml")
    # usage chunk: prompt_tokens 687 (cached_tokens 679), completion_tokens 187 (reasoning 118)
    assert (usage.input_tokens, usage.cached_input_tokens) == (687, 679)
    assert (usage.output_tokens, usage.reasoning_tokens) == (187, 118)
    assert parsed.provider_cost_usd == pytest.approx(0.00333825)
    assert parsed.stream and parsed.complete


def test_openrouter_error_inside_a_200_stream():
    parsed = parse(cassettes.exchange("test_openrouter/test_openrouter_stream_error.yaml"))
    assert parsed.error == "400: Token limit reached"
    # usage: completion_tokens 10 but reasoning_tokens 11: the part is clamped to its whole
    assert (parsed.usage.output_tokens, parsed.usage.reasoning_tokens) == (10, 10)


def test_groq_stream_usage_in_x_groq():
    parsed, usage = usage_of("test_groq/test_tool_use_failed_error_streaming_with_text.yaml", 1)
    # x_groq.usage: prompt_tokens 343, completion_tokens 180 (reasoning_tokens 153)
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (343, 180, 153)
    assert parsed.response_text == 'final_result({"response":"no"})'
    assert parsed.stream and parsed.complete


def test_groq_error_answer():
    parsed = parse(cassettes.exchange("test_groq/test_tool_use_failed_error.yaml", 0))
    assert parsed.error.startswith("invalid_request_error: Tool call validation failed")
    assert parsed.usage.source == "none"


def test_mistral_cached_tokens():
    parsed, usage = usage_of("test_mistral/test_mistral_history_uses_prompt_cache.yaml", 1)
    # usage: prompt_tokens 268 (cached_tokens 224), completion_tokens 5
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (268, 224, 5)
    assert parsed.model == "mistral-large-latest"


# --- OpenAI Responses ----------------------------------------------------------------------


def test_responses_json_cached_and_reasoning_tokens():
    relative = "test_openai_responses/test_openai_responses_model_web_search_tool.yaml"
    parsed, usage = usage_of(relative, 0)
    # usage: input_tokens 9299 (cached_tokens 8448), output_tokens 577 (reasoning_tokens 512)
    assert (usage.input_tokens, usage.cached_input_tokens) == (9299, 8448)
    assert (usage.output_tokens, usage.reasoning_tokens) == (577, 512)
    assert parsed.model == "gpt-5-2025-08-07"


def test_responses_stream_usage_from_response_completed():
    relative = "test_openai_responses/test_openai_responses_model_web_search_tool_stream.yaml"
    parsed, usage = usage_of(relative, 0)
    # response.completed usage: input 9463 (cached 8320), output 582 (reasoning 512)
    assert (usage.input_tokens, usage.cached_input_tokens) == (9463, 8320)
    assert (usage.output_tokens, usage.reasoning_tokens) == (582, 512)
    assert parsed.stream and parsed.complete and parsed.first_token_at is not None


def test_responses_stream_service_tier():
    relative = "test_openai_responses/test_openai_responses_streaming_usage.yaml"
    parsed, usage = usage_of(relative)
    # usage: input_tokens 53, output_tokens 469 (reasoning_tokens 448)
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (53, 469, 448)
    assert parsed.service_tier == "flex"


def test_responses_instructions_are_the_system_prompt():
    relative = "test_openai_responses/test_openai_responses_phase_live.yaml"
    parsed = parse(cassettes.exchange(relative, 0))
    assert parsed.system_prompt.startswith("Briefly narrate what you are about to do")
    assert parsed.prompt_text.startswith("user: ")
    assert "Briefly narrate" not in parsed.prompt_text


def test_responses_system_role_input_item_is_the_system_prompt():
    relative = "test_anthropic/test_anthropic_model_thinking_part_from_other_model.yaml"
    exchange = cassettes.exchange(relative, 0)
    assert exchange.wire_format == "openai_responses"
    parsed = parse(exchange)
    assert parsed.system_prompt
    assert not parsed.prompt_text.startswith("system:")


def test_deepseek_responses_cached_and_reasoning_tokens():
    parsed, usage = usage_of("test_deepseek_responses/test_deepseek_responses[function_tool].yaml")
    # usage: input_tokens 366 (cached_tokens 256), output_tokens 63 (reasoning_tokens 18)
    assert (usage.input_tokens, usage.cached_input_tokens) == (366, 256)
    assert (usage.output_tokens, usage.reasoning_tokens) == (63, 18)
    assert parsed.response_text == 'get_temperature({"city": "Tokyo"})'


def test_responses_error_status():
    relative = "test_openai_responses/test_openai_responses_thinking_with_modified_history.yaml"
    parsed = parse(cassettes.exchange(relative, 1))
    assert parsed.error.startswith("invalid_request_error: Item 'rs_")
    assert parsed.usage.source == "none"


# --- Anthropic Messages --------------------------------------------------------------------


def test_anthropic_json_cache_read_and_creation():
    parsed, usage = usage_of("test_anthropic/test_anthropic_cache_real_api.yaml", 1)
    # usage: input_tokens 3, cache_read_input_tokens 1111, cache_creation_input_tokens 418
    # (ephemeral_5m 418, ephemeral_1h 0), output_tokens 33
    assert usage.input_tokens == 3 + 1111 + 418
    assert usage.cached_input_tokens == 1111
    assert usage.cache_write_tokens == 418
    assert usage.cache_write_1h_tokens == 0
    assert usage.output_tokens == 33
    assert parsed.service_tier == "standard"


def test_anthropic_stream_takes_the_last_value_of_each_field():
    parsed, usage = usage_of("test_anthropic/test_anthropic_advisor_tool_stream.yaml")
    # message_start usage: input_tokens 1128, output_tokens 2
    # message_delta usage: input_tokens 2411, output_tokens 145, thinking_tokens 47
    assert usage.input_tokens == 2411 + 0 + 0
    assert usage.output_tokens == 145
    assert usage.reasoning_tokens == 47
    assert parsed.stream and parsed.complete
    assert parsed.model == "claude-sonnet-5"


def test_anthropic_stream_server_tool_usage_grows():
    relative = "test_anthropic/test_anthropic_model_web_search_tool_stream.yaml"
    parsed, usage = usage_of(relative)
    # message_start: input 2068, output 8 -> message_delta: input 22397, output 637
    assert (usage.input_tokens, usage.output_tokens) == (22397, 637)
    assert parsed.response_text.startswith('web_search({"query": "San Francisco weather')


# --- Gemini ----------------------------------------------------------------------------------


GOOGLE_CACHE_CASSETTE = "tests/models/google/cassettes/test_cache/test_google_model_cached_content.yaml"


def test_gemini_cached_content_and_thoughts():
    parsed, usage = usage_of(GOOGLE_CACHE_CASSETTE, 1)
    # usageMetadata: promptTokenCount 3520 (cachedContentTokenCount 3512 included),
    # candidatesTokenCount 2, thoughtsTokenCount 42
    assert (usage.input_tokens, usage.cached_input_tokens) == (3520, 3512)
    assert usage.output_tokens == 2 + 42
    assert usage.reasoning_tokens == 42
    assert parsed.model == "gemini-2.5-flash"


def test_gemini_tool_use_prompt_tokens_are_input():
    parsed, usage = usage_of("test_google/test_google_model_web_search_tool.yaml", 0)
    # usageMetadata: promptTokenCount 17, toolUsePromptTokenCount 119, candidatesTokenCount 201,
    # thoughtsTokenCount 213, totalTokenCount 550 (= 17 + 119 + 201 + 213)
    assert usage.input_tokens == 17 + 119
    assert usage.output_tokens == 201 + 213
    assert usage.input_tokens + usage.output_tokens == 550


def test_gemini_sse_stream_vertex_flex():
    relative = "test_google/test_google_vertex_service_tier_flex_stream.yaml"
    parsed, usage = usage_of(relative)
    # usageMetadata: promptTokenCount 5, candidatesTokenCount 1, thoughtsTokenCount 100,
    # trafficType ON_DEMAND_FLEX
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (5, 1 + 100, 100)
    assert parsed.service_tier == "flex"
    assert parsed.stream and parsed.complete
    assert parsed.model_requested == "gemini-3-flash-preview"
    assert parsed.response_text == "OK"


def test_gemini_stream_takes_the_last_cumulative_usage():
    relative = "test_google/test_google_stream_usage_is_live_mid_stream.yaml"
    exchange = cassettes.exchange(relative)
    parsed = parse(exchange)
    assert parsed.stream and parsed.usage.source == "provider"
    last_prompt = _last_number(exchange.response_body, b'"promptTokenCount": ')
    last_candidates = _last_number(exchange.response_body, b'"candidatesTokenCount": ')
    assert parsed.usage.input_tokens == last_prompt
    assert parsed.usage.output_tokens >= last_candidates


def _last_number(body: bytes, key: bytes) -> int:
    start = body.rindex(key) + len(key)
    end = start
    while body[end : end + 1].isdigit():
        end += 1
    return int(body[start:end])


def test_gemini_model_from_url_and_system_instruction():
    parsed = parse(cassettes.exchange("test_google/test_google_model_instructions.yaml"))
    assert parsed.model_requested == "gemini-2.0-flash"
    assert parsed.system_prompt
    assert parsed.prompt_text.startswith("user: ")


def test_finish_reasons_as_each_provider_says_them():
    """The reasons the recorded answers stopped, by wire format (every value seen in the cassettes)."""
    seen = collections.defaultdict(set)
    for path in cassette_files():
        for recorded in recorded_exchanges(path):
            seen[recorded.exchange.wire_format].update(parse(recorded.exchange).finish_reasons)
    assert dict(seen) == {
        "anthropic_messages": {"end_turn"},
        "gemini": {"STOP", "MAX_TOKENS", "SAFETY", "MODEL_ARMOR"},
        "openai_chat": {"stop", "length", "tool_calls"},
        "openai_responses": {"completed"},
    }
