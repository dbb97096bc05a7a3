"""Accounting end to end with the real openai SDK: the SDK -> `llm-shadow proxy` -> the fake provider.

For every endpoint the SDK speaks (chat JSON and streamed, Responses JSON and streamed,
embeddings, legacy completions, batches) and the OpenAI-shaped variants the same parser
serves (Azure deployments, OpenRouter's reported cost, DeepSeek's cache hits), each test reads
the usage from the SDK's own response object, maps it to llm-shadow's convention with the
arithmetic written out, and checks the recorded row field by field; the cost is worked by hand
from the published rates, after asserting that the price table holds those rates.

The fake provider listens on 127.0.0.1, so every call here is recorded with provider
`openai_compatible` (the host names no known provider): the Azure test checks the Azure path
and deployment handling, not host detection (analysis.parsers.detect's own tests cover host names).
Prices still resolve to the maker's list price, as for any OpenAI-compatible gateway.
"""

import json

import openai
import pytest
from typer.testing import CliRunner

from analysis.parsers.tokens import count_tokens
from cli import app
from tests.sdk_support import (
    API_KEY,
    assert_cost,
    assert_successful_call,
    assert_tokens,
    rates,
    recording_proxy,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]
PROVIDER = "openai_compatible"


@pytest.fixture(scope="module")
def shadow(tmp_path_factory):
    with recording_proxy(tmp_path_factory.mktemp("sdk-openai") / "data") as running:
        yield running


@pytest.fixture
def client(shadow, feature) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{shadow.url}/v1", api_key=API_KEY, max_retries=0, default_headers={"x-shadow-feature": feature}
    )


def fake_usage(**usage) -> dict[str, str]:
    """Headers asking the fake provider to report this usage (in the provider's own shape)."""
    return {"x-fake-usage": json.dumps(usage)}


def assert_call(
    row: dict, *, endpoint: str, path: str, model_requested: str, model: str, stream: bool, provider: str = PROVIDER
) -> None:
    """The columns every successful call has, streamed or not."""
    assert (row["provider"], row["endpoint"], row["path"]) == (provider, endpoint, path)
    assert (row["model_requested"], row["model"]) == (model_requested, model)
    assert_successful_call(row, stream=stream)


# --- chat completions ------------------------------------------------------------------------


def test_chat_json_with_cached_and_reasoning_tokens(shadow, client, feature):
    response = client.chat.completions.create(
        model="o4-mini",
        messages=MESSAGES,
        extra_headers=fake_usage(
            prompt_tokens=2500,
            prompt_tokens_details={"cached_tokens": 2048},
            completion_tokens=400,
            completion_tokens_details={"reasoning_tokens": 320},
        ),
    )
    row = shadow.row(feature)
    usage = response.usage
    assert_call(
        row, endpoint="chat", path="/v1/chat/completions", model_requested="o4-mini", model=response.model, stream=False
    )
    # OpenAI's convention is ours: prompt_tokens includes the cached tokens, completion_tokens
    # the reasoning tokens.
    assert_tokens(
        row,
        input=usage.prompt_tokens,
        output=usage.completion_tokens,
        cached=usage.prompt_tokens_details.cached_tokens,
        reasoning=usage.completion_tokens_details.reasoning_tokens,
    )
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
        2500,
        2048,
        400,
        320,
    )
    o4_mini = rates("o4-mini", PROVIDER)
    assert (o4_mini["input"], o4_mini["cached_input"], o4_mini["output"], o4_mini["reasoning_output"]) == (
        1.10,
        0.275,
        4.40,
        4.40,
    )
    # (2500 - 2048) x 1.10 + 2048 x 0.275 + (400 - 320) x 4.40 + 320 x 4.40
    # = 497.2 + 563.2 + 352 + 1408 = 2820.4 dollars per million tokens
    assert_cost(row, 2820.4e-6)


def test_chat_stream_with_usage(shadow, client, feature):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=fake_usage(prompt_tokens=1200, prompt_tokens_details={"cached_tokens": 1024}),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    row = shadow.row(feature)
    assert_call(
        row,
        endpoint="chat",
        path="/v1/chat/completions",
        model_requested="gpt-4o-mini",
        model=chunks[0].model,
        stream=True,
    )
    assert row["model"] == "gpt-4o-mini-2024-07-18"
    assert_tokens(
        row, input=usage.prompt_tokens, output=usage.completion_tokens, cached=usage.prompt_tokens_details.cached_tokens
    )
    assert (row["input_tokens"], row["cached_input_tokens"]) == (1200, 1024)
    mini = rates("gpt-4o-mini-2024-07-18", PROVIDER)
    assert (mini["input"], mini["cached_input"], mini["output"]) == (0.15, 0.075, 0.60)
    # (1200 - 1024) x 0.15 + 1024 x 0.075 + output x 0.60
    assert_cost(row, (176 * 0.15 + 1024 * 0.075 + usage.completion_tokens * 0.60) / 1e6)
    assert shadow.content(row["id"])["response_text"] == text


