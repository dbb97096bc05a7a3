"""Enforce-mode rows read back as the calls they stood for (analysis.simulate.baseline), on
hand-built rows whose right answer is known, the simulation of enforce days that reads them, and
the realised view's count of live decisions that differ from the simulation."""

import polars as pl
import pytest

from analysis.enforce.realised import realised
from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.simulate.baseline import as_observed
from analysis.simulate.policy import parse_policy
from analysis.simulate.pricer import Pricer
from analysis.simulate.simulator import simulate
from analysis.store.schema import DECISIONS, polars_schema
from tests.simulate_helpers import at, requests_frame

PRICES = PriceTable.load()
NOT_SENT = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "cost_source": "not_sent", "latency_ms": 2.0}


def decisions(rows: list[dict]) -> pl.DataFrame:
    schema = polars_schema(DECISIONS)
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def decision(request_id: str, kind: str, action: str, **extra) -> dict:
    return {"id": request_id, "ts": at(0), "mode": "enforce", "policy": kind, "kind": kind, "action": action, **extra}


def cost_at(model: str, input_tokens: int, output_tokens: int) -> float:
    return PRICES.cost(provider="openai", model=model, usage=Usage(input_tokens, output_tokens)).cost_usd


def enforce_day() -> tuple[pl.DataFrame, pl.DataFrame]:
    """r0 went upstream; r1 was answered with r0's answer; r2 asked for gpt-4o and was routed
    to gpt-4o-mini; r3 was blocked by a budget; r4 is a cached row a shadow-mode entry logged."""
    requests = requests_frame(
        [
            {"cost_usd": 0.0125, "latency_ms": 900.0},
            {"outcome": "cached", **NOT_SENT},
            {"model_requested": "gpt-4o-mini", "model": "gpt-4o-mini-2024-07-18", "cost_usd": 0.0002},
            {"outcome": "blocked", "status": 429, **NOT_SENT},
            {"outcome": "ok", "cost_usd": 0.003},
        ]
    )
    logged = decisions(
        [
            decision("r0", "exact_cache", "miss"),
            decision("r1", "exact_cache", "hit", matched_id="r0", saving_usd=0.0125),
            decision("r2", "routing", "route", model_from="gpt-4o", model_to="gpt-4o-mini"),
            decision("r3", "budget", "block"),
            {**decision("r4", "exact_cache", "hit", matched_id="r0", saving_usd=0.0125), "mode": "shadow"},
        ]
    )
    return requests, logged


def test_each_kind_of_enforced_row_is_read_back_as_the_call_it_stood_for():
    requests, logged = enforce_day()
    baseline = as_observed(requests, logged, requests, Pricer(PRICES))
    rows = baseline.requests.to_dicts()
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert rows[0] == requests.row(0, named=True)  # went upstream as recorded
    # Answered from the cache: the answered call's usage, cost and latency.
    assert (rows[1]["outcome"], rows[1]["cost_usd"], rows[1]["cost_source"]) == ("ok", 0.0125, "computed")
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"], rows[1]["latency_ms"]) == (1000, 100, 900.0)
    assert rows[1]["prompt_hash"] == "p1" and rows[1]["ts"] == at(1)  # still its own request
    # Routed: back at the model the client named, the same tokens at its price.
    assert (rows[2]["model_requested"], rows[2]["model"]) == ("gpt-4o", "gpt-4o")
    assert rows[2]["cost_usd"] == pytest.approx(cost_at("gpt-4o", 1000, 100))
    assert rows[2]["cost_usd"] > 10 * 0.0002
    # Blocked: never sent, cost unknown rather than $0.
    assert rows[3]["cost_usd"] is None and rows[3]["outcome"] == "blocked"
    # A shadow-mode decision changed nothing: the row stays as recorded.
    assert rows[4] == requests.row(4, named=True)
    assert (baseline.cached, baseline.routed, baseline.unsent, baseline.cached_without_source) == (1, 1, 1, 0)


