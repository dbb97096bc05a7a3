"""Routing and batch pricing, worked by hand from the bundled price table.

gpt-4o: $2.50 / M input, $1.25 / M cached input, $10 / M output; batch $1.25 / $5.
gpt-4o-mini: $0.15 / M input, $0.60 / M output; batch $0.075 / $0.30.
"""

import pytest

from analysis.parsers.tokens import count_tokens
from tests.simulate_helpers import contents_frame, decisions_by_id, requests_frame, run

# 1000 input tokens of which 800 read from OpenAI's prompt cache, 100 output tokens, at gpt-4o:
# 200 x 2.50 + 800 x 1.25 + 100 x 10 = 2500 per million.
CACHED_GPT_4O = {"input_tokens": 1000, "cached_input_tokens": 800, "output_tokens": 100, "cost_usd": 0.0025}

ROUTE = """
[[routing]]
name = "to-mini"
model = "gpt-4o*"
max_input_tokens = 2000
to = "gpt-4o-mini"
"""


def test_routed_cost_is_the_targets_list_price_without_the_prompt_cache_discount():
    result = run(ROUTE, [CACHED_GPT_4O])
    d = decisions_by_id(result)["r0"]
    # 1000 x 0.15 + 100 x 0.60 = 210 per million: every input token at the full rate.
    assert d["simulated_cost_usd"] == pytest.approx(0.00021)
    assert d["saving_routing"] == pytest.approx(0.0025 - 0.00021)
    assert (d["routed_by"], d["model_after"], d["quality"]) == ("to-mini", "gpt-4o-mini", "unverified")
    assert result.routing["quality"] == "unverified"
    assert result.routing["rules"][0]["from_models"] == {"gpt-4o": 1}
    assert result.totals["quality_unverified"] == 1
    assert any("unverified" in note for note in result.notes)


