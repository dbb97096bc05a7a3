"""Costs worked by hand, one test per token kind and tier.

Each test first asserts the snapshot's prices it relies on, so a snapshot update that
changes them fails here loudly instead of silently changing what the arithmetic means.
Prices are USD per million tokens; every expected cost is written out as its sum.
"""

import logging
import random

import pytest

from analysis.parsers.exchange import Usage
from analysis.pricing.rates import Cost, ModelPrice, compute_cost_usd, service_of
from analysis.pricing.table import PriceTable


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def rates(table: PriceTable, model: str, provider: str, rate_set=("standard", 0)) -> dict:
    price = table.resolve(model, provider)
    assert price is not None, f"{provider}/{model} missing from the snapshot"
    return dict(price.rates[rate_set])


def test_openai_cached_input(table):
    assert rates(table, "gpt-4o", "openai") == {"input": 2.5, "cached_input": 1.25, "output": 10.0}
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    cost = table.cost(provider="openai", model="gpt-4o", usage=usage)
    # 600 uncached x 2.50 + 400 cached x 1.25 + 200 output x 10.00
    assert cost.cost_usd == pytest.approx((600 * 2.50 + 400 * 1.25 + 200 * 10.00) / 1e6)
    assert cost.cost_usd == pytest.approx(0.004)
    assert cost == Cost(cost.cost_usd, "computed", table.version, "openai/gpt-4o")


def test_anthropic_cache_reads_and_5m_and_1h_writes(table):
    assert rates(table, "claude-sonnet-4-5", "anthropic") == {
        "input": 3.0,
        "cached_input": 0.3,
        "cache_write": 3.75,
        "cache_write_1h": 6.0,
        "output": 15.0,
    }
    # 10,000 input = 2,000 plain + 5,000 cache reads + 3,000 cache writes (1,000 of them 1-hour).
    usage = Usage(
        input_tokens=10_000,
        cached_input_tokens=5_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=1_000,
        output_tokens=500,
    )
    cost = table.cost(provider="anthropic", model="claude-sonnet-4-5-20250929", usage=usage)
    expected = (2_000 * 3.00 + 5_000 * 0.30 + 2_000 * 3.75 + 1_000 * 6.00 + 500 * 15.00) / 1e6
    assert expected == pytest.approx(0.0285)
    assert cost.cost_usd == pytest.approx(expected)


def test_anthropic_write_prices_missing_use_published_multipliers():
    # A Claude entry giving only input and output: writes cost 1.25x (5 min) and 2x (1 h) input.
    price = ModelPrice("anthropic", "claude-custom", "chat", "test", {("standard", 0): {"input": 4.0, "output": 20.0}})
    table = PriceTable("t1", {"anthropic": {"claude-custom": price}})
    usage = Usage(input_tokens=3_000, cache_write_tokens=2_000, cache_write_1h_tokens=500, output_tokens=0)
    cost = table.cost(provider="anthropic", model="claude-custom", usage=usage)
    # 1,000 plain x 4 + 1,500 5-minute writes x 5 (1.25 x 4) + 500 1-hour writes x 8 (2 x 4)
    assert cost.cost_usd == pytest.approx((1_000 * 4 + 1_500 * 5 + 500 * 8) / 1e6)


def test_anthropic_batch_1h_write_is_twice_the_batch_input(table):
    batch = rates(table, "claude-opus-4-6", "anthropic", ("batch", 0))
    assert batch == {"input": 2.5, "cached_input": 0.25, "cache_write": 3.125, "output": 12.5}
    usage = Usage(input_tokens=2_000, cache_write_tokens=2_000, cache_write_1h_tokens=1_000, output_tokens=100)
    cost = table.cost(provider="anthropic", model="claude-opus-4-6", usage=usage, batch=True)
    # 1,000 5-minute writes x 3.125 + 1,000 1-hour writes x 5.0 (2 x 2.5) + 100 output x 12.5
    assert cost.cost_usd == pytest.approx((1_000 * 3.125 + 1_000 * 5.0 + 100 * 12.5) / 1e6)


def test_gemini_above_200k_tier_applies_only_past_200k_prompt_tokens(table):
    assert rates(table, "gemini-2.5-pro", "gemini") == {"input": 1.25, "cached_input": 0.125, "output": 10.0}
    assert rates(table, "gemini-2.5-pro", "gemini", ("standard", 200_000)) == {
        "input": 2.5,
        "cached_input": 0.25,
        "output": 15.0,
    }
    at_limit = table.cost(
        provider="gemini", model="models/gemini-2.5-pro", usage=Usage(input_tokens=200_000, output_tokens=1_000)
    )
    assert at_limit.cost_usd == pytest.approx((200_000 * 1.25 + 1_000 * 10) / 1e6)  # 0.26
    above = table.cost(
        provider="gemini",
        model="gemini-2.5-pro",
        usage=Usage(input_tokens=250_000, cached_input_tokens=50_000, output_tokens=2_000),
    )
    # the whole call at the long-prompt prices: 200,000 x 2.50 + 50,000 x 0.25 + 2,000 x 15.00
    assert above.cost_usd == pytest.approx((200_000 * 2.5 + 50_000 * 0.25 + 2_000 * 15) / 1e6)
    assert above.cost_usd == pytest.approx(0.5425)


