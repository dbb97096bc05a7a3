"""Calls enforce mode changed, read back as the calls they stood for: the baseline the simulator expects.

The simulator's baseline is each call's recorded cost, as it went upstream. In enforce mode some
calls did not go upstream as the client sent them: a cache hit was answered from a stored answer
(its `requests` row: outcome `cached`, no tokens, cost 0), a routing rule or a budget downgrade
sent it to another model (its row records that model and its cost), a budget or a rate limit
refused it (outcome `blocked` / `throttled`, cost 0). Simulating those days from the rows as
recorded would count a saving twice (a cached row already costs nothing) or miss it (a routed
row already costs the cheaper model). `as_observed` gives each such row back what it stood for:

- answered from a cache: the answered call's own tokens, model, outcome and latency (the
  `decisions` row's `matched_id`), at the cost the decision recorded as its saving (the stored
  answer's cost);
- routed or downgraded: the model the client named (`decisions.model_from`), at that model's list
  price for the tokens the call used on the target (`Pricer.costs_at`, the simulator's own
  arithmetic). An estimate: another model counts and spends tokens differently;
- blocked or throttled: never sent, so nothing is known of its cost: cost_usd is NULL (the
  simulator counts it as unbilled, decides it again and credits it with no money).

Every other row is returned unchanged, in the same order.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from analysis.simulate.pricer import Pricer, PricingRows

if TYPE_CHECKING:
    from analysis.store.datadir import Store

CACHE_KINDS = ("exact_cache", "semantic_cache")
# What a cached row takes from the call whose answer it was served: how that call went upstream.
ANSWERED_COLUMNS = (
    "status",
    "outcome",
    "finish_reasons",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "image_input_tokens",
    "image_output_tokens",
    "usage_other_models",
    "usage_source",
    "cost_source",
    "price_version",
    "latency_ms",
    "ttft_ms",
    "response_bytes",
)
UNSENT_OUTCOMES = ("blocked", "throttled")


@dataclass
class Baseline:
    """The requests as the simulator reads them, and how many rows were read back, by how."""

    requests: pl.DataFrame
    recorded: pl.DataFrame  # the same rows as recorded
    cached: int  # answered from a cache: given the answered call's tokens and cost
    cached_without_source: int  # ... whose answered call is not recorded (purged): its cost only
    routed: int  # re-priced at the model the client named (an estimate)
    unpriced_routes: int  # ... whose named model has no price: cost unknown (NULL)
    unsent: int  # blocked or throttled: cost unknown (NULL)


def enforced_hits(decisions: pl.DataFrame) -> pl.DataFrame:
    """(id, matched_id, saving_usd) of the cache hits enforce mode decided."""
    hit = (pl.col("mode") == "enforce") & pl.col("kind").is_in(CACHE_KINDS) & (pl.col("action") == "hit")
    return decisions.filter(hit & pl.col("matched_id").is_not_null()).select("id", "matched_id", "saving_usd")


def enforced_moves(decisions: pl.DataFrame) -> pl.DataFrame:
    """(id, model_from, model_to) of the calls a routing rule or budget downgrade moved in enforce
    mode: the first move's model_from (what the client named) and the last move's model_to."""
    moved = (pl.col("mode") == "enforce") & (
        ((pl.col("kind") == "routing") & (pl.col("action") == "route"))
        | ((pl.col("kind") == "budget") & (pl.col("action") == "downgrade"))
    )
    rows = decisions.filter(moved).with_columns((pl.col("kind") == "budget").alias("_later"))
    return (
        rows.sort("_later")
        .group_by("id", maintain_order=True)
        .agg(pl.col("model_from").first(), pl.col("model_to").last())
    )


def as_observed(requests: pl.DataFrame, decisions: pl.DataFrame, sources: pl.DataFrame, pricer: Pricer) -> Baseline:
    """`requests` with the rows enforce mode changed read back as the calls they stood for.

    `decisions` are the `decisions` rows of these requests; `sources` the recorded rows of the
    calls whose answers cache hits served (they may lie before `requests`)."""
    frame = requests.with_row_index("_row")
    answered, without_source = _answered(frame, decisions, sources)
    frame = _patch(frame, answered)
    routed = _routed(frame, decisions, pricer)
    frame = _patch(frame, routed)
    unsent = pl.col("outcome").is_in(UNSENT_OUTCOMES).fill_null(False) & (pl.col("cost_source") == "not_sent")
    unsent_count = int(frame.select(unsent.sum()).item())
    frame = frame.with_columns(pl.when(unsent).then(None).otherwise(pl.col("cost_usd")).alias("cost_usd"))
    priced = int(routed["cost_usd"].is_not_null().sum())
    return Baseline(
        requests=frame.drop("_row"),
        recorded=requests,
        cached=answered.height - without_source,
        cached_without_source=without_source,
        routed=priced,
        unpriced_routes=routed.height - priced,
        unsent=unsent_count,
    )


def _answered(frame: pl.DataFrame, decisions: pl.DataFrame, sources: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The patch of the rows answered from a cache: their own request, the answered call's usage,
    outcome and latency, at the cost the hit recorded as its saving; and how many of them have no
    recorded answered call (they keep only that cost)."""
    hits = enforced_hits(decisions).unique("id", keep="first")
    answered = (
        frame.filter(pl.col("outcome") == "cached")
        .select("_row", "id")
        .join(hits, on="id", how="inner")
        .join(
            sources.select(
                "id",
                *[pl.col(c).cast(frame.schema[c]) for c in ANSWERED_COLUMNS],
                pl.col("cost_usd").alias("_source_cost"),
            ),
            left_on="matched_id",
            right_on="id",
            how="left",
        )
    )
    found = answered.filter(pl.col("outcome").is_not_null())
    missing = answered.filter(pl.col("outcome").is_null())
    patch = found.select("_row", *ANSWERED_COLUMNS, pl.coalesce("saving_usd", "_source_cost").alias("cost_usd"))
    patch = patch.vstack(
        missing.select(
            "_row",
            *[pl.lit(None).cast(frame.schema[c]).alias(c) for c in ANSWERED_COLUMNS],
            pl.col("saving_usd").alias("cost_usd"),
        ).with_columns(pl.lit("ok").alias("outcome"), pl.lit("computed").alias("cost_source"))
    )
    return patch, missing.height


