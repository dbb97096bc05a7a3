"""`llm-shadow prices show`: a model's rates per 1M tokens as a table or a JSON document."""

from typing import Any

from rich.table import Table

from reports.tables import shown

PRICE_KINDS = (
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning_output",
    "input_audio",
    "output_audio",
    "input_image",
    "output_image",
)
PRICE_HEADERS = (
    "input",
    "cached input",
    "cache write 5m",
    "cache write 1h",
    "output",
    "reasoning",
    "audio in",
    "audio out",
    "image in",
    "image out",
)
DERIVED_NOTE = (
    "* not given by the table: derived as docs/pricing.md says "
    "(cached -> input, cache write -> 1.25x/2x input for Claude, else input, "
    "reasoning -> output, audio and image -> input or output, other services and tiers -> standard)."
)


def rates_document(model: str, provider: str | None, price: Any, version: str, rows: list[dict]) -> dict:
    """The JSON of `prices show`: `rows` are `analysis.pricing.rates.rate_rows(price)`."""
    return {
        "model": model,
        "provider": provider,
        "resolved": price.label,
        "source": price.source,
        "mode": price.mode,
        "price_version": version,
        "usd_per_million_tokens": {r["rates"]: {k: r[k] for k in PRICE_KINDS} for r in rows},
        "derived": {r["rates"]: r["derived"] for r in rows},
    }


def rates_table(model: str, label: str, rows: list[dict]) -> Table:
    """One row per rate set; a derived rate (not given by the table) is marked with *."""
    out = Table(title=f"{shown(model)} -> {shown(label)}  (USD per 1M tokens)")
    out.add_column("rates", no_wrap=True)
    for header in PRICE_HEADERS:
        out.add_column(header, justify="right")
    for r in rows:
        out.add_row(shown(r["rates"]), *(f"{r[k]:g}" + (" *" if k in r["derived"] else "") for k in PRICE_KINDS))
    return out
