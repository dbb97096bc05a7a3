"""Usage fields the parsers used to miss (issue 15), each on a real recorded shape where the
cassettes have one (tests/cassettes.py), else on a fixture built from the provider's
documentation, cited beside it."""

import json

import pytest

from analysis.parsers import parse
from analysis.parsers.detect import detect
from analysis.pricing.table import PriceTable
from tests import cassettes
from tests.test_parsers_edge_cases import JSON, make_exchange


def usage_of(relative: str, position: int = 0):
    parsed = parse(cassettes.exchange(relative, position))
    assert parsed.usage.source == "provider"
    return parsed, parsed.usage


# --- OpenAI Responses: cache writes (OpenRouter reports them where OpenAI reports reads) ------


def test_responses_cache_write_tokens_are_read():
    parsed, usage = usage_of("test_openai_prompt_cache/test_openai_responses_prompt_cache_e2e.yaml", 0)
    # usage: input_tokens 4020 (input_tokens_details: cache_write_tokens 4012, cached_tokens 0)
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cached_input_tokens) == (4020, 4012, 0)
    parsed, usage = usage_of("test_openai_prompt_cache/test_openai_responses_prompt_cache_e2e.yaml", 1)
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cached_input_tokens) == (4020, 0, 4012)


# --- OpenRouter: the Responses endpoint's cost, and BYOK -----------------------------------------


def test_openrouter_responses_cost_is_the_providers():
    relative = "test_openai_prompt_cache/test_openrouter_responses_prompt_cache_e2e.yaml"
    parsed, usage = usage_of(relative, 0)
    # usage: cost 0.025265, is_byok false, cost_details.upstream_inference_cost 0.025265
    assert parsed.provider_cost_usd == pytest.approx(0.025265)
    assert (usage.input_tokens, usage.cache_write_tokens) == (4020, 4012)
    parsed, _ = usage_of(relative, 1)
    assert parsed.provider_cost_usd == pytest.approx(0.002196)


# From OpenRouter's "Usage Accounting" page (https://openrouter.ai/docs/use-cases/usage-accounting):
# `cost` is what OpenRouter charged the account, `cost_details.upstream_inference_cost` what the
# upstream provider charged; with BYOK (`is_byok: true`) the provider bills the user's own key and
# OpenRouter's charge is its fee alone (its example: cost 0.95, upstream_inference_cost 19).
BYOK_USAGE = {
    "prompt_tokens": 194,
    "completion_tokens": 2,
    "total_tokens": 196,
    "cost": 0,
    "is_byok": True,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "cost_details": {
        "upstream_inference_cost": 0.000497,
        "upstream_inference_prompt_cost": 0.000485,
        "upstream_inference_completions_cost": 0.000012,
    },
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def openrouter_chat(usage: dict):
    response = {
        "object": "chat.completion",
        "model": "anthropic/claude-3.5-haiku",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": usage,
    }
    request = {"model": "anthropic/claude-3.5-haiku", "messages": [{"role": "user", "content": "Hi"}]}
    exchange = make_exchange("openrouter.ai", "/api/v1/chat/completions", request, [json.dumps(response).encode()])
    return parse(exchange)


def test_openrouter_byok_cost_is_what_the_users_key_was_billed_plus_the_fee():
    assert openrouter_chat(BYOK_USAGE).provider_cost_usd == pytest.approx(0.000497)
    with_fee = dict(BYOK_USAGE, cost=0.95, cost_details={"upstream_inference_cost": 19})
    assert openrouter_chat(with_fee).provider_cost_usd == pytest.approx(19.95)
    # Not BYOK: upstream_inference_cost repeats the charge; it is not added.
    paid = dict(BYOK_USAGE, cost=0.000497, is_byok=False)
    assert openrouter_chat(paid).provider_cost_usd == pytest.approx(0.000497)


def test_openrouter_responses_byok():
    response = {
        "object": "response",
        "model": "openai/gpt-4o-mini",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 2,
            "cost": 0,
            "is_byok": True,
            "cost_details": {"upstream_inference_cost": 0.0000027},
        },
    }
    request = {"model": "openai/gpt-4o-mini", "input": "Hi"}
    parsed = parse(make_exchange("openrouter.ai", "/api/v1/responses", request, [json.dumps(response).encode()]))
    assert parsed.provider_cost_usd == pytest.approx(0.0000027)


# --- Mistral's cached tokens ----------------------------------------------------------------------


