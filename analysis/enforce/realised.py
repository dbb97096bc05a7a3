"""Realised against simulated: what shadow and enforce mode did, beside what the simulation of the
same calls predicted, per policy entry.

The period is the one the policy ran live: from the first to the last row of `decisions` in the
range asked for. Its recorded calls are read back as the calls they stood for
(analysis.simulate.baseline: a cache-answered call at its answered call's cost, a routed call at
the model the client named) and simulated with the policy file, as `simulate` does: one decision
code path, so in shadow mode the live decisions equal the simulated ones (parity), and in enforce
mode they also acted. For each entry and mode, one row:

- `simulated`, `simulated_usd`: calls the simulation says the entry changes, and its saving;
  `prevented_usd`: the recorded cost of the calls it says a budget blocks (spend prevented,
  unanswered: not a saving);
- `decided`: calls the entry decided live (rows of `decisions` other than misses), `differ`:
  live and simulated decisions that disagree (policy, action, matched call, target model);
- `acted`: in enforce mode, calls the decision really changed (answered from the cache, sent to
  another model, refused); `realised_usd`: what that saved. A cache hit saved exactly the
  answered call's recorded cost; a routed or downgraded call saved its cost at the model the
  client named (the same tokens at that model's list price: an estimate) minus its recorded cost;
- `unanswered`: calls a budget blocked or a rate limit throttled. Not a saving: spend
  prevented, unanswered, with no cost known (never sent).

Simulated calls with no live row of their entry are listed under mode `not logged`. Fallback
rows (rescued failures) are not part of this view: `simulate` reports what fallback rules rescue.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from analysis.enforce.decisions import PARITY_COLUMNS, decision_rows
from analysis.simulate.baseline import Baseline
from analysis.simulate.policy import Policy
from analysis.simulate.results import SimulationResult

NOT_LOGGED = "not logged"
# The saving the simulation credits an action with (replay.DECISION_SCHEMA); a block's is
# spend prevented (blocked_spend_usd), not a saving.
SAVING_COLUMN = {
    "hit": "saving_cache",
    "route": "saving_routing",
    "batch": "saving_batch",
    "downgrade": "saving_budget",
}
COLUMNS = {
    "policy": pl.Utf8,
    "kind": pl.Utf8,
    "mode": pl.Utf8,
    "simulated": pl.Int64,
    "simulated_usd": pl.Float64,
    "prevented_usd": pl.Float64,
    "decided": pl.Int64,
    "differ": pl.Int64,
    "acted": pl.Int64,
    "realised_usd": pl.Float64,
    "unanswered": pl.Int64,
}


@dataclass
class Realised:
    start: datetime | None  # the period: [first decision, last decision + 1 µs) (None: no decisions)
    end: datetime | None
    days: list[str]  # the days (UTC) with decisions
    calls: int  # recorded calls in the period
    rows: pl.DataFrame  # COLUMNS, one row per (policy entry, kind, mode), in the policy's order
    totals: dict  # the sums of the money and count columns
    notes: list[str]


def period(decisions: pl.DataFrame) -> tuple[datetime, datetime]:
    """The period a policy ran live: [first decision, last decision + 1 µs), for `decisions` not empty."""
    ts = decisions["ts"].sort()
    return ts[0], ts[-1] + timedelta(microseconds=1)


def acted_rows(policy: Policy, simulated: pl.DataFrame) -> pl.DataFrame:
    """The simulation's decisions as rows of `decisions` (analysis.enforce.decisions.decision_rows,
    the rows shadow mode logs), misses left out, each with the saving the simulation credits."""
    rows = []
    interesting = simulated.filter(
        (pl.col("disposition") != "upstream")
        | pl.any_horizontal(pl.col(c).is_not_null() for c in ("routed_by", "batch_by", "budget_by", "throttled_by"))
    )
    for decision in interesting.iter_rows(named=True):
        for row in decision_rows(decision, policy, None, lambda name: "shadow"):
            if row["action"] == "miss":
                continue
            column = SAVING_COLUMN.get(row["action"])
            row["simulated_usd"] = decision[column] if column else None
            row["prevented_usd"] = decision["blocked_spend_usd"] if row["action"] == "block" else None
            rows.append(row)
    schema = {c: pl.Utf8 for c in PARITY_COLUMNS} | {"simulated_usd": pl.Float64, "prevented_usd": pl.Float64}
    return pl.DataFrame([{c: r[c] for c in schema} for r in rows], schema=schema)


def realised(baseline: Baseline, logged: pl.DataFrame, simulation: SimulationResult | None) -> Realised:
    """The comparison for the period of `logged` (its `decisions` rows): `baseline` holds its calls
    as recorded and as read back, `simulation` is the policy run over `baseline.requests` (None:
    live figures only)."""
    recorded = baseline.recorded
    live = logged.filter((pl.col("action") != "miss") & (pl.col("kind") != "fallback"))
    outcome = recorded.select("id", "outcome", "model_requested", pl.col("cost_usd").alias("recorded_usd"))
    base = baseline.requests.select("id", pl.col("cost_usd").alias("baseline_usd"))
    live = live.join(outcome, on="id", how="left").join(base, on="id", how="left")
    acted = (
        (pl.col("mode") == "enforce")
        & (
            ((pl.col("action") == "hit") & (pl.col("outcome") == "cached"))
            | (pl.col("action").is_in(["route", "downgrade"]) & (pl.col("model_requested") == pl.col("model_to")))
            | ((pl.col("action") == "block") & (pl.col("outcome") == "blocked"))
            | ((pl.col("action") == "throttle") & (pl.col("outcome") == "throttled"))
        )
    ).fill_null(False)
    saved = (
        pl.when(pl.col("action") == "hit")
        .then(pl.col("saving_usd"))
        .when(pl.col("action").is_in(["route", "downgrade"]))
        .then(pl.col("baseline_usd") - pl.col("recorded_usd"))
    )
    live = live.with_columns(
        acted.alias("acted"),
        pl.when(acted).then(saved).alias("realised_usd"),
        (acted & pl.col("action").is_in(["block", "throttle"])).alias("unanswered"),
    )
    live_sums = live.group_by("policy", "kind", "mode").agg(
        pl.len().alias("decided"),
        pl.col("acted").sum().cast(pl.Int64).alias("acted"),
        _sum_or_null("realised_usd"),
        pl.col("unanswered").sum().cast(pl.Int64).alias("unanswered"),
    )
    keys = live.select(*PARITY_COLUMNS, "mode")
    if simulation is not None:
        predicted = acted_rows(simulation.policy, simulation.decisions)
        # A simulated decision counts under the mode its entry had live for that call.
        modes = live.select("id", "policy", "mode").unique(["id", "policy"])
        predicted = predicted.join(modes, on=["id", "policy"], how="left").with_columns(
            pl.col("mode").fill_null(NOT_LOGGED)
        )
        sim_sums = predicted.group_by("policy", "kind", "mode").agg(
            pl.len().alias("simulated"), _sum_or_null("simulated_usd"), _sum_or_null("prevented_usd")
        )
        only_live = keys.join(predicted.select(*PARITY_COLUMNS), on=list(PARITY_COLUMNS), how="anti", nulls_equal=True)
        only_sim = predicted.select(*PARITY_COLUMNS, "mode").join(
            keys.select(PARITY_COLUMNS), on=list(PARITY_COLUMNS), how="anti", nulls_equal=True
        )
        differ = pl.concat([only_live, only_sim]).group_by("policy", "kind", "mode").agg(pl.len().alias("differ"))
    else:
        keyed = ["policy", "kind", "mode"]
        sim_sums = pl.DataFrame(schema={c: COLUMNS[c] for c in (*keyed, "simulated", "simulated_usd", "prevented_usd")})
        differ = pl.DataFrame(schema={c: COLUMNS[c] for c in (*keyed, "differ")})
    rows = _table(simulation.policy if simulation else None, live_sums, sim_sums, differ, simulation is not None)
    totals: dict[str, Any] = {
        c: rows[c].sum()
        for c in (
            "simulated",
            "simulated_usd",
            "prevented_usd",
            "decided",
            "differ",
            "acted",
            "realised_usd",
            "unanswered",
        )
    }
    if simulation is None:
        totals.update(simulated=None, simulated_usd=None, prevented_usd=None, differ=None)
    days = sorted({d.isoformat() for d in logged["ts"].dt.date().to_list()})
    start, end = period(logged) if logged.height else (None, None)
    return Realised(
        start=start,
        end=end,
        days=days,
        calls=recorded.height,
        rows=rows,
        totals=totals,
        notes=_notes(baseline, simulation is not None),
    )


def _sum_or_null(column: str) -> pl.Expr:
    """The sum of a money column; NULL (not $0) when no row has a figure (a block saves nothing)."""
    return pl.when(pl.col(column).count() > 0).then(pl.col(column).sum()).alias(column)


def _table(
    policy: Policy | None, live: pl.DataFrame, simulated: pl.DataFrame, differ: pl.DataFrame, with_simulation: bool
) -> pl.DataFrame:
    """One row per (entry, kind, mode), in the policy's order (by name without a policy)."""
    entries = (*policy.in_order(), *policy.fallbacks) if policy is not None else ()
    order = {entry.name: i for i, entry in enumerate(entries)}
    key = ["policy", "kind", "mode"]
    keys = pl.concat([live.select(key), simulated.select(key)]).unique()
    table = (
        keys.join(simulated, on=key, how="left", nulls_equal=True)
        .join(live, on=key, how="left", nulls_equal=True)
        .join(differ, on=key, how="left", nulls_equal=True)
        .with_columns(
            pl.col("policy").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_at"),
            pl.col("mode").replace_strict({"shadow": 0, "enforce": 1}, default=2, return_dtype=pl.Int64).alias("_mode"),
        )
    )
    fill = {"decided": 0, "acted": 0, "unanswered": 0} | ({"simulated": 0, "differ": 0} if with_simulation else {})
    table = table.with_columns(pl.col(c).fill_null(v) for c, v in fill.items())
    return table.sort("_at", "policy", "_mode").select([pl.col(c).cast(t) for c, t in COLUMNS.items()])