def test_a_hit_whose_answered_call_is_gone_keeps_its_cost_and_is_counted():
    requests, logged = enforce_day()
    baseline = as_observed(requests.filter(pl.col("id") != "r0"), logged, requests.head(0), Pricer(PRICES))
    row = baseline.requests.row(0, named=True)
    assert (row["id"], row["outcome"], row["cost_usd"], row["input_tokens"]) == ("r1", "ok", 0.0125, None)
    assert (baseline.cached, baseline.cached_without_source) == (0, 1)


def test_a_route_to_an_unpriced_model_has_no_cost_rather_than_a_guess():
    requests, logged = enforce_day()
    logged = logged.with_columns(
        pl.when(pl.col("id") == "r2").then(pl.lit("no-such-model")).otherwise(pl.col("model_from")).alias("model_from")
    )
    baseline = as_observed(requests, logged, requests, Pricer(PRICES))
    row = baseline.requests.row(2, named=True)
    assert (row["model_requested"], row["cost_usd"], row["cost_source"]) == ("no-such-model", None, "unpriced")
    assert (baseline.routed, baseline.unpriced_routes) == (0, 1)


def test_simulating_an_enforce_day_predicts_the_saving_enforce_mode_made_without_counting_it_twice():
    """Three equal calls; enforce mode answered the last two from the cache. Simulated from the
    rows as recorded the baseline is one call and nothing is saved; read back, the baseline is
    three calls and the cache saves two."""
    policy = parse_policy('[cache.exact]\nname = "exact"\nttl = "1h"\n')
    requests = requests_frame([{}, {"outcome": "cached", **NOT_SENT}, {"outcome": "cached", **NOT_SENT}])
    logged = decisions(
        [
            decision("r0", "exact_cache", "miss", policy="exact"),
            decision("r1", "exact_cache", "hit", policy="exact", matched_id="r0", saving_usd=0.01),
            decision("r2", "exact_cache", "hit", policy="exact", matched_id="r0", saving_usd=0.01),
        ]
    )
    as_recorded = simulate(policy, requests, prices=PRICES).totals
    assert as_recorded["baseline_usd"] == pytest.approx(0.01)
    baseline = as_observed(requests, logged, requests, Pricer(PRICES)).requests
    totals = simulate(policy, baseline, prices=PRICES).totals
    assert totals["baseline_usd"] == pytest.approx(0.03)
    assert totals["saving_usd"] == pytest.approx(0.02)
    assert totals["cache_hits"] == 2


def test_realised_counts_disagreements_and_simulated_decisions_no_proxy_logged():
    """Three equal calls in shadow mode; the proxy logged r1's hit, not r2's (it was not running),
    and a hit on r0 the simulation does not make: two differences, r2 listed as not logged."""
    policy = parse_policy('[cache.exact]\nname = "exact"\nttl = "1h"\n')
    requests = requests_frame([{}, {}, {}])
    logged = decisions(
        [
            {**decision("r0", "exact_cache", "hit", policy="exact", matched_id="r9"), "mode": "shadow"},
            {
                **decision("r1", "exact_cache", "hit", policy="exact", matched_id="r0", saving_usd=0.01),
                "mode": "shadow",
            },
        ]
    )
    baseline = as_observed(requests, logged, requests, Pricer(PRICES))
    view = realised(baseline, logged, simulate(policy, baseline.requests, prices=PRICES))
    rows = {r["mode"]: r for r in view.rows.to_dicts()}
    assert (rows["shadow"]["simulated"], rows["shadow"]["decided"], rows["shadow"]["differ"]) == (1, 2, 1)
    assert rows["shadow"]["simulated_usd"] == pytest.approx(0.01) and rows["shadow"]["acted"] == 0
    assert (rows["not logged"]["simulated"], rows["not logged"]["decided"], rows["not logged"]["differ"]) == (1, 0, 1)
    assert view.totals["differ"] == 2 and view.totals["realised_usd"] == 0