def test_conditions_and_first_matching_rule():
    policy = (
        ROUTE.replace('name = "to-mini"', 'name = "to-mini"\nhas_tools = false')
        + """
[[routing]]
name = "everything-else"
to = "gpt-4.1-nano"
"""
    )
    result = run(
        policy,
        [
            {"input_tokens": 1500},  # to-mini
            {"input_tokens": 2001},  # too big for to-mini: everything-else
            {"has_tools": True},  # to-mini needs no tools
            {"model": "claude-sonnet-4-5", "model_requested": "claude-sonnet-4-5", "provider": "anthropic"},
            {"model": "gpt-4o-2024-08-06", "model_requested": "gpt-4o-2024-08-06"},  # glob
            {"input_tokens": None, "output_tokens": None, "cost_usd": None},  # no tokens: no target can price it
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["routed_by"] for i in range(6)] == [
        "to-mini",
        "everything-else",
        "everything-else",
        "everything-else",
        "to-mini",
        None,
    ]


def test_requested_model_is_what_rules_match():
    result = run(
        ROUTE,
        [
            {"model_requested": "gpt-4o", "model": "gpt-4o-2024-08-06"},
            {"model_requested": "gpt-4.1", "model": "gpt-4o"},
        ],
    )
    d = decisions_by_id(result)
    assert d["r0"]["routed_by"] == "to-mini" and d["r1"]["routed_by"] is None


def test_prompt_size_tier_of_the_target():
    policy = """
[[routing]]
name = "long-to-gemini"
min_input_tokens = 100000
to = "gemini-2.5-pro"
to_provider = "gemini"
"""
    result = run(policy, [{"input_tokens": 300_000, "output_tokens": 1000, "cost_usd": 1.0}])
    # Above 200k input tokens Gemini 2.5 Pro charges $2.50 / M input and $15 / M output.
    assert decisions_by_id(result)["r0"]["simulated_cost_usd"] == pytest.approx((300_000 * 2.5 + 1000 * 15) / 1e6)


def test_token_counts_are_reestimated_for_a_target_with_another_tokenizer():
    policy = """
[[routing]]
name = "claude-to-4o"
model = "claude-*"
to = "gpt-4o"
"""
    prompt = "user: 请把这份季度报告总结成三个要点，并指出最大的风险。"
    answer = "answer to " + prompt
    row = {
        "model": "claude-sonnet-4-5",
        "model_requested": "claude-sonnet-4-5",
        "provider": "anthropic",
        "input_tokens": 1000,
        "output_tokens": 400,
        "cost_usd": 0.009,
    }
    requests = requests_frame([row])
    contents = contents_frame(requests, {"r0": prompt})
    with_texts = decisions_by_id(run(policy, [row], contents))["r0"]
    without_texts = decisions_by_id(run(policy, [row]))["r0"]
    request_text = "\n" + prompt  # empty system prompt, then the messages
    inputs = round(1000 * count_tokens(request_text, "gpt-4o") / count_tokens(request_text, "claude-sonnet-4-5"))
    outputs = round(400 * count_tokens(answer, "gpt-4o") / count_tokens(answer, "claude-sonnet-4-5"))
    assert inputs != 1000  # the two encodings really count this text differently
    assert with_texts["simulated_cost_usd"] == pytest.approx((inputs * 2.5 + outputs * 10) / 1e6)
    assert without_texts["simulated_cost_usd"] == pytest.approx((1000 * 2.5 + 400 * 10) / 1e6)


def test_system_prompt_regex():
    policy = """
[[routing]]
name = "classifiers"
system_prompt_regex = "(?i)^classify"
to = "gpt-4o-mini"
"""
    rows = [{"t": 0}, {"t": 1}, {"t": 2}]
    requests = requests_frame(rows)
    contents = contents_frame(
        requests, {"r0": "user: hi", "r1": "user: hi"}, system={"r0": "Classify the intent.", "r1": "You chat."}
    )
    d = decisions_by_id(run(policy, rows, contents))
    assert [d[f"r{i}"]["routed_by"] for i in range(3)] == ["classifiers", None, None]  # r2: no content


def test_batch_price_from_the_table_scales_the_recorded_cost():
    policy = """
[[batch]]
name = "reports"
feature = "report"
"""
    result = run(
        policy,
        [
            {**CACHED_GPT_4O, "feature": "report"},
            {**CACHED_GPT_4O, "feature": "chat"},
            {**CACHED_GPT_4O, "feature": "report", "batch": True},
        ],
    )
    d = decisions_by_id(result)
    # Batch rates: 1000 x 1.25 (cached input keeps the standard cached rate, 1.25) + 100 x 5 = 1750 per million.
    assert d["r0"]["batch_by"] == "reports"
    assert d["r0"]["simulated_cost_usd"] == pytest.approx(0.00175)
    assert d["r1"]["batch_by"] is None and d["r2"]["batch_by"] is None  # r2 already was a batch call
    assert d["r0"]["quality"] == "same"
    assert result.batch[0]["requests"] == 1 and "24 h" in result.batch[0]["latency"]


def test_flat_batch_discount_and_routing_then_batch():
    policy = (
        ROUTE
        + """
[[batch]]
name = "nightly"
feature = "nightly"
discount = 0.5

[[batch]]
name = "reports"
feature = "report"
"""
    )
    result = run(
        policy,
        [
            {**CACHED_GPT_4O, "feature": "nightly"},  # routed (0.00021), then half price
            {**CACHED_GPT_4O, "feature": "report"},  # routed, then gpt-4o-mini's batch price
            {**CACHED_GPT_4O, "feature": "report", "input_tokens": 5000},  # too big to route: gpt-4o batch
        ],
    )
    d = decisions_by_id(result)
    assert d["r0"]["simulated_cost_usd"] == pytest.approx(0.000105)
    assert d["r0"]["saving_routing"] == pytest.approx(0.0025 - 0.00021)
    assert d["r0"]["saving_batch"] == pytest.approx(0.00021 - 0.000105)
    assert d["r1"]["simulated_cost_usd"] == pytest.approx((1000 * 0.075 + 100 * 0.3) / 1e6)
    assert d["r2"]["routed_by"] is None and d["r2"]["batch_by"] == "reports"


def test_batch_traffic_is_not_rate_limited():
    policy = """
[[batch]]
name = "reports"
feature = "report"

[[rate_limit]]
name = "rpm"
requests_per_minute = 1
"""
    rows = [{"t": 0}, {"t": 1, "feature": "report"}, {"t": 2}]
    d = decisions_by_id(run(policy, rows))
    assert [d[f"r{i}"]["throttled_by"] for i in range(3)] == [None, None, "rpm"]


def test_token_reestimation_is_the_same_for_one_request_and_for_many():
    import numpy as np

    from analysis.pricing.table import PriceTable
    from analysis.simulate.batch import ordered
    from analysis.simulate.pricer import SMALL, Pricer, PricingRows
    from analysis.simulate.synthetic import generate

    requests, contents = generate(SMALL + 500, days=1, seed=5)
    rows = PricingRows.from_frame(ordered(requests, contents))
    pricer = Pricer(PriceTable.load())
    inputs, outputs, changed = pricer.reestimated(rows, "gpt-4o")  # the polars path
    assert changed.sum() > 300  # the Claude, Gemini and local rows
    assert (inputs[changed] != rows.usage["input_tokens"][changed]).any()
    for i in range(0, len(rows), 7):
        one = pricer.reestimated(rows.take(np.array([i])), "gpt-4o")  # the list path
        assert (one[0][0], one[1][0], one[2][0]) == (inputs[i], outputs[i], changed[i])


def test_a_request_already_on_the_target_model_is_not_routed():
    # The provider answers with the dated snapshot; the rule names the alias.
    result = run(
        ROUTE.replace('model = "gpt-4o*"', 'model = "gpt-4o*"'),
        [
            {"model_requested": "gpt-4o-mini", "model": "gpt-4o-mini-2024-07-18", "cost_usd": 0.0002},
            {"model_requested": "gpt-4o-mini-2024-07-18", "model": "gpt-4o-mini-2024-07-18", "cost_usd": 0.0002},
            {"model_requested": "gpt-4o", "model": "gpt-4o-2024-08-06"},
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["routed_by"] for i in range(3)] == [None, None, "to-mini"]
    assert d["r0"]["saving_routing"] == 0.0 and result.totals["routed"] == 1


def test_routing_and_downgrades_keep_embeddings_off_chat_models():
    policy = """
[[routing]]
name = "everything-to-mini"
to = "gpt-4o-mini"

[[budget]]
name = "tight"
window = "day"
limit_usd = 0.0
action = "downgrade"
to = "gpt-4.1-nano"
"""
    embedding = {
        "endpoint": "embeddings",
        "model": "text-embedding-3-large",
        "model_requested": "text-embedding-3-large",
    }
    result = run(policy, [embedding, {"t": 5}, embedding | {"t": 10}])
    d = decisions_by_id(result)
    assert d["r0"]["routed_by"] is None and d["r2"]["budget_action"] is None
    assert d["r0"]["model_after"] == d["r2"]["model_after"] == "text-embedding-3-large"
    assert d["r1"]["routed_by"] == "everything-to-mini"


def test_a_downgrade_to_the_model_already_served_is_no_downgrade():
    policy = """
[[budget]]
name = "tight"
window = "day"
limit_usd = 0.0
action = "downgrade"
to = "gpt-4o-mini"
"""
    rows = [
        {"model_requested": "gpt-4o-mini", "model": "gpt-4o-mini-2024-07-18", "cost_usd": 0.0002},
        {"model_requested": "gpt-4o-mini", "model": "gpt-4o-mini-2024-07-18", "cost_usd": 0.0002, "t": 5},
        {"model_requested": "gpt-4o", "model": "gpt-4o-2024-08-06", "t": 10},
    ]
    result = run(policy, rows)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["budget_action"] for i in range(3)] == [None, None, "downgrade"]
    assert result.totals["downgraded"] == 1 and result.budgets[0]["saving_usd"] > 0