def _notes(baseline: Baseline, with_simulation: bool) -> list[str]:
    notes = [
        "The realised saving (realised_usd) of a cache hit is the recorded cost of the call whose answer "
        "it served (exact; for the semantic cache an estimate, and the answer's quality: unverified, it was "
        "given to a similar prompt); of a routed or downgraded call, its tokens priced at the model the "
        "client named minus its recorded cost (an estimate: models count and spend tokens differently).",
        "Unanswered calls were refused (budget blocked, rate limit throttled): spend prevented, not a "
        "saving; never sent, so their cost is unknown.",
    ]
    if with_simulation:
        notes.append(
            "The simulated figures come from the simulation of the same calls, enforce-mode rows read "
            f"back as the calls they stood for ({baseline.cached:,} answered from the cache, "
            f"{baseline.routed:,} routed or downgraded, {baseline.unsent:,} refused with no cost known); "
            "it starts with an empty cache and empty budget windows at the period's first call, as a "
            "proxy started then would."
        )
    else:
        notes.append("Give the policy file (--policy) to compare with its simulation of the same calls.")
    if baseline.cached_without_source or baseline.unpriced_routes:
        notes.append(
            f"{baseline.cached_without_source:,} cache hits served a call no longer recorded (kept at "
            f"their saving, without tokens); {baseline.unpriced_routes:,} routed calls named a model "
            "without a price (no realised saving)."
        )
    return notes
