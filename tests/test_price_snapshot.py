"""The bundled price snapshot: where it came from, what it holds, that it rebuilds the same."""

import json

import pytest

from analysis.pricing.files import SNAPSHOT_PATH, bundled_snapshot
from analysis.pricing.litellm import model_name_of_key, rates_of_entry, snapshot_from_litellm
from analysis.pricing.snapshot import build_snapshot
from tests.conftest import shared_dir

PROVIDERS = {
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "groq",
    "mistral",
    "deepseek",
    "xai",
    "together",
    "fireworks",
    "cerebras",
    "perplexity",
}


def test_snapshot_is_small_versioned_and_sourced():
    assert SNAPSHOT_PATH.stat().st_size < 1_000_000
    data = json.loads(SNAPSHOT_PATH.read_text())
    assert data["version"] == build_snapshot.DEFAULT_VERSION == bundled_snapshot()[0]
    assert set(data["models"]) == PROVIDERS  # LiteLLM's map has no OpenRouter entries
    source = (SNAPSHOT_PATH.parent / "SOURCE.txt").read_text()
    assert data["source"]["sha256"] in source and "MIT License" in source and data["version"] in source


def test_snapshot_rebuilds_identically(tmp_path):
    shared = shared_dir()
    if shared is None:
        pytest.skip("shared data not present")
    out = tmp_path / "snapshot.json"
    build_snapshot.main([str(shared / "data/prices/litellm/model_prices_and_context_window.json"), "--out", str(out)])
    assert out.read_text() == SNAPSHOT_PATH.read_text()


def test_rates_of_entry_reads_every_tier_and_service():
    entry = {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
        "input_cost_per_token_batches": 1.5e-06,
        "input_cost_per_token_above_272k_tokens_priority": 1e-05,
        "output_cost_per_reasoning_token": 1e-05,
        "input_cost_per_token_flex": 1e-06,
        "output_cost_per_image": 0.04,
        "input_cost_per_token_ultrafast": 9e-06,
        "supports_vision": True,
    }
    assert rates_of_entry(entry) == {
        "standard": {
            "input": 3.0,
            "output": 15.0,
            "cached_input": 0.3,
            "cache_write": 3.75,
            "cache_write_1h": 6.0,
            "reasoning_output": 10.0,
        },
        "standard.above_200k": {"input": 6.0, "cache_write_1h": 12.0},
        "batch": {"input": 1.5},
        "priority.above_272k": {"input": 10.0},
        "flex": {"input": 1.0},
    }


def test_model_names_lose_litellm_prefixes_only():
    assert model_name_of_key("gemini/gemini-2.5-pro") == "gemini-2.5-pro"
    assert model_name_of_key("groq/openai/gpt-oss-120b") == "openai/gpt-oss-120b"
    assert model_name_of_key("azure/eu/gpt-4o") == "eu/gpt-4o"
    assert model_name_of_key("claude-sonnet-4-5") == "claude-sonnet-4-5"


def test_gemini_api_entry_wins_over_vertex():
    litellm_map = {
        "gemini-x": {
            "litellm_provider": "vertex_ai-language-models",
            "mode": "chat",
            "input_cost_per_token": 2e-06,
            "output_cost_per_token": 2e-06,
        },
        "gemini/gemini-x": {
            "litellm_provider": "gemini",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 1e-06,
        },
        "gemini-y": {
            "litellm_provider": "vertex_ai-language-models",
            "mode": "chat",
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 3e-06,
        },
        "bedrock/claude": {
            "litellm_provider": "bedrock",
            "mode": "chat",
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 3e-06,
        },
    }
    models = snapshot_from_litellm(litellm_map, "v")["models"]
    assert models["gemini"]["gemini-x"]["from"] == "gemini/gemini-x"
    assert models["gemini"]["gemini-y"]["from"] == "gemini-y"
    assert set(models) == {"gemini"}


def test_zero_cache_write_price_is_dropped():
    # DeepSeek bills cache-miss tokens at the input price; LiteLLM's 0 would make them free.
    entry = {
        "input_cost_per_token": 2.8e-07,
        "output_cost_per_token": 4.2e-07,
        "cache_read_input_token_cost": 2.8e-08,
        "cache_creation_input_token_cost": 0.0,
    }
    assert rates_of_entry(entry) == {"standard": {"input": 0.28, "output": 0.42, "cached_input": 0.028}}
