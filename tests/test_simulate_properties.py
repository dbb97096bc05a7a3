"""Properties on synthetic traffic: the one-request path and the simulator agree exactly, a
policy that changes nothing saves exactly nothing, savings never exceed the baseline and add
up without double counting."""

import math

import polars as pl
import pytest

from analysis.simulate.batch import frame_facts, ordered
from analysis.simulate.facts import (
    MONEY_COLUMNS,
    REPLAY_COLUMNS,
    FrameFacts,
    OneRequestFacts,
    one_request_layout,
    split_columns,
)
from analysis.simulate.policy import parse_policy
from analysis.simulate.replay import DECISION_ROW_COLUMNS, Trace
from analysis.simulate.simulator import build_engine, simulate
from analysis.simulate.synthetic import generate

EVERYTHING = """
[cache.exact]
ttl = "2h"
scope = "team"
max_entries = 50

[cache.semantic]
threshold = 0.9
ttl = "30m"
scope = "feature"

[[routing]]
name = "small-4o"
model = "gpt-4o"
max_input_tokens = 800
to = "gpt-4o-mini"

[[routing]]
name = "classify"
system_prompt_regex = "(?i)classify"
to = "gpt-4.1-nano"

[[routing]]
name = "sonnet"
model = "claude-sonnet-*"
has_tools = false
to = "gpt-4.1-mini"

[[batch]]
name = "reports"
feature = ["report", "summarize"]

[[budget]]
name = "team-hourly"
scope = "team"
window = "hour"
limit_usd = 0.01
action = "downgrade"
to = "gpt-4.1-nano"

[[budget]]
name = "key-daily"
scope = "key"
window = "day"
limit_usd = 0.1

[[rate_limit]]
name = "user-rpm"
scope = "user"
requests_per_minute = 3
tokens_per_minute = 4000

[[rate_limit]]
name = "agents"
feature = "agent"
requests_per_minute = 1
"""


@pytest.fixture(scope="module")
def traffic():
    return generate(1200, days=1, seed=3, topics=150)


def test_one_request_at_a_time_gives_the_simulators_decisions(traffic):
    requests, contents = traffic
    policy = parse_policy(EVERYTHING)
    # answer_agreement compares recorded answers after the run: a finding, not a decision.
    batch = simulate(policy, requests, contents).decisions.drop("answer_agreement")
    engine = build_engine(policy)
    state = engine.new_state()
    one_by_one = [engine.decide(record, state) for record in ordered(requests, contents).iter_rows(named=True)]
    decided = pl.DataFrame([d.__dict__ for d in one_by_one], schema=batch.schema)
    # Every kind of decision occurs, so the comparison covers every rule.
    assert {"exact_hit", "semantic_hit", "blocked", "upstream"} <= set(batch["disposition"])
    assert batch["budget_action"].drop_nulls().unique().sort().to_list() == ["block", "downgrade"]
    assert batch["throttled_by"].drop_nulls().n_unique() == 2
    assert batch["routed_by"].drop_nulls().n_unique() == 3 and batch["batch_by"].drop_nulls().len() > 0
    assert batch["budget_tripped"].drop_nulls().len() > 0
    assert batch.equals(decided)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_vectorised_facts_equal_the_facts_of_each_request(traffic):
    requests, contents = traffic
    engine = build_engine(parse_policy(EVERYTHING))
    frame = ordered(requests, contents)
    vectorised = frame_facts(engine, frame, engine.new_state())
    state = engine.new_state()
    scalar = FrameFacts.from_facts([engine.observe(r, state) for r in frame.iter_rows(named=True)], 2, 2)
    assert set(scalar.columns) == set(vectorised.columns)
    for name, values in scalar.columns.items():
        other = vectorised.chunk(name, 0, len(vectorised))
        mismatched = [i for i, (a, b) in enumerate(zip(values, other, strict=True)) if not _same(a, b)]
        assert not mismatched, f"{name}: row {mismatched[0]}: {values[mismatched[0]]!r} != {other[mismatched[0]]!r}"