def test_chat_stream_without_usage_is_estimated(shadow, client, feature):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    row = shadow.row(feature)
    assert_call(
        row,
        endpoint="chat",
        path="/v1/chat/completions",
        model_requested="gpt-4o-mini",
        model="gpt-4o-mini-2024-07-18",
        stream=True,
    )
    # No usage arrived: llm-shadow counts the system prompt and the "role: text" lines in, the
    # text that passed out (gpt-4o-mini's own tokenizer, o200k_base), and says it estimated.
    estimated_input = count_tokens("You are terse.", "gpt-4o-mini") + count_tokens(
        "user: What is the capital of France?", "gpt-4o-mini"
    )
    estimated_output = count_tokens(text, "gpt-4o-mini")
    assert_tokens(row, input=estimated_input, output=estimated_output, source="estimated")
    assert_cost(row, (estimated_input * 0.15 + estimated_output * 0.60) / 1e6)


@pytest.mark.parametrize(
    ("tier", "published"),
    [
        ("priority", (0.25, 0.125, 1.00)),  # gpt-4o-mini: Priority processing prices
        ("auto", (0.15, 0.075, 0.60)),  # served as "default": the standard prices
    ],
)
def test_chat_service_tier_prices(shadow, client, feature, tier, published):
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        service_tier=tier,
        extra_headers=fake_usage(
            prompt_tokens=1000, prompt_tokens_details={"cached_tokens": 600}, completion_tokens=200
        ),
    )
    row = shadow.row(feature)
    assert row["service_tier"] == response.service_tier == ("priority" if tier == "priority" else "default")
    usage = response.usage
    assert_tokens(
        row, input=usage.prompt_tokens, output=usage.completion_tokens, cached=usage.prompt_tokens_details.cached_tokens
    )
    service = "priority" if tier == "priority" else "standard"
    table = rates("gpt-4o-mini-2024-07-18", PROVIDER, service=service)
    assert (table["input"], table["cached_input"], table["output"]) == published
    input_rate, cached_rate, output_rate = published
    # (1000 - 600) x input + 600 x cached + 200 x output
    assert_cost(row, (400 * input_rate + 600 * cached_rate + 200 * output_rate) / 1e6)


def test_chat_rate_limited(shadow, client, feature):
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-status": "429"})
    row = shadow.row(feature)
    assert raised.value.status_code == 429
    assert (row["status"], row["outcome"]) == (429, "rate_limited")
    assert row["error"] == "rate_limit_exceeded: fake error 429"
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (None, None, "none")
    assert (row["cost_usd"], row["cost_source"]) == (None, "none")


# --- Responses API -----------------------------------------------------------------------------


def test_responses_json_with_reasoning(shadow, client, feature):
    response = client.responses.create(
        model="o4-mini",
        input="What is the capital of France?",
        instructions="Be terse.",
        reasoning={"effort": "low", "summary": "auto"},
        extra_headers=fake_usage(
            input_tokens=3000,
            input_tokens_details={"cached_tokens": 1536},
            output_tokens=700,
            output_tokens_details={"reasoning_tokens": 512},
        ),
    )
    row = shadow.row(feature)
    usage = response.usage
    assert response.output[0].type == "reasoning"
    assert_call(
        row, endpoint="responses", path="/v1/responses", model_requested="o4-mini", model=response.model, stream=False
    )
    # The Responses API's convention is ours too: input includes cached, output reasoning.
    assert_tokens(
        row,
        input=usage.input_tokens,
        output=usage.output_tokens,
        cached=usage.input_tokens_details.cached_tokens,
        reasoning=usage.output_tokens_details.reasoning_tokens,
    )
    assert rates("o4-mini", PROVIDER)["cached_input"] == 0.275
    # (3000 - 1536) x 1.10 + 1536 x 0.275 + 700 x 4.40 = 1610.4 + 422.4 + 3080 = 5112.8
    assert_cost(row, 5112.8e-6)
    assert shadow.content(row["id"])["response_text"] == response.output_text


