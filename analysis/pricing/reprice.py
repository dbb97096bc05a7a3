"""Recompute the cost of stored calls with the current price table.

After a price import (a newer LiteLLM map, a negotiated price, a missing model added), the
rows already stored still carry the cost, cost_source and price_version of the table that
priced them when they were recorded. `reprice_frame` recomputes those three columns, and the
check by the other table (`price_check`, see analysis.pricing.check), for a frame of `requests`
rows, exactly as the recorder would now (`Pricing.cost`, with either table primary), except
that a cost the provider reported itself (cost_source "provider") is kept: it is the
provider's bill, not ours to recompute. `reprice_store` applies it to every stored segment
through `Store.rewrite_requests`.
"""

from dataclasses import dataclass, field

import polars as pl

from analysis.parsers.exchange import Usage, other_models_from_json
from analysis.pricing.check import Pricing
from analysis.pricing.genai_table import GenaiPricesTable
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
    "ts",
    "cost_usd",
    "cost_source",
    "price_version",
    "price_check",
    "price_check_cost_usd",
    "price_check_version",
]
_OUTPUT_COLUMNS = [
    "cost_usd",
    "cost_source",
    "price_version",
    "price_check",
    "price_check_cost_usd",
    "price_check_version",
]


def reprice_frame(frame: pl.DataFrame, prices: Pricing | PriceTable) -> pl.DataFrame:
    """The frame with cost_usd, cost_source, price_version and the price check recomputed with
    `prices` (a PriceTable alone is the LiteLLM table as primary, genai-prices checking it)."""
    if isinstance(prices, PriceTable):
        prices = Pricing(prices, GenaiPricesTable())
    out: dict[str, list] = {name: [] for name in _OUTPUT_COLUMNS}
    for row in frame.select(_INPUT_COLUMNS).iter_rows(named=True):
        if row["cost_source"] == "provider":
            for name in _OUTPUT_COLUMNS:
                out[name].append(row[name])
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
        checked = prices.cost(
            provider=row["provider"],
            model=row["model"],
            model_requested=row["model_requested"],
            usage=usage,
            service_tier=row["service_tier"],
            batch=bool(row["batch"]),
            warn_unpriced=False,  # the caller reports how many stay unpriced
            other_models=other_models_from_json(row["usage_other_models"]),
            at=row["ts"],
        )
        out["cost_usd"].append(checked.cost.cost_usd)
        out["cost_source"].append(checked.cost.cost_source)
        out["price_version"].append(checked.cost.price_version)
        out["price_check"].append(checked.check)
        out["price_check_cost_usd"].append(checked.check_cost_usd)
        out["price_check_version"].append(checked.check_version)
    return frame.with_columns(pl.Series(name, out[name], dtype=_COLUMN_TYPES[name]) for name in _OUTPUT_COLUMNS)


@dataclass
class RepriceSummary:
    rows: int = 0
    changed: int = 0  # rows whose cost_usd or cost_source changed
    sources: dict[str, int] = field(default_factory=dict)  # cost_source -> rows, after


def reprice_store(store, table: Pricing | PriceTable) -> RepriceSummary:
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