def test_one_request_reads_as_the_simulators_frame(traffic):
    """Enforce mode reads a request's facts from a OneRequestFacts, the simulator from its
    frame's columns: every column replay and decision_row read, the arrival and the cost
    before budgets, and the rows the replay loop reads are equal, request by request (NaN
    where a cost is unknown, in both; None too where decision_row reads the Facts' own fields)."""
    requests, contents = traffic
    engine = build_engine(parse_policy(EVERYTHING))
    frame = ordered(requests, contents)
    vectorised = frame_facts(engine, frame, engine.new_state())
    arrival, pre_cost = vectorised.arrival().tolist(), vectorised.pre_budget_cost().tolist()
    budget_columns, rate_columns = split_columns(2, 2)
    replay_columns = (*REPLAY_COLUMNS, *(k for k, _ in budget_columns), *(c for _, c in budget_columns), *rate_columns)
    names = (*replay_columns, *DECISION_ROW_COLUMNS)
    assert any(name.startswith("downgrade_cost.") for name in names)
    state = engine.new_state()
    for i, record in enumerate(frame.iter_rows(named=True)):
        one = OneRequestFacts(one_request_layout(2, 2))
        one.load(engine.observe(record, state))
        expected = vectorised.row(names, i)
        read = one.row(names, 0)
        mismatched = [name for name, a, b in zip(names, read, expected, strict=True) if not _same(a, b)]
        assert not mismatched, f"row {i}: {mismatched}"
        (row,) = one.rows(0, 1)  # REPLAY_COLUMNS' values, then the arrival and the cost before budgets
        assert row[len(REPLAY_COLUMNS)] == arrival[i]
        assert _same(row[len(REPLAY_COLUMNS) + 1], pre_cost[i])
        own = one.row(DECISION_ROW_COLUMNS, 0)
        unknown = [
            math.nan if v is None and name in MONEY_COLUMNS else v
            for name, v in zip(DECISION_ROW_COLUMNS, own, strict=True)
        ]
        assert all(_same(a, b) for a, b in zip(unknown, vectorised.row(DECISION_ROW_COLUMNS, i), strict=True))
        (frame_row,) = vectorised.rows(i, i + 1)
        assert len(row) == len(frame_row) == len(REPLAY_COLUMNS) + 5
        assert all(_same(a, b) for a, b in zip(row[:-3], frame_row[:-3], strict=True)), f"row {i}"
        for ours, theirs in zip(row[-3:], frame_row[-3:], strict=True):  # budget keys, downgrade costs, rate keys
            assert len(ours) == len(theirs) == 2 and all(_same(a, b) for a, b in zip(ours, theirs, strict=True))


NOTHING = """
[cache.exact]
ttl = "1h"

[[routing]]
name = "never"
model = "no-such-model"
to = "gpt-4o-mini"

[[batch]]
name = "never-batch"
feature = "no-such-feature"

[[budget]]
name = "huge"
window = "month"
limit_usd = 1e12

[[rate_limit]]
name = "huge-rpm"
requests_per_minute = 1000000000
"""


def test_a_policy_that_changes_nothing_saves_exactly_nothing(traffic):
    requests, contents = traffic
    unique = requests.with_columns(pl.col("id").alias("prompt_hash"))  # no two requests alike
    for text in ("", NOTHING):
        result = simulate(parse_policy(text), unique, contents)
        assert result.totals["saving_usd"] == 0.0
        assert result.totals["simulated_usd"] == result.totals["baseline_usd"]
        assert result.decisions["simulated_cost_usd"].equals(result.decisions["cost_usd"])
        assert all(row["saving_usd"] == 0.0 for row in result.by_policy)
        assert result.totals["blocked"] == result.totals["throttled"] == result.totals["routed"] == 0


def test_savings_never_exceed_the_baseline_and_add_up(traffic):
    requests, contents = traffic
    result = simulate(parse_policy(EVERYTHING), requests, contents)
    d = result.decisions.filter(pl.col("cost_usd").is_not_null())
    assert (d["simulated_cost_usd"] >= 0).all()
    savings = d["saving_cache"] + d["saving_routing"] + d["saving_batch"] + d["saving_budget"]
    prevented = savings + d["blocked_spend_usd"]
    assert ((d["cost_usd"] - d["simulated_cost_usd"]) - prevented).abs().max() < 1e-12
    assert (savings <= d["cost_usd"] + 1e-15).all()
    t = result.totals
    assert 0 < t["saving_usd"] <= t["baseline_usd"]
    assert sum(row["saving_usd"] for row in result.by_policy) == pytest.approx(t["saving_usd"], abs=1e-9)
    for grouping in ("day", "team", "feature", "model"):
        rows = result.to_dict()[f"by_{grouping}"]
        assert sum(r["requests"] for r in rows) == t["requests"]
        assert sum(r["saving_usd"] for r in rows) == pytest.approx(t["saving_usd"], abs=1e-9)
    unpriced = result.decisions.filter(pl.col("cost_usd").is_null())
    assert unpriced.height == t["unpriced_requests"] > 0
    assert unpriced["simulated_cost_usd"].null_count() == unpriced.height


def test_a_cleared_trace_row_is_a_new_one():
    """Enforce mode decides every request with one Trace of one row, cleared per decision: every
    field of it (a field added later too) goes back to what a new Trace holds."""
    fresh = {name: list(value) for name, value in vars(Trace(1)).items() if name != "n"}
    used = Trace(1)
    for name in fresh:
        getattr(used, name)[0] = object()  # what any decision could have left there
    used.clear(0)
    assert {name: list(value) for name, value in vars(used).items() if name != "n"} == fresh
