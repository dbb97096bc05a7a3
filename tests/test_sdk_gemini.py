"""Accounting end to end with the real google-genai SDK: the SDK -> `llm-shadow proxy` -> the fake provider.

generate_content and generate_content_stream (SSE), with thought, cached and tool-use tokens,
a long prompt that pays Gemini 2.5 Pro's above-200k prices, embeddings and errors. Each test
reads usage_metadata from the SDK's response and maps it to llm-shadow's convention with the
arithmetic written out. Gemini's convention: prompt_token_count already includes
cached_content_token_count; candidates_token_count EXCLUDES thoughts_token_count, so our
output is candidates + thoughts; tool_use_prompt_token_count (what built-in tools fed back to
the model) is input, outside prompt_token_count, so our input is prompt + tool use.

The fake provider listens on 127.0.0.1, so calls are recorded with provider
`gemini_compatible`; Gemini models still get Google's list prices.
"""

import json
import re

import pytest
from google import genai
from google.genai import errors, types

from analysis.parsers.tokens import count_tokens
from tests.sdk_support import (
    API_KEY,
    assert_cost,
    assert_successful_call,
    assert_tokens,
    rates,
    recording_proxy,
)

PROVIDER = "gemini_compatible"
QUESTION = "What is the capital of France?"
THINKING = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))


@pytest.fixture(scope="module")
def shadow(tmp_path_factory):
    with recording_proxy(tmp_path_factory.mktemp("sdk-gemini") / "data") as running:
        yield running


def client_for(
    shadow,
    feature: str,
    usage: dict | None = None,
    status: int | None = None,
    cut: int | None = None,
    gzip: bool = False,
) -> genai.Client:
    """A client whose calls carry this test's feature and steer the fake provider."""
    headers = {"x-shadow-feature": feature}
    if usage is not None:
        headers["x-fake-usage"] = json.dumps(usage)
    if status is not None:
        headers["x-fake-status"] = str(status)
    if cut is not None:
        headers["x-fake-cut"] = str(cut)
    if gzip:
        headers["x-fake-gzip"] = "1"
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=shadow.url, headers=headers))


def our_tokens(usage: types.GenerateContentResponseUsageMetadata) -> dict:
    """A google-genai usage_metadata in llm-shadow's convention."""
    return {
        "input": usage.prompt_token_count + (usage.tool_use_prompt_token_count or 0),
        "cached": usage.cached_content_token_count or 0,
        "output": usage.candidates_token_count + (usage.thoughts_token_count or 0),
        "reasoning": usage.thoughts_token_count or 0,
    }


def assert_path(shadow, feature: str, row: dict, tail: str) -> None:
    """The recorded path is the one the SDK sent, whichever API version it chose (v1 or v1beta)."""
    assert row["path"] == shadow.received_path(feature)
    assert re.fullmatch(rf"/v1(beta)?/{re.escape(tail)}", row["path"]), row["path"]


def assert_call(shadow, feature: str, row: dict, *, model: str, stream: bool, method: str) -> None:
    assert (row["provider"], row["endpoint"]) == (PROVIDER, "generate_content")
    assert_path(shadow, feature, row, f"models/{model}:{method}")
    assert row["model_requested"] == row["model"] == model
    assert_successful_call(row, stream=stream)


def flash_rates() -> dict[str, float]:
    flash = rates("gemini-2.5-flash", PROVIDER)
    # Gemini 2.5 Flash's published prices: $0.30 input, $0.03 cached, $2.50 output (thinking included).
    assert (flash["input"], flash["cached_input"], flash["output"], flash["reasoning_output"]) == (
        0.30,
        0.03,
        2.50,
        2.50,
    )
    return flash


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_generate_content_with_thoughts_cache_and_tool_use(shadow, feature, gzip):
    client = client_for(
        shadow,
        feature,
        gzip=gzip,
        usage={
            "promptTokenCount": 5000,
            "cachedContentTokenCount": 4096,
            "toolUsePromptTokenCount": 300,
            "candidatesTokenCount": 120,
            "thoughtsTokenCount": 800,
        },
    )
    response = client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION, config=THINKING)
    row = shadow.row(feature)
    usage = response.usage_metadata
    assert response.candidates[0].content.parts[0].thought is True
    assert_call(shadow, feature, row, model="gemini-2.5-flash", stream=False, method="generateContent")
    assert_tokens(row, **our_tokens(usage))
    # input: 5000 prompt (4096 of them cached) + 300 tool use; output: 120 + 800 thoughts.
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
        5300,
        4096,
        920,
        800,
    )
    flash_rates()
    # (5300 - 4096) x 0.30 + 4096 x 0.03 + 920 x 2.50 = 361.2 + 122.88 + 2300 = 2784.08
    assert_cost(row, 2784.08e-6)
    assert shadow.content(row["id"])["response_text"] == response.text