def test_responses_stream_with_reasoning(shadow, client, feature):
    with client.responses.stream(
        model="o4-mini",
        input="What is the capital of France?",
        reasoning={"effort": "low", "summary": "auto"},
        extra_headers=fake_usage(input_tokens=900, output_tokens=600, output_tokens_details={"reasoning_tokens": 448}),
    ) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    row = shadow.row(feature)
    usage = final.usage
    assert_call(
        row, endpoint="responses", path="/v1/responses", model_requested="o4-mini", model=final.model, stream=True
    )
    assert_tokens(
        row,
        input=usage.input_tokens,
        output=usage.output_tokens,
        cached=usage.input_tokens_details.cached_tokens,
        reasoning=usage.output_tokens_details.reasoning_tokens,
    )
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (900, 600, 448)
    # 900 x 1.10 + 600 x 4.40 = 990 + 2640 = 3630
    assert_cost(row, 3630e-6)
    assert shadow.content(row["id"])["response_text"] == text == final.output_text


def test_responses_stream_cut_before_its_usage_is_estimated(shadow, client, feature):
    deltas = []
    with pytest.raises(openai.APIConnectionError):  # the upstream cut the stream
        # created, in_progress, output_item.added, content_part.added, 2 deltas, then the cut
        for event in client.responses.create(
            model="o4-mini",
            input="What is the capital of France?",
            instructions="Be terse.",
            stream=True,
            extra_headers={"x-fake-cut": "6"},
        ):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"]) == (200, "upstream_cut", True)
    # The usage comes only with response.completed, which never came: both sides are counted.
    passed = "".join(deltas)
    assert passed == "Hello! This"
    estimated_input = count_tokens("Be terse.", "o4-mini") + count_tokens(
        "user: What is the capital of France?", "o4-mini"
    )
    estimated_output = count_tokens(passed, "o4-mini")
    assert_tokens(row, input=estimated_input, output=estimated_output, source="estimated")
    assert_cost(row, (estimated_input * 1.10 + estimated_output * 4.40) / 1e6)


# --- embeddings, legacy completions ----------------------------------------------------------


def test_embeddings(shadow, client, feature):
    response = client.embeddings.create(
        model="text-embedding-3-small", input=["the first text to embed", "and the second one"]
    )
    row = shadow.row(feature)
    assert len(response.data) == 2
    assert_call(
        row,
        endpoint="embeddings",
        path="/v1/embeddings",
        model_requested="text-embedding-3-small",
        model=response.model,
        stream=False,
    )
    # Embeddings have input only.
    assert_tokens(row, input=response.usage.prompt_tokens, output=0)
    assert rates("text-embedding-3-small", PROVIDER)["input"] == 0.02
    assert_cost(row, response.usage.prompt_tokens * 0.02 / 1e6)


def test_legacy_completions_json(shadow, client, feature):
    response = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say hello to Paris.",
        extra_headers=fake_usage(prompt_tokens=6, completion_tokens=14),
    )
    row = shadow.row(feature)
    assert_call(
        row,
        endpoint="completions",
        path="/v1/completions",
        model_requested="gpt-3.5-turbo-instruct",
        model=response.model,
        stream=False,
    )
    assert_tokens(row, input=response.usage.prompt_tokens, output=response.usage.completion_tokens)
    instruct = rates("gpt-3.5-turbo-instruct", PROVIDER)
    assert (instruct["input"], instruct["output"]) == (1.50, 2.00)
    # 6 x 1.50 + 14 x 2.00 = 9 + 28 = 37
    assert_cost(row, 37e-6)
    assert shadow.content(row["id"])["response_text"] == response.choices[0].text


def test_legacy_completions_stream(shadow, client, feature):
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hello to Paris.",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    row = shadow.row(feature)
    assert_call(
        row,
        endpoint="completions",
        path="/v1/completions",
        model_requested="gpt-3.5-turbo-instruct",
        model=chunks[0].model,
        stream=True,
    )
    assert_tokens(row, input=usage.prompt_tokens, output=usage.completion_tokens)
    assert_cost(row, (usage.prompt_tokens * 1.50 + usage.completion_tokens * 2.00) / 1e6)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert shadow.content(row["id"])["response_text"] == text


# --- batches -----------------------------------------------------------------------------------