def test_openai_above_272k_tier(table):
    assert rates(table, "gpt-5.4", "openai", ("standard", 272_000)) == {
        "input": 5.0,
        "cached_input": 0.5,
        "output": 22.5,
    }
    cost = table.cost(
        provider="openai", model="gpt-5.4-2026-03-05", usage=Usage(input_tokens=300_000, output_tokens=1_000)
    )
    assert cost.cost_usd == pytest.approx((300_000 * 5.0 + 1_000 * 22.5) / 1e6)  # 1.5225


def test_o_series_reasoning_tokens_pay_the_output_price(table):
    assert rates(table, "o3-mini", "openai") == {"input": 1.1, "cached_input": 0.55, "output": 4.4}
    usage = Usage(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_500)
    cost = table.cost(provider="openai", model="o3-mini-2025-01-31", usage=usage)
    assert cost.cost_usd == pytest.approx((1_000 * 1.1 + 3_000 * 4.4) / 1e6)  # 0.0143


def test_reasoning_priced_apart(table):
    assert rates(table, "sonar-deep-research", "perplexity") == {
        "input": 2.0,
        "output": 8.0,
        "reasoning_output": 3.0,
    }
    usage = Usage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    cost = table.cost(provider="perplexity", model="sonar-deep-research", usage=usage)
    # 1,000 input x 2 + 1,000 visible output x 8 + 4,000 reasoning x 3
    assert cost.cost_usd == pytest.approx((1_000 * 2 + 1_000 * 8 + 4_000 * 3) / 1e6)  # 0.022


def test_batch_prices(table):
    assert rates(table, "gpt-4o", "openai", ("batch", 0)) == {"input": 1.25, "output": 5.0}
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    cost = table.cost(provider="openai", model="gpt-4o", usage=usage, batch=True)
    assert cost.cost_usd == pytest.approx((1_000 * 1.25 + 1_000 * 5.0) / 1e6)  # 0.00625
    # batch wins over whatever service tier the response names
    assert table.cost(provider="openai", model="gpt-4o", usage=usage, batch=True, service_tier="priority") == cost


def test_priority_and_flex_service_tiers(table):
    assert rates(table, "gpt-4o", "openai", ("priority", 0)) == {
        "input": 4.25,
        "cached_input": 2.125,
        "output": 17.0,
    }
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    priority = table.cost(provider="openai", model="gpt-4o", usage=usage, service_tier="priority")
    assert priority.cost_usd == pytest.approx((600 * 4.25 + 400 * 2.125 + 200 * 17) / 1e6)  # 0.0068

    assert rates(table, "gpt-5", "openai", ("flex", 0)) == {"input": 0.625, "cached_input": 0.0625, "output": 5.0}
    flex = table.cost(
        provider="openai", model="gpt-5", usage=Usage(input_tokens=10_000, output_tokens=1_000), service_tier="flex"
    )
    assert flex.cost_usd == pytest.approx((10_000 * 0.625 + 1_000 * 5.0) / 1e6)  # 0.01125

    standard = table.cost(provider="openai", model="gpt-4o", usage=usage)
    for tier in ("default", "auto", "scale", None, "standard"):
        assert table.cost(provider="openai", model="gpt-4o", usage=usage, service_tier=tier) == standard


def test_service_without_its_own_prices_pays_standard(table):
    assert ("priority", 0) not in table.resolve("claude-sonnet-4-5", "anthropic").rates
    usage = Usage(input_tokens=1_000, output_tokens=100)
    assert table.cost(
        provider="anthropic", model="claude-sonnet-4-5", usage=usage, service_tier="priority"
    ) == table.cost(provider="anthropic", model="claude-sonnet-4-5", usage=usage)


def test_service_of():
    assert service_of(None, False) == "standard"
    assert service_of("PRIORITY", False) == "priority"
    assert service_of("flex", False) == "flex"
    assert service_of("default", True) == "batch"


def test_embedding_has_input_price_only(table):
    assert rates(table, "text-embedding-3-small", "openai") == {"input": 0.02, "output": 0.0}
    cost = table.cost(
        provider="openai", model="text-embedding-3-small", usage=Usage(input_tokens=1_000_000, output_tokens=None)
    )
    assert cost.cost_usd == pytest.approx(0.02)