def test_mistral_num_cached_tokens():
    # The cassette's Mistral answers put the cache hits in prompt_tokens_details.cached_tokens
    # (tests/test_parsers_cassettes.py::test_mistral_cached_tokens); other Mistral answers report
    # them as usage.num_cached_tokens (seen in real usage blocks, issue 15), read the same way.
    response = {
        "object": "chat.completion",
        "model": "mistral-large-latest",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 268, "completion_tokens": 5, "total_tokens": 273, "num_cached_tokens": 224},
    }
    request = {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "Hi"}]}
    parsed = parse(make_exchange("api.mistral.ai", "/v1/chat/completions", request, [json.dumps(response).encode()]))
    assert (parsed.usage.input_tokens, parsed.usage.cached_input_tokens) == (268, 224)


# --- OpenAI: POST /v1/responses/compact -----------------------------------------------------------


def test_responses_compact_is_recognised_and_its_usage_read():
    # OpenAI API reference, "Compact a response" (POST /v1/responses/compact): the answer is a
    # `response.compaction` object {id, object, created_at, output, usage} with the Responses
    # usage block, and no model (the request names it).
    target = detect("api.openai.com", "/v1/responses/compact", {}, "POST")
    assert (target.provider, target.endpoint, target.wire_format) == ("openai", "responses_compact", "openai_responses")
    response = {
        "id": "cmp_001",
        "object": "response.compaction",
        "created_at": 1764000000,
        "output": [{"type": "compaction", "id": "cmp_item_1", "encrypted_content": "gAAAA..."}],
        "usage": {
            "input_tokens": 139,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 438,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 577,
        },
    }
    request = {"model": "gpt-5.1-codex-max", "input": [{"role": "user", "content": "Long conversation ..."}]}
    exchange = make_exchange("api.openai.com", "/v1/responses/compact", request, [json.dumps(response).encode()])
    exchange.response_headers = JSON
    parsed = parse(exchange)
    assert parsed.model == "gpt-5.1-codex-max"
    usage = parsed.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.source) == (139, 438, 64, "provider")


# --- Gemini: reasoning on the flex / batch / priority tiers --------------------------------------


def test_gemini_flex_reasoning_pays_the_flex_output_rate():
    relative = "test_google/test_google_vertex_service_tier_flex_stream.yaml"
    exchange = cassettes.exchange(relative)
    parsed = parse(exchange)
    # usageMetadata: promptTokenCount 5, candidatesTokenCount 1, thoughtsTokenCount 100, flex
    table = PriceTable.load()
    price = table.resolve(parsed.model, exchange.provider)
    flex, standard = price.rates[("flex", 0)], price.rates[("standard", 0)]
    assert "reasoning_output" not in flex and standard["reasoning_output"] != flex["output"]
    cost = table.cost(
        provider=exchange.provider, model=parsed.model, usage=parsed.usage, service_tier=parsed.service_tier
    )
    expected = (5 * flex["input"] + (1 + 100) * flex["output"]) / 1e6
    assert cost.cost_usd == pytest.approx(expected)
    # The standard tier still pays its own reasoning rate.
    standard_cost = table.cost(provider=exchange.provider, model=parsed.model, usage=parsed.usage)
    assert standard_cost.cost_usd == pytest.approx(
        (5 * standard["input"] + 1 * standard["output"] + 100 * standard["reasoning_output"]) / 1e6
    )


# --- Audio and image tokens at their own rates ---------------------------------------------------


def cost_of(exchange, parsed, table):
    return table.cost(
        provider=exchange.provider,
        model=parsed.model,
        model_requested=parsed.model_requested,
        usage=parsed.usage,
        service_tier=parsed.service_tier,
    )


def test_gemini_audio_input_pays_the_audio_rate():
    exchange = cassettes.exchange("test_google/test_google_url_input[AudioUrl].yaml")
    parsed = parse(exchange)
    # usageMetadata: promptTokenCount 159 (promptTokensDetails TEXT 9, AUDIO 150), candidates 22
    usage = parsed.usage
    assert (usage.input_tokens, usage.audio_input_tokens, usage.output_tokens) == (159, 150, 22)
    table = PriceTable.load()
    rates = table.resolve(parsed.model, exchange.provider).effective_rates()
    assert rates["input_audio"] > rates["input"]  # the table's own audio rate, not the text one
    expected = (9 * rates["input"] + 150 * rates["input_audio"] + 22 * rates["output"]) / 1e6
    assert cost_of(exchange, parsed, table).cost_usd == pytest.approx(expected)