def test_generate_content_stream_with_thoughts(shadow, feature):
    client = client_for(
        shadow, feature, usage={"promptTokenCount": 800, "candidatesTokenCount": 14, "thoughtsTokenCount": 256}
    )
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION, config=THINKING))
    usage = chunks[-1].usage_metadata
    text = "".join(chunk.text or "" for chunk in chunks)
    row = shadow.row(feature)
    assert_call(shadow, feature, row, model="gemini-2.5-flash", stream=True, method="streamGenerateContent")
    assert_tokens(row, **our_tokens(usage))
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (800, 270, 256)
    flash_rates()
    # 800 x 0.30 + (14 + 256) x 2.50 = 240 + 675 = 915
    assert_cost(row, 915e-6)
    assert shadow.content(row["id"])["response_text"] == text


def test_a_long_prompt_pays_the_above_200k_prices(shadow, feature):
    client = client_for(
        shadow,
        feature,
        usage={
            "promptTokenCount": 250_000,
            "cachedContentTokenCount": 100_000,
            "candidatesTokenCount": 1_000,
            "thoughtsTokenCount": 2_000,
        },
    )
    response = client.models.generate_content(model="gemini-2.5-pro", contents=QUESTION)
    row = shadow.row(feature)
    assert_tokens(row, **our_tokens(response.usage_metadata))
    long = rates("gemini-2.5-pro", PROVIDER, input_tokens=row["input_tokens"])
    short = rates("gemini-2.5-pro", PROVIDER)
    # Gemini 2.5 Pro: $1.25 / $0.125 / $10 up to 200k prompt tokens, $2.50 / $0.25 / $15 above,
    # for every token of the call.
    assert (short["input"], short["cached_input"], short["output"]) == (1.25, 0.125, 10.00)
    assert (long["input"], long["cached_input"], long["output"]) == (2.50, 0.25, 15.00)
    # 150,000 x 2.50 + 100,000 x 0.25 + 3,000 x 15 = 375,000 + 25,000 + 45,000 = 445,000
    assert_cost(row, 0.445)


def test_embeddings_are_estimated(shadow, feature):
    client = client_for(shadow, feature)
    texts = ["the first text to embed", "and the second one"]
    response = client.models.embed_content(model="gemini-embedding-001", contents=texts)
    row = shadow.row(feature)
    assert len(response.embeddings) == 2
    assert row["endpoint"] == "embeddings"
    assert_path(shadow, feature, row, "models/gemini-embedding-001:batchEmbedContents")
    assert (row["status"], row["outcome"], row["model"]) == (200, "ok", "gemini-embedding-001")
    # The Gemini API reports no usage for embeddings: the input is counted from the texts
    # ("role: text" lines, cl100k_base standing in for Gemini's tokenizer), flagged estimated.
    estimated = count_tokens("user: the first text to embed\nuser: and the second one", "gemini-embedding-001")
    assert_tokens(row, input=estimated, output=0, source="estimated")
    assert rates("gemini-embedding-001", PROVIDER)["input"] == 0.15
    assert_cost(row, estimated * 0.15 / 1e6)


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (429, errors.ClientError, "rate_limited"),
        (503, errors.ServerError, "server_error"),
    ],
)
def test_errors(shadow, feature, status, error, outcome):
    client = client_for(shadow, feature, status=status)
    with pytest.raises(error) as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)
    assert raised.value.code == status
    row = shadow.row(feature)
    assert (row["status"], row["outcome"]) == (status, outcome)
    assert row["error"] == f"{status}: fake error {status}"  # Gemini's error code and message
    assert (row["input_tokens"], row["usage_source"], row["cost_usd"], row["cost_source"]) == (
        None,
        "none",
        None,
        "none",
    )


def test_an_error_answered_to_a_stream(shadow, feature):
    client = client_for(shadow, feature, status=429)
    with pytest.raises(errors.ClientError):
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION))
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"]) == (429, "rate_limited", False)
    assert (row["usage_source"], row["cost_source"]) == ("none", "none")


def test_a_stream_cut_by_the_upstream_keeps_the_reported_input(shadow, feature):
    client = client_for(shadow, feature, usage={"promptTokenCount": 640}, cut=4)
    text = []
    with pytest.raises(Exception, match="incomplete chunked read"):
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION):
            text.append(chunk.text)
    row = shadow.row(feature)
    assert (row["status"], row["outcome"], row["stream"]) == (200, "upstream_cut", True)
    # Every chunk carried the prompt count (kept) and the candidates so far (4); the output is
    # the larger of that and the count of the text that passed, flagged as estimated.
    passed = "".join(text)
    assert passed == "Hello! This is the"
    output = max(4, count_tokens(passed, "gemini-2.5-flash"))
    assert_tokens(row, input=640, output=output, source="estimated")
    assert_cost(row, (640 * 0.30 + output * 2.50) / 1e6)


def test_no_api_key_is_stored(shadow):
    for path in shadow.data_dir.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