def test_batch_create_and_retrieve(shadow, client, feature):
    created = client.batches.create(input_file_id="file-abc", endpoint="/v1/chat/completions", completion_window="24h")
    done = client.batches.retrieve(
        created.id,
        extra_headers=fake_usage(
            input_tokens=10_000, input_tokens_details={"cached_tokens": 4_000}, output_tokens=2_000
        ),
    )
    create_row, retrieve_row = shadow.row(feature, n=2)
    assert created.status == "validating" and created.usage is None
    assert (create_row["endpoint"], create_row["method"], create_row["batch"]) == ("batches", "POST", True)
    assert (create_row["usage_source"], create_row["cost_source"], create_row["cost_usd"]) == ("none", "none", None)

    usage = done.usage
    assert (retrieve_row["endpoint"], retrieve_row["method"], retrieve_row["batch"]) == ("batches", "GET", True)
    assert retrieve_row["path"] == f"/v1/batches/{created.id}"
    assert retrieve_row["model"] == done.model == "gpt-4o-mini-2024-07-18"
    # A batch reports Responses-style usage for all its requests together.
    assert_tokens(
        retrieve_row,
        input=usage.input_tokens,
        output=usage.output_tokens,
        cached=usage.input_tokens_details.cached_tokens,
        reasoning=usage.output_tokens_details.reasoning_tokens,
    )
    batch = rates("gpt-4o-mini-2024-07-18", PROVIDER, service="batch")
    # The Batch API's half prices; the table has no batch cache-read price for gpt-4o-mini, so
    # cache reads pay the standard cache-read price (docs/pricing.md).
    assert (batch["input"], batch["cached_input"], batch["output"]) == (0.075, 0.075, 0.30)
    # 6000 x 0.075 + 4000 x 0.075 + 2000 x 0.30 = 450 + 300 + 600 = 1350
    assert_cost(retrieve_row, 1350e-6)


def test_polling_a_finished_batch_twice_counts_its_usage_once(shadow, client, feature):
    batch_id = f"batch_{feature}"
    for _ in range(2):
        client.batches.retrieve(batch_id, extra_headers=fake_usage(input_tokens=1000, output_tokens=100))
    first, second = shadow.row(feature, n=2)
    assert (first["input_tokens"], first["output_tokens"], first["usage_source"]) == (1000, 100, "provider")
    assert first["usage_key"] == second["usage_key"] == f"openai-batch:{batch_id}"
    assert (second["input_tokens"], second["cost_usd"], second["usage_source"]) == (None, None, "none")
    assert second["error"] == f"usage of openai-batch:{batch_id} was recorded by an earlier call"


# --- Azure, OpenRouter, DeepSeek shapes ------------------------------------------------------


@pytest.fixture
def azure(shadow, feature) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=shadow.url,
        api_version="2024-10-21",
        api_key=API_KEY,
        max_retries=0,
        default_headers={"x-shadow-feature": feature},
    )


@pytest.mark.parametrize("stream", [False, True])
def test_azure_deployment_chat(shadow, azure, feature, stream):
    served = {"x-fake-model": "gpt-4o-mini-2024-07-18"}
    usage_headers = fake_usage(prompt_tokens=3000, prompt_tokens_details={"cached_tokens": 2560})
    if stream:
        chunks = list(
            azure.chat.completions.create(
                model="support-bot-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={**served, **usage_headers},
            )
        )
        usage, model = chunks[-1].usage, chunks[-1].model
    else:
        response = azure.chat.completions.create(
            model="support-bot-mini", messages=MESSAGES, extra_headers={**served, **usage_headers}
        )
        usage, model = response.usage, response.model
    row = shadow.row(feature)
    request = shadow.provider.requests[-1]
    assert request.target == "/openai/deployments/support-bot-mini/chat/completions?api-version=2024-10-21"
    # The deployment is what the client asked for; the response names the model behind it,
    # and that model's price applies (Azure charges OpenAI's list prices).
    assert_call(
        row,
        endpoint="chat",
        path="/openai/deployments/support-bot-mini/chat/completions",
        model_requested="support-bot-mini",
        model=model,
        stream=stream,
    )
    assert model == "gpt-4o-mini-2024-07-18"
    assert_tokens(
        row, input=usage.prompt_tokens, output=usage.completion_tokens, cached=usage.prompt_tokens_details.cached_tokens
    )
    # (3000 - 2560) x 0.15 + 2560 x 0.075 + output x 0.60
    assert_cost(row, (440 * 0.15 + 2560 * 0.075 + usage.completion_tokens * 0.60) / 1e6)


