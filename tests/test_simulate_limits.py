"""Budgets and rate limits on hand-built traffic: which request trips, who is stopped, when."""

import pytest

from analysis.simulate.policy import PolicyError
from tests.simulate_helpers import decisions_by_id, run

DAY = 86_400


def test_budget_trips_at_the_request_that_reaches_the_limit_and_blocks_the_rest_of_the_day():
    policy = """
[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 1.0
"""
    # T0 is 09:00 UTC; the day ends 15 h later.
    rows = [
        {"t": 0, "cost_usd": 0.4},
        {"t": 10, "cost_usd": 0.4},  # spent 0.8
        {"t": 20, "cost_usd": 0.4},  # admitted (0.8 < 1.0), reaches 1.2: trips the budget
        {"t": 30, "cost_usd": 0.3},  # blocked
        {"t": 40, "cost_usd": 0.2, "team": "support"},  # another team: its own budget
        {"t": 50, "cost_usd": 0.5},  # blocked
        {"t": 15 * 3600, "cost_usd": 0.4},  # next day (00:00 UTC): a new window
    ]
    result = run(policy, rows)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["disposition"] for i in range(7)] == [
        "upstream",
        "upstream",
        "upstream",
        "blocked",
        "upstream",
        "blocked",
        "upstream",
    ]
    assert d["r2"]["budget_tripped"] == "team-daily"
    assert d["r3"]["budget_by"] == "team-daily" and d["r3"]["budget_action"] == "block"
    # A blocked request is paid nothing but answered nothing: prevented spend, not a saving.
    assert d["r3"]["saving_budget"] == 0.0 and d["r3"]["simulated_cost_usd"] == 0.0
    assert d["r3"]["blocked_spend_usd"] == 0.3
    budget = result.budgets[0]
    assert budget["blocked"] == 2 and budget["spend_prevented_usd"] == pytest.approx(0.8)
    assert budget["blocked_spend_usd"] == pytest.approx(0.8) and budget["saving_usd"] == 0.0
    t = result.totals
    assert t["saving_usd"] == pytest.approx(0.0) and t["blocked_spend_usd"] == pytest.approx(0.8)
    assert t["unanswered"] == 2 and t["simulated_usd"] == pytest.approx(t["baseline_usd"] - 0.8)
    assert any("left unanswered" in note for note in result.notes)
    assert budget["windows_tripped"] == 1
    [incident] = budget["incidents"]
    assert incident["scope_value"] == "search"
    assert incident["window_start"] == "2025-03-03T00:00:00+00:00"
    assert incident["tripped_by"] == "r2" and incident["first_stopped_id"] == "r3"
    assert incident["blocked"] == 2
    assert result.totals["blocked"] == 2


def test_downgrade_prices_the_request_at_the_cheaper_model():
    policy = """
[[budget]]
name = "global-hourly"
window = "hour"
limit_usd = 0.01
action = "downgrade"
to = "gpt-4o-mini"
"""
    rows = [
        {"t": 0, "cost_usd": 0.01},  # reaches the limit
        # gpt-4o-mini: $0.15 / M input, $0.60 / M output. 1000 in + 100 out = 0.00015 + 0.00006.
        {"t": 10, "cost_usd": 0.0035},
        {"t": 20, "cost_usd": 0.0035, "model": "gpt-4o-mini", "model_requested": "gpt-4o-mini"},  # already there
    ]
    result = run(policy, rows)
    d = decisions_by_id(result)
    assert d["r1"]["budget_action"] == "downgrade" and d["r1"]["model_after"] == "gpt-4o-mini"
    assert d["r1"]["simulated_cost_usd"] == pytest.approx(0.00021)
    assert d["r1"]["saving_budget"] == pytest.approx(0.0035 - 0.00021)
    assert d["r1"]["quality"] == "unverified"
    assert d["r2"]["budget_action"] is None and d["r2"]["simulated_cost_usd"] == 0.0035
    assert result.budgets[0]["downgraded"] == 1


def test_month_windows_are_calendar_months():
    policy = """
[[budget]]
name = "monthly"
scope = "key"
window = "month"
limit_usd = 1.0
"""
    rows = [
        {"t": 0, "cost_usd": 1.0},  # 3 March: reaches the limit
        {"t": 27 * DAY, "cost_usd": 0.1},  # 30 March: blocked
        {"t": 29 * DAY, "cost_usd": 0.1},  # 1 April: a new month
        {"t": 29 * DAY + 1, "cost_usd": 0.1, "key_id": "k2"},  # another key
    ]
    d = decisions_by_id(run(policy, rows))
    assert [d[f"r{i}"]["disposition"] for i in range(4)] == ["upstream", "blocked", "upstream", "upstream"]