def _routed(frame: pl.DataFrame, decisions: pl.DataFrame, pricer: Pricer) -> pl.DataFrame:
    """The patch of the rows a routing rule or downgrade moved (and that went to its target):
    back at the model the client named, the same tokens at its list price (NULL: no price)."""
    moves = enforced_moves(decisions).filter(pl.col("model_from").is_not_null())
    moved = frame.join(moves, on="id", how="inner").filter(pl.col("model_requested") == pl.col("model_to"))
    costs = np.full(moved.height, np.nan)
    for (model_from,), group in moved.with_row_index("_at").group_by("model_from"):
        costs[group["_at"].to_numpy()] = pricer.costs_at(PricingRows.from_frame(group), model_from, None)
    priced = ~np.isnan(costs)
    return moved.select(
        "_row",
        pl.col("model_from").alias("model_requested"),
        pl.col("model_from").alias("model"),
        pl.Series("cost_usd", costs, dtype=pl.Float64, nan_to_null=True),
        pl.Series("cost_source", np.where(priced, "computed", "unpriced"), dtype=pl.Utf8),
    )


def _patch(frame: pl.DataFrame, patch: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the columns of `patch` replaced on the rows it names (`_row`)."""
    if patch.height == 0:
        return frame
    columns = [c for c in patch.columns if c != "_row"]
    patch = patch.select("_row", *[pl.col(c).cast(frame.schema[c]).alias(f"_new_{c}") for c in columns])
    joined = frame.join(
        patch.with_columns(pl.lit(True).alias("_patched")), on="_row", how="left", maintain_order="left"
    )
    hit = pl.col("_patched").fill_null(False)
    return joined.with_columns(
        [pl.when(hit).then(pl.col(f"_new_{c}")).otherwise(pl.col(c)).alias(c) for c in columns]
    ).select(frame.columns)


def read_baseline(store: "Store", start: datetime | None, end: datetime | None, pricer: Pricer) -> Baseline:
    """The recorded calls in [start, end) as the simulator reads them (`as_observed`), with the
    answered calls of cache hits read from the whole store when they lie before `start`."""
    requests = store.requests_frame(start, end)
    decisions = store.decisions_frame(start, end)
    wanted = set(enforced_hits(decisions)["matched_id"].to_list()) - set(requests["id"].to_list())
    sources = requests
    if wanted:
        earlier = store.requests_frame(None, start).filter(pl.col("id").is_in(sorted(wanted)))
        sources = pl.concat([requests, earlier])
    return as_observed(requests, decisions, sources, pricer)