def test_provider_reported_cost_wins(table):
    usage = Usage(input_tokens=1_000, output_tokens=100)
    cost = table.cost(provider="openrouter", model="anthropic/claude-sonnet-4.5", usage=usage, provider_cost_usd=0.0123)
    assert cost == Cost(0.0123, "provider", table.version)
    # also for a model the table does not know, and with no token counts
    unknown = table.cost(provider="openrouter", model="someone/unknown-model", usage=Usage(), provider_cost_usd=0.0)
    assert unknown == Cost(0.0, "provider", table.version)


def test_openrouter_free_variant_costs_zero(table):
    cost = table.cost(
        provider="openrouter", model="minimax/minimax-m2:free", usage=Usage(input_tokens=5_000, output_tokens=500)
    )
    assert cost.cost_usd == 0.0 and cost.cost_source == "computed"


def test_unknown_model_is_unpriced_not_zero(table, caplog):
    usage = Usage(input_tokens=1_000, output_tokens=100)
    with caplog.at_level(logging.WARNING, logger="analysis.pricing.table"):
        first = table.cost(provider="openai", model="gpt-unknown-9", usage=usage)
        second = table.cost(provider="openai", model="gpt-unknown-9", usage=usage)
    assert first == second == Cost(None, "unpriced", table.version)
    warnings = [r for r in caplog.records if "gpt-unknown-9" in r.getMessage()]
    assert len(warnings) == 1  # loud, but once per model


def test_missing_model_is_unpriced(table):
    assert (
        table.cost(provider="openai", model=None, usage=Usage(input_tokens=5, output_tokens=5)).cost_source
        == "unpriced"
    )


def test_no_token_counts_is_none_not_unpriced(table):
    cost = table.cost(provider="openai", model="gpt-4o", usage=Usage())
    assert cost == Cost(None, "none", table.version)


def test_one_missing_count_is_zero(table):
    cost = table.cost(provider="openai", model="gpt-4o", usage=Usage(input_tokens=None, output_tokens=100))
    assert cost.cost_usd == pytest.approx(100 * 10.0 / 1e6)


def test_model_requested_prices_when_served_model_unknown(table):
    usage = Usage(input_tokens=1_000, output_tokens=0)
    cost = table.cost(provider="openai", model="gpt-4o-internal-build", model_requested="gpt-4o", usage=usage)
    assert cost.cost_usd == pytest.approx(1_000 * 2.5 / 1e6)
    assert cost.priced_as == "openai/gpt-4o"


def test_deepseek_cache_hits(table):
    assert rates(table, "deepseek-chat", "deepseek") == {"input": 0.28, "cached_input": 0.028, "output": 0.42}
    usage = Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=500)
    cost = table.cost(provider="deepseek", model="deepseek-chat", usage=usage)
    # 2,000 cache misses x 0.28 + 8,000 cache hits x 0.028 + 500 output x 0.42
    assert cost.cost_usd == pytest.approx((2_000 * 0.28 + 8_000 * 0.028 + 500 * 0.42) / 1e6)  # 0.000994


def _every_term(price: ModelPrice, usage: Usage, service: str) -> float:
    """compute_cost_usd's sum with all ten terms, audio and image ones included when 0."""
    cached, writes = usage.cached_input_tokens, usage.cache_write_tokens
    writes_1h = min(usage.cache_write_1h_tokens, writes)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    uncached = max(usage.input_tokens - cached - writes, 0)
    r = price.effective_rates(service, usage.input_tokens)
    usd = (
        uncached * r["input"]
        + 0 * r["input_audio"]
        + 0 * r["input_image"]
        + cached * r["cached_input"]
        + (writes - writes_1h) * r["cache_write"]
        + writes_1h * r["cache_write_1h"]
        + (usage.output_tokens - reasoning) * r["output"]
        + reasoning * r["reasoning_output"]
        + 0 * r["output_audio"]
        + 0 * r["output_image"]
    )
    return round(usd / 1_000_000, 12)


def test_text_only_cost_is_the_same_float_as_the_full_sum(table):
    """compute_cost_usd leaves out the audio and image terms of a call without such tokens
    (a speed-up: enforce mode prices every call on the proxy's event loop); the cost must be
    the very float the full sum gives, the recorder's row and the settlement agreeing on it."""
    rng = random.Random(12)
    models = [("gpt-4o", "openai"), ("claude-sonnet-4-5", "anthropic"), ("gemini-2.5-pro", "gemini"), ("o3", "openai")]
    for _ in range(2_000):
        model, provider = rng.choice(models)
        price = table.resolve(model, provider)
        input_tokens = rng.choice([0, 1, 14, 999, 12_345, 250_000])
        cached = rng.randint(0, input_tokens)
        writes = rng.randint(0, input_tokens - cached)
        output = rng.choice([0, 2, 777, 30_000])
        usage = Usage(
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=writes,
            cache_write_1h_tokens=rng.randint(0, writes),
            output_tokens=output,
            reasoning_tokens=rng.randint(0, output),
        )
        service = rng.choice(["standard", "batch", "priority", "flex"])
        assert compute_cost_usd(price, usage, service) == _every_term(price, usage, service), (model, usage, service)