def test_key_is_the_older_name_of_key_id_as_scope_and_condition():
    rows = [
        {"t": 0, "cost_usd": 1.0, "key_id": "k1"},
        {"t": 1, "cost_usd": 0.1, "key_id": "k1"},  # blocked: k1 reached its limit
        {"t": 2, "cost_usd": 0.1, "key_id": "k2"},  # another key, not counted
    ]
    for scope, condition in (("key_id", "key_id"), ("key", "key")):
        policy = f"""
[[budget]]
name = "per-key"
scope = "{scope}"
{condition} = ["k1", "k2"]
window = "day"
limit_usd = 1.0
"""
        result = run(policy, rows)
        d = decisions_by_id(result)
        assert [d[f"r{i}"]["disposition"] for i in range(3)] == ["upstream", "blocked", "upstream"]
        assert result.budgets[0]["scope"] == "key_id"


def test_key_and_key_id_together_are_an_error():
    with pytest.raises(PolicyError, match="key_id under its older name"):
        run('[[budget]]\nname = "b"\nkey = "k1"\nkey_id = "k1"\nwindow = "day"\nlimit_usd = 1.0\n', [])


def test_budget_conditions_limit_what_it_counts():
    policy = """
[[budget]]
name = "agents"
feature = "agent"
window = "day"
limit_usd = 0.5
"""
    rows = [
        {"t": 0, "cost_usd": 0.5, "feature": "agent"},
        {"t": 1, "cost_usd": 0.5, "feature": "chat"},  # not counted, not stopped
        {"t": 2, "cost_usd": 0.1, "feature": "agent"},  # blocked
    ]
    d = decisions_by_id(run(policy, rows))
    assert [d[f"r{i}"]["disposition"] for i in range(3)] == ["upstream", "upstream", "blocked"]


def test_rate_limit_throttles_within_a_sliding_minute():
    policy = """
[[rate_limit]]
name = "user-burst"
scope = "user"
requests_per_minute = 2
"""
    rows = [
        {"t": 0},
        {"t": 10},
        {"t": 20},  # third in a minute: throttled
        {"t": 30, "user": "u2"},  # another user
        {"t": 59},  # still two admitted within (t-60 s, t]: throttled
        {"t": 60},  # r0 left the window: admitted
        {"t": 61},  # r1 (10 s) and r5 (60 s) in the window: throttled
    ]
    result = run(policy, rows)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["throttled_by"] for i in range(7)] == [
        None,
        None,
        "user-burst",
        None,
        "user-burst",
        None,
        "user-burst",
    ]
    # A throttled client retries: its cost stays in the simulated spend.
    assert d["r2"]["simulated_cost_usd"] == d["r2"]["cost_usd"]
    assert result.totals["saving_usd"] == 0.0 and result.totals["throttled"] == 3
    [limit] = result.rate_limits
    assert limit["throttled"] == 3 and limit["top_scope_values"][0]["scope_value"] == "u1"


def test_tokens_per_minute():
    policy = """
[[rate_limit]]
name = "tpm"
tokens_per_minute = 2500
"""
    rows = [
        {"t": 0, "input_tokens": 1000, "output_tokens": 200},
        {"t": 1, "input_tokens": 1000, "output_tokens": 200},  # 1200 before: admitted
        {"t": 2, "input_tokens": 10, "output_tokens": 10},  # 2400 before: admitted
        {"t": 3, "input_tokens": 10, "output_tokens": 10},  # 2420 before: admitted
        {"t": 4, "input_tokens": 100, "output_tokens": 0},  # 2440: admitted, 2540
        {"t": 5, "input_tokens": 1, "output_tokens": 0},  # 2540 >= 2500: throttled
    ]
    d = decisions_by_id(run(policy, rows))
    assert [d[f"r{i}"]["throttled_by"] for i in range(6)] == [None, None, None, None, None, "tpm"]


def test_blocked_requests_do_not_use_rate_limit_capacity():
    policy = """
[[budget]]
name = "cap"
window = "day"
limit_usd = 0.01

[[rate_limit]]
name = "rpm"
requests_per_minute = 1
"""
    rows = [{"t": 0, "cost_usd": 0.01}, {"t": 1}, {"t": 2}]
    d = decisions_by_id(run(policy, rows))
    assert [d[f"r{i}"]["disposition"] for i in range(3)] == ["upstream", "blocked", "blocked"]
    assert [d[f"r{i}"]["throttled_by"] for i in range(3)] == [None, None, None]
