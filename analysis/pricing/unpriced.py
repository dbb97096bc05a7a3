"""Which recorded models have no price: what `llm-shadow prices missing` lists.

A call whose model the price table did not know is stored with cost_usd NULL and
cost_source 'unpriced' (never $0). This groups those calls by provider and model, and says
for each whether the current table (after a `prices import`) now prices it, in which case
`llm-shadow reprice` fills in the stored costs.
"""

import duckdb
import polars as pl

from analysis.pricing.table import PriceTable
from analysis.store.datadir import query_frame

_UNPRICED_SQL = """
    SELECT provider,
           coalesce(model, model_requested) AS model,
           nullif(model_requested, coalesce(model, model_requested)) AS model_requested,
           count(*) AS calls,
           coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens,
           strftime(max(ts), '%Y-%m-%d') AS last_seen
    FROM requests
    WHERE cost_source = 'unpriced'
    GROUP BY ALL
    ORDER BY calls DESC, provider, model
"""


def unpriced_models(con: duckdb.DuckDBPyConnection, table: PriceTable) -> pl.DataFrame:
    """One row per (provider, model, model_requested) of unpriced calls, with `priced_now`:
    the price the current table would use (provider/model), or None. model_requested is
    shown only where it differs from model (an Azure deployment name, an alias)."""
    frame = query_frame(con, _UNPRICED_SQL)
    priced_now = []
    for provider, model, requested in frame.select("provider", "model", "model_requested").iter_rows():
        price = table.resolve(model, provider) or table.resolve(requested, provider)
        priced_now.append(price.label if price else None)
    return frame.with_columns(pl.Series("priced_now", priced_now, dtype=pl.Utf8))