def test_openai_audio_tokens_pay_the_audio_rates():
    # OpenAI API reference, the chat completion object: usage.prompt_tokens_details.audio_tokens
    # and usage.completion_tokens_details.audio_tokens are the audio parts of prompt_tokens and
    # completion_tokens (the audio-generation guide's gpt-4o-audio-preview answer).
    response = {
        "object": "chat.completion",
        "model": "gpt-4o-audio-preview-2025-06-03",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 117,
            "completion_tokens": 85,
            "total_tokens": 202,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 65},
        },
    }
    request = {"model": "gpt-4o-audio-preview", "modalities": ["text", "audio"], "messages": []}
    exchange = make_exchange("api.openai.com", "/v1/chat/completions", request, [json.dumps(response).encode()])
    parsed = parse(exchange)
    assert (parsed.usage.audio_input_tokens, parsed.usage.audio_output_tokens) == (100, 65)
    table = PriceTable.load()
    rates = table.resolve(parsed.model, "openai").effective_rates()
    assert (rates["input_audio"], rates["output_audio"]) == (40.0, 80.0)
    expected = (17 * rates["input"] + 100 * 40.0 + 20 * rates["output"] + 65 * 80.0) / 1e6
    assert cost_of(exchange, parsed, table).cost_usd == pytest.approx(expected)


# --- Gemini models LiteLLM files only under vertex_ai/ ------------------------------------------


@pytest.mark.parametrize("model", ["gemini-2.0-flash", "gemini-3-pro-preview"])
def test_gemini_models_listed_only_under_vertex_ai_are_priced(model):
    price = PriceTable.load().resolve(model, "gemini")
    assert price is not None and price.source == f"litellm:vertex_ai/{model}"


def test_a_recorded_gemini_2_0_flash_call_is_priced():
    relative = "test_google/test_google_dict_with_additional_properties_native_output_gemini_2_0.yaml"
    exchange = cassettes.exchange(relative)
    parsed = parse(exchange)
    cost = cost_of(exchange, parsed, PriceTable.load())
    assert (parsed.model, cost.cost_source, cost.priced_as) == (
        "gemini-2.0-flash",
        "computed",
        "gemini/gemini-2.0-flash",
    )


# --- Anthropic usage.iterations -------------------------------------------------------------------


def test_anthropic_advisor_iterations_are_priced_at_the_advisors_model():
    exchange = cassettes.exchange("test_anthropic/test_anthropic_advisor_tool_stream.yaml")
    parsed = parse(exchange)
    # message_delta usage: input_tokens 2411, output_tokens 145 (thinking_tokens 47); iterations:
    # message 1128/135, advisor_message (model claude-opus-4-8) 2543/18, message 1283/10.
    # The top level is the two message iterations' sum; the advisor's are not in it.
    usage = parsed.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (1128 + 1283, 135 + 10, 47)
    [(advisor, advisor_usage)] = parsed.other_models
    assert (advisor, advisor_usage.input_tokens, advisor_usage.output_tokens) == ("claude-opus-4-8", 2543, 18)
    table = PriceTable.load()
    own = table.resolve(parsed.model, "anthropic").effective_rates()
    opus = table.resolve("claude-opus-4-8", "anthropic").effective_rates()
    expected = (2411 * own["input"] + 145 * own["output"] + 2543 * opus["input"] + 18 * opus["output"]) / 1e6
    cost = table.cost(provider="anthropic", model=parsed.model, usage=usage, other_models=parsed.other_models)
    assert cost.cost_usd == pytest.approx(expected)


# Anthropic's compaction docs ("Compaction at a token threshold", the compact_20260112 edit): the
# summarising step is an extra sampling iteration, billed; the top-level usage shows only the
# final message iteration (the docs' example: top level 23,000 in / 1,000 out, iterations
# compaction 180,000 / 3,500 and message 23,000 / 1,000). Issue 15's recorded case: top level 180
# in / 8 out while the compaction iteration wrote 55,096 cache tokens.
COMPACTED = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "compaction", "content": "Summary of the conversation: ..."},
        {"type": "text", "text": "Continuing."},
    ],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 180,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 8,
        "iterations": [
            {
                "type": "compaction",
                "input_tokens": 3,
                "cache_creation_input_tokens": 55096,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 55096, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 3500,
            },
            {"type": "message", "input_tokens": 180, "cache_read_input_tokens": 0, "output_tokens": 8},
        ],
    },
}


def test_anthropic_compaction_iteration_is_counted_and_billed():
    request = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Go on"}]}
    parsed = parse(make_exchange("api.anthropic.com", "/v1/messages", request, [json.dumps(COMPACTED).encode()]))
    usage = parsed.usage
    assert (usage.input_tokens, usage.cache_write_tokens, usage.output_tokens) == (3 + 55096 + 180, 55096, 3508)
    assert parsed.other_models == []
    table = PriceTable.load()
    rates = table.resolve(parsed.model, "anthropic").effective_rates(input_tokens=usage.input_tokens)
    expected = (183 * rates["input"] + 55096 * rates["cache_write"] + 3508 * rates["output"]) / 1e6
    cost = table.cost(provider="anthropic", model=parsed.model, usage=usage)
    assert cost.cost_usd == pytest.approx(expected)
    top_level_only = (180 * rates["input"] + 8 * rates["output"]) / 1e6
    assert cost.cost_usd > 15 * top_level_only  # what was recorded before: about 5% of the call
