"""Recompute the cost of stored calls with the current price table.

After a price import (a newer LiteLLM map, a negotiated price, a missing model added), the
rows already stored still carry the cost, cost_source and price_version of the table that
priced them when they were recorded. `reprice_frame` recomputes those three columns for a
frame of `requests` rows, exactly as the recorder would now (`PriceTable.cost`), except
that a cost the provider reported itself (cost_source "provider") is kept: it is the
provider's bill, not ours to recompute. `reprice_store` applies it to every stored segment
through `Store.rewrite_requests`.
"""

from dataclasses import dataclass, field

import polars as pl

from analysis.parsers.exchange import Usage, other_models_from_json
from analysis.pricing.table import PriceTable
from analysis.store.schema import REQUESTS

_COLUMN_TYPES = {c.name: c.polars_type for c in REQUESTS}
_INPUT_COLUMNS = [
    "provider",
    "model",
    "model_requested",
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
    "service_tier",
    "batch",
    "cost_usd",
    "cost_source",
    "price_version",
]


def reprice_frame(frame: pl.DataFrame, table: PriceTable) -> pl.DataFrame:
    """The frame with cost_usd, cost_source and price_version recomputed with `table`."""
    costs, sources, versions = [], [], []
    for row in frame.select(_INPUT_COLUMNS).iter_rows(named=True):
        if row["cost_source"] == "provider":
            costs.append(row["cost_usd"])
            sources.append(row["cost_source"])
            versions.append(row["price_version"])
            continue
        usage = Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cached_input_tokens=row["cached_input_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            cache_write_1h_tokens=row["cache_write_1h_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
            audio_input_tokens=row["audio_input_tokens"] or 0,
            audio_output_tokens=row["audio_output_tokens"] or 0,
            image_input_tokens=row["image_input_tokens"] or 0,
            image_output_tokens=row["image_output_tokens"] or 0,
        )
        cost = table.cost(
            provider=row["provider"],
            model=row["model"],
            model_requested=row["model_requested"],
            usage=usage,
            service_tier=row["service_tier"],
            batch=bool(row["batch"]),
            warn_unpriced=False,  # the caller reports how many stay unpriced
            other_models=other_models_from_json(row["usage_other_models"]),
        )
        costs.append(cost.cost_usd)
        sources.append(cost.cost_source)
        versions.append(cost.price_version)
    return frame.with_columns(
        pl.Series("cost_usd", costs, dtype=_COLUMN_TYPES["cost_usd"]),
        pl.Series("cost_source", sources, dtype=_COLUMN_TYPES["cost_source"]),
        pl.Series("price_version", versions, dtype=_COLUMN_TYPES["price_version"]),
    )


@dataclass
class RepriceSummary:
    rows: int = 0
    changed: int = 0  # rows whose cost_usd or cost_source changed
    sources: dict[str, int] = field(default_factory=dict)  # cost_source -> rows, after


def reprice_store(store, table: PriceTable) -> RepriceSummary:
    """Reprice every stored call (store: analysis.store.datadir.Store); returns what changed."""
    summary = RepriceSummary()

    def transform(frame: pl.DataFrame) -> pl.DataFrame:
        new = reprice_frame(frame, table)
        summary.rows += new.height
        before = frame.select("cost_usd", "cost_source")
        after = new.select("cost_usd", "cost_source")
        same = (before["cost_usd"].eq_missing(after["cost_usd"])) & (
            before["cost_source"].eq_missing(after["cost_source"])
        )
        summary.changed += int((~same).sum())
        for source, count in new.group_by("cost_source").len().iter_rows():
            summary.sources[source] = summary.sources.get(source, 0) + count
        return new

    store.rewrite_requests(transform)
    return summary