OPENROUTER_USAGE = {  # as OpenRouter reported it for openai/gpt-5-mini (pydantic-ai cassette)
    "prompt_tokens": 17,
    "completion_tokens": 2177,
    "total_tokens": 2194,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0, "video_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 960, "image_tokens": 0},
    "cost": 0.00435825,
    "is_byok": False,
    "cost_details": {
        "upstream_inference_cost": None,
        "upstream_inference_prompt_cost": 4.25e-06,
        "upstream_inference_completions_cost": 0.004354,
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_openrouter_reported_cost(shadow, feature, stream):
    client = openai.OpenAI(
        base_url=f"{shadow.url}/api/v1", api_key=API_KEY, max_retries=0, default_headers={"x-shadow-feature": feature}
    )
    headers = {"x-fake-usage": json.dumps(OPENROUTER_USAGE)}
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="openai/gpt-5-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"usage": {"include": True}},
                extra_headers=headers,
            )
        )
        usage, model = chunks[-1].usage, chunks[-1].model
    else:
        response = client.chat.completions.create(
            model="openai/gpt-5-mini", messages=MESSAGES, extra_body={"usage": {"include": True}}, extra_headers=headers
        )
        usage, model = response.usage, response.model
    row = shadow.row(feature)
    assert_call(
        row,
        endpoint="chat",
        path="/api/v1/chat/completions",
        model_requested="openai/gpt-5-mini",
        model=model,
        stream=stream,
    )
    assert_tokens(
        row,
        input=usage.prompt_tokens,
        output=usage.completion_tokens,
        reasoning=usage.completion_tokens_details.reasoning_tokens,
    )
    # OpenRouter's own figure is stored as is ...
    assert usage.model_extra["cost"] == 0.00435825
    assert (row["cost_usd"], row["cost_source"]) == (usage.model_extra["cost"], "provider")
    # ... and it is the maker's list price: 17 x 0.25 + 2177 x 2.00 = 4.25 + 4354 = 4358.25.
    gpt_5_mini = rates("openai/gpt-5-mini", PROVIDER)
    assert (gpt_5_mini["input"], gpt_5_mini["output"]) == (0.25, 2.00)
    assert row["cost_usd"] == pytest.approx(4358.25e-6)


def test_deepseek_cache_hits(shadow, feature):
    client = openai.OpenAI(
        base_url=shadow.url, api_key=API_KEY, max_retries=0, default_headers={"x-shadow-feature": feature}
    )
    # DeepSeek's documented usage: prompt_cache_hit_tokens + prompt_cache_miss_tokens =
    # prompt_tokens (no prompt_tokens_details).
    response = client.chat.completions.create(
        model="deepseek-chat",
        messages=MESSAGES,
        extra_headers=fake_usage(
            prompt_tokens=1500,
            prompt_cache_hit_tokens=1280,
            prompt_cache_miss_tokens=220,
            completion_tokens=100,
            prompt_tokens_details=None,
            completion_tokens_details=None,
        ),
    )
    row = shadow.row(feature)
    usage = response.usage
    hits, misses = usage.model_extra["prompt_cache_hit_tokens"], usage.model_extra["prompt_cache_miss_tokens"]
    assert usage.prompt_tokens_details is None
    assert_call(
        row,
        endpoint="chat",
        path="/chat/completions",
        model_requested="deepseek-chat",
        model=response.model,
        stream=False,
    )
    assert_tokens(row, input=hits + misses, output=usage.completion_tokens, cached=hits)
    assert row["input_tokens"] == usage.prompt_tokens
    deepseek = rates("deepseek-chat", PROVIDER)
    assert (deepseek["input"], deepseek["cached_input"], deepseek["output"]) == (0.28, 0.028, 0.42)
    # 220 x 0.28 + 1280 x 0.028 + 100 x 0.42 = 61.6 + 35.84 + 42 = 139.44
    assert_cost(row, 139.44e-6)


# --- what `llm-shadow sql` shows ---------------------------------------------------------------


def test_llm_shadow_sql_shows_the_recorded_figures(shadow, client, feature):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    shadow.row(feature)
    result = CliRunner().invoke(
        app,
        [
            "sql",
            f"SELECT input_tokens, output_tokens, usage_source, cost_usd, cost_source FROM requests "
            f"WHERE feature = '{feature}'",
            "--format",
            "json",
            "--data",
            str(shadow.data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    [shown] = json.loads(result.output)
    usage = response.usage
    assert shown == {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "usage_source": "provider",
        "cost_source": "computed",
        "cost_usd": pytest.approx((usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6),
    }


def test_no_api_key_is_stored(shadow):
    for path in shadow.data_dir.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
