"""The exact cache on hand-built traffic: which request hits, with which TTL, and why not."""

import pytest

from analysis.simulate.cacheability import exclusion_reason, reason_before_hash
from analysis.simulate.policy import CacheRules
from tests.simulate_helpers import DEFAULTS, decisions_by_id, run

CACHE = """
[cache.exact]
ttl = "1h"
scope = "{scope}"
max_entries = {max_entries}
"""


def cache(scope: str = "global", max_entries: int = 1000, extra: str = "") -> str:
    return CACHE.format(scope=scope, max_entries=max_entries) + extra


def test_ttl_in_flight_hit_and_expiry():
    result = run(
        cache(),
        [
            {"t": 0, "latency_ms": 2000.0, "cost_usd": 0.02},  # r0 miss, answer arrives at 2 s
            {"t": 1, "cost_usd": 0.03},  # r1 same prompt while r0 is in flight: miss
            {"t": 1800, "cost_usd": 0.04, "latency_ms": 1500.0},  # r2 30 min later: hit on r0
            {"t": 3601, "cost_usd": 0.05},  # r3 1 h after r0's answer (2 s): still alive (expires 3602 s)
            {"t": 3602, "cost_usd": 0.06},  # r4 expired (r1 stored nothing: r0's entry was usable)
            {"t": 3603, "cost_usd": 0.07},  # r5 hits r4's answer, which arrived at 3603 s
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["exact_cache"] for i in range(6)] == [
        "miss",
        "miss_in_flight",
        "hit",
        "hit",
        "miss_expired",
        "hit",
    ]
    assert d["r2"]["cache_source_id"] == "r0" and d["r5"]["cache_source_id"] == "r4"
    assert d["r2"]["saving_cache"] == 0.04 and d["r2"]["simulated_cost_usd"] == 0.0
    assert d["r2"]["latency_saved_ms"] == 1500.0
    assert d["r2"]["quality"] == "same"
    totals = result.totals
    assert totals["cache_hits"] == 3
    assert totals["saving_usd"] == pytest.approx(0.04 + 0.05 + 0.07)
    assert result.cache["exact"]["misses"] == {"miss": 1, "miss_in_flight": 1, "miss_expired": 1, "miss_evicted": 0}


def test_scope_keeps_teams_apart():
    result = run(
        cache(scope="team"),
        [
            {"t": 0, "team": "search"},
            {"t": 10, "team": "support"},  # same prompt, another team: miss
            {"t": 20, "team": "search"},  # hit on r0
            {"t": 30, "team": None},  # no team: a group of its own
            {"t": 40, "team": None},  # hit on r3
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["exact_cache"] for i in range(5)] == ["miss", "miss", "hit", "miss", "hit"]
    assert d["r4"]["cache_source_id"] == "r3"


def test_lru_evicts_the_least_recently_used():
    result = run(
        cache(max_entries=2),
        [
            {"t": 0, "prompt_hash": "a"},
            {"t": 10, "prompt_hash": "b"},
            {"t": 20, "prompt_hash": "a"},  # hit: a becomes most recently used
            {"t": 30, "prompt_hash": "c"},  # stores c, evicts b (least recently used)
            {"t": 40, "prompt_hash": "b"},  # miss_evicted; stores b, evicts a
            {"t": 50, "prompt_hash": "c"},  # hit
            {"t": 60, "prompt_hash": "a"},  # miss_evicted
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["exact_cache"] for i in range(7)] == [
        "miss",
        "miss",
        "hit",
        "miss",
        "miss_evicted",
        "hit",
        "miss_evicted",
    ]


def test_non_deterministic_requests_are_excluded_and_their_repeats_counted():
    result = run(
        cache(),
        [
            {"t": 0, "prompt_hash": "hot", "temperature": 0.7},
            {"t": 10, "prompt_hash": "hot", "temperature": 0.7},  # a repeat, excluded: temperature
            {"t": 20, "prompt_hash": "tools", "has_tools": True},
            {"t": 30, "prompt_hash": "tools", "has_tools": True},  # repeat, excluded: tools
            {"t": 40, "prompt_hash": "many", "n": 3},
            {"t": 50, "prompt_hash": "s", "stream": True},
            {"t": 60, "prompt_hash": "s", "stream": True},  # repeat, excluded: streaming
            {"t": 70, "prompt_hash": None},
            {"t": 80, "prompt_hash": "unset", "temperature": None},  # unset: the provider samples
            {"t": 90, "prompt_hash": "unset", "temperature": None},  # repeat, excluded: temperature_unset
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["cache_excluded"] for i in range(10)][8:] == ["temperature_unset"] * 2
    assert [d[f"r{i}"]["cache_excluded"] for i in range(8)] == [
        "temperature",
        "temperature",
        "tools",
        "tools",
        "n",
        "streaming",
        "streaming",
        "no_prompt_hash",
    ]
    assert [d[f"r{i}"]["excluded_duplicate"] for i in range(8)] == [False, True, False, True, False, False, True, False]
    assert d["r9"]["exact_cache"] == "excluded"
    excluded = result.cache["exact"]["excluded"]
    assert excluded["requests"] == {
        "no_prompt_hash": 1,
        "temperature": 2,
        "temperature_unset": 2,
        "n": 1,
        "tools": 2,
        "streaming": 2,
    }
    assert excluded["duplicates"] == {"temperature": 1, "temperature_unset": 1, "tools": 1, "streaming": 1}


def test_the_sampling_and_tools_rules_come_before_the_prompt_hash():
    """A request with no prompt hash that samples or has tools is excluded for that (enforce
    mode does not hash a prompt those rules exclude); the frame and the record say the same."""
    rows = [
        {"t": 0, "prompt_hash": None, "temperature": 0.7},
        {"t": 10, "prompt_hash": None, "temperature": None},
        {"t": 20, "prompt_hash": None, "temperature": None, "endpoint": "embeddings"},
        {"t": 30, "prompt_hash": None, "n": 2},
        {"t": 40, "prompt_hash": None, "has_tools": True},
        {"t": 50, "prompt_hash": None, "stream": True},
        {"t": 60, "prompt_hash": "", "temperature": 0.5},
    ]
    expected = ["temperature", "temperature_unset", "no_prompt_hash", "n", "tools", "no_prompt_hash", "temperature"]
    d = decisions_by_id(run(cache(), rows))
    assert [d[f"r{i}"]["cache_excluded"] for i in range(len(rows))] == expected
    rules = CacheRules()
    records = [{**DEFAULTS, **row} for row in rows]
    assert [exclusion_reason(record, rules) for record in records] == expected
    assert [reason_before_hash(record, rules) for record in records] == [
        "temperature",
        "temperature_unset",
        None,
        "n",
        "tools",
        None,
        "temperature",
    ]


def test_unset_temperature_is_cacheable_when_the_policy_says_so_and_for_embeddings():
    rows = [
        {"t": 0, "prompt_hash": "unset", "temperature": None},
        {"t": 10, "prompt_hash": "unset", "temperature": None},
        {"t": 20, "prompt_hash": "vec", "temperature": None, "endpoint": "embeddings"},
        {"t": 30, "prompt_hash": "vec", "temperature": None, "endpoint": "embeddings"},  # embeddings do not sample
    ]
    d = decisions_by_id(run(cache(), rows))
    assert (d["r1"]["exact_cache"], d["r3"]["exact_cache"]) == ("excluded", "hit")
    d = decisions_by_id(run(cache(extra="allow_unset_temperature = true\n"), rows))
    assert (d["r1"]["exact_cache"], d["r3"]["exact_cache"]) == ("hit", "hit")


def test_a_streamed_answer_answers_streamed_requests_only():
    """Enforce mode replays an answer's bytes as they came (SSE events or one JSON body), so the
    cache is keyed by form: a streamed answer is stored, for streamed requests only."""
    rows = [
        {"t": 0, "prompt_hash": "s", "stream": True},
        {"t": 10, "prompt_hash": "s"},  # the same question, not streamed: the streamed answer cannot serve it
        {"t": 20, "prompt_hash": "s", "stream": True},  # a stream again
        {"t": 30, "prompt_hash": "s"},  # served by r1's JSON answer
    ]
    d = decisions_by_id(run(cache(), rows))
    assert (d["r1"]["exact_cache"], d["r1"]["disposition"]) == ("miss", "upstream")
    assert d["r2"]["exact_cache"] == "excluded" and d["r2"]["disposition"] == "upstream"  # allow_streaming is off
    assert (d["r3"]["exact_cache"], d["r3"]["cache_source_id"]) == ("hit", "r1")
    d = decisions_by_id(run(cache(extra="allow_streaming = true\n"), rows))
    assert (d["r2"]["exact_cache"], d["r2"]["cache_source_id"]) == ("hit", "r0")
    assert (d["r3"]["exact_cache"], d["r3"]["cache_source_id"]) == ("hit", "r1")


def test_allow_flags_make_requests_cacheable():
    policy = cache(extra="allow_sampling = true\nallow_streaming = true\nallow_tools = true\n")
    result = run(
        policy,
        [
            {"t": 0, "temperature": 0.7, "stream": True, "has_tools": True},
            {"t": 10, "temperature": 0.7, "stream": True, "has_tools": True},
        ],
    )
    assert decisions_by_id(result)["r1"]["exact_cache"] == "hit"


def test_failed_requests_store_nothing():
    result = run(
        cache(),
        [
            {"t": 0, "outcome": "server_error", "status": 500},
            {"t": 10},  # the failure left nothing to replay: miss
            {"t": 20},  # hit on r1
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["exact_cache"] for i in range(3)] == ["miss", "miss", "hit"]
    assert d["r2"]["cache_source_id"] == "r1"


def test_blocked_requests_store_nothing_and_hits_charge_no_budget():
    policy = cache(
        extra="""
[[budget]]
name = "tiny"
window = "day"
limit_usd = 0.01
"""
    )
    result = run(
        policy,
        [
            {"t": 0, "prompt_hash": "a", "cost_usd": 0.01},  # reaches the limit
            {"t": 10, "prompt_hash": "a", "cost_usd": 0.01},  # cache hit: answered, not blocked
            {"t": 20, "prompt_hash": "b", "cost_usd": 0.01},  # blocked: nothing stored
            {"t": 30, "prompt_hash": "b", "cost_usd": 0.01},  # miss, blocked again
        ],
    )
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["disposition"] for i in range(4)] == ["upstream", "exact_hit", "blocked", "blocked"]
    assert d["r3"]["exact_cache"] == "miss"
    assert d["r0"]["budget_tripped"] == "tiny"


def test_provider_prompt_cache_discount_is_in_the_baseline_not_added_to_savings():
    # The recorded cost already has the provider's cached-input discount; a hit saves that.
    result = run(
        cache(),
        [
            {"t": 0, "cached_input_tokens": 800, "cost_usd": 0.0035},
            {"t": 10, "cached_input_tokens": 800, "cost_usd": 0.0035},
        ],
    )
    assert result.totals["saving_usd"] == 0.0035
    assert result.by_policy[0] == {
        "name": "exact-cache",
        "kind": "exact_cache",
        "requests": 1,
        "saving_usd": 0.0035,
        "latency_saved_ms": 1000.0,
    }


def test_unpriced_requests_are_simulated_but_kept_out_of_money():
    result = run(
        cache(),
        [
            {"t": 0, "cost_usd": None, "cost_source": "unpriced"},
            {"t": 10, "cost_usd": None, "cost_source": "unpriced"},
            {"t": 20, "prompt_hash": "x", "cost_usd": 0.5},
        ],
    )
    d = decisions_by_id(result)
    assert d["r1"]["exact_cache"] == "hit" and d["r1"]["saving_cache"] is None
    assert result.totals["unpriced_requests"] == 2
    assert result.totals["baseline_usd"] == 0.5 and result.totals["saving_usd"] == 0.0
    assert any("2 requests are unpriced" in note for note in result.notes)
