"""`llm-shadow prices compare`: both price tables' per-token rates for a model, side by side.

One row per model: the LiteLLM table's and genai-prices' rates (USD per million tokens) for
input, cache reads, cache writes and output at the base prompt size, and a note naming what
one table has and the other lacks, above all a long-context tier (Claude Sonnet 4.x above
200k input tokens is in genai-prices, not in LiteLLM's map): such a call is priced by the
primary table alone, and the note says so rather than mixing the two tables' rates.
"""

from collections.abc import Mapping
from typing import Any

import duckdb
import polars as pl

from analysis.pricing.check import Pricing
from analysis.store.datadir import query_frame

KINDS = ("input", "cached_input", "cache_write", "output")


def litellm_rates(
    pricing: Pricing, model: str, provider: str | None
) -> tuple[str | None, Mapping[str, float], Mapping[int, Mapping[str, float]]]:
    """(label, base rates, {threshold: rates}) of the LiteLLM table, or (None, {}, {})."""
    price = pricing.litellm.resolve(model, provider)
    if price is None:
        return None, {}, {}
    base = price.effective_rates("standard", 0)
    tiers = {t: price.effective_rates("standard", t + 1) for t in price.thresholds}
    return price.label, base, tiers


def genai_rates(pricing: Pricing, model: str, provider: str | None) -> tuple[str | None, dict, dict]:
    """(label, base rates, {threshold: rates}) of genai-prices, or (None, {}, {})."""
    found = pricing.genai.rates(model, provider)
    if found is None:
        return None, {}, {}
    tiers: dict[int, dict[str, float]] = {}
    for kind, steps in found.tiers.items():
        for start, rate in steps:
            tiers.setdefault(start, {})[kind] = rate
    return found.label, found.rates, tiers


def compare_model(pricing: Pricing, model: str, provider: str | None) -> dict[str, Any]:
    """One row: both tables' rates and a note on what differs in kind (tiers, a missing table)."""
    l_label, l_base, l_tiers = litellm_rates(pricing, model, provider)
    g_label, g_base, g_tiers = genai_rates(pricing, model, provider)
    row: dict[str, Any] = {"provider": provider, "model": model, "litellm": l_label, "genai_prices": g_label}
    for kind in KINDS:
        row[f"{kind}_litellm"] = l_base.get(kind)
        row[f"{kind}_genai"] = g_base.get(kind)
    notes = []
    if l_label is None or g_label is None:
        missing = "litellm" if l_label is None else "genai-prices"
        notes.append(f"{missing} has no price for it")
    else:
        for start in sorted(set(g_tiers) - set(l_tiers)):
            rates = ", ".join(f"{k} {v:g}" for k, v in g_tiers[start].items())
            notes.append(
                f"genai-prices has a tier above {start:,} input tokens ({rates}) that litellm lacks; "
                f"with {pricing.primary_name} primary such calls are priced by {pricing.primary_name} alone"
            )
        for start in sorted(set(l_tiers) - set(g_tiers)):
            notes.append(f"litellm has a tier above {start:,} input tokens that genai-prices lacks")
        for kind in KINDS:
            a, b = l_base.get(kind), g_base.get(kind)
            if a is not None and b is not None and abs(a - b) > 0.01 * max(a, b):
                notes.append(f"{kind} differs")
    row["note"] = "; ".join(notes) or "same rates"
    return row


def flagged_models(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Recorded (provider, model) pairs whose calls the two tables did not agree on."""
    return query_frame(
        con,
        """
        SELECT provider, model, price_check, count(*) AS calls,
               round(sum(cost_usd), 6) AS cost_usd, round(sum(price_check_cost_usd), 6) AS check_cost_usd
        FROM requests
        WHERE price_check IN ('differ', 'one-sided')
        GROUP BY ALL
        ORDER BY calls DESC, provider, model
        """,
    )


def compare_recorded(con: duckdb.DuckDBPyConnection, pricing: Pricing) -> pl.DataFrame:
    """compare_model for every recorded model the two tables disagree on, with its call counts."""
    rows = []
    for flagged in flagged_models(con).iter_rows(named=True):
        row = compare_model(pricing, flagged["model"], flagged["provider"])
        rows.append(
            {
                **row,
                "price_check": flagged["price_check"],
                "calls": flagged["calls"],
                "cost_usd": flagged["cost_usd"],
                "check_cost_usd": flagged["check_cost_usd"],
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
