"""What a recorded request would have cost on another model, or at the batch price.

Routing and budget downgrades price the same request at another model's list price
(`PriceTable.resolve` finds the price; `ModelPrice.effective_rates` gives the rates of the
service and prompt-size tier, fallbacks included). Three things change against the record:

- The provider prompt-cache discount is lost: the cache belonged to the original model, so
  every input token is paid at the target's full input rate (no cached or cache-write tokens).
- Token counts are re-estimated when the target counts tokens differently: if its tiktoken
  encoding (analysis.tokens.encoding_name_for_model) differs from the original model's and the
  prompt and response texts were recorded, the recorded counts are scaled by the ratio of the
  two encodings' counts of the same texts. Without recorded texts the counts stay as recorded.
- The service tier falls back to standard (a priority or flex tier was the original's).

A batch candidate keeps its model and tokens; its cost is the recorded cost scaled by the ratio
of the batch price to the price it paid, or, when the policy gives a `discount`, the cost times
(1 - discount). Routed and batched, it pays the target's batch price.

Every cost is computed by numpy over arrays; one request is a one-row frame, so the
one-request path (enforce mode) and the batch simulator share the arithmetic bit for bit.
A cost that cannot be computed (the target has no price, the request has no token counts) is
NaN here and None in a decision: such a request is not routed or batched.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from analysis.pricing import ModelPrice, PriceTable, service_of
from analysis.schema import REQUESTS, polars_schema
from analysis.tokens import count_tokens, encoding_name_for_model

USAGE_COLUMNS = [
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
    "output_tokens", "reasoning_tokens",
]
PRICING_COLUMNS = ["provider", "model", "model_requested", "service_tier", "cost_usd", *USAGE_COLUMNS]
TEXT_COLUMNS = ["system_prompt", "prompt_text", "response_text"]
_SCHEMA = polars_schema(REQUESTS)


def one_row_frame(record: Mapping[str, Any]) -> pl.DataFrame:
    """A record as a one-row frame with the columns pricing reads."""
    schema = {c: _SCHEMA[c] for c in PRICING_COLUMNS} | {c: pl.Utf8 for c in TEXT_COLUMNS}
    return pl.DataFrame([{c: record.get(c) for c in schema}], schema=schema)


def _ints(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].fill_null(0).cast(pl.Int64).to_numpy()


def row_groups(frame: pl.DataFrame, columns: list[str]) -> list[tuple[tuple, np.ndarray]]:
    """(values of `columns`, row positions) for each distinct combination, in a fixed order."""
    if frame.height == 0:
        return []
    grouped = (
        frame.select(columns).with_row_index("_row")
        .group_by(columns, maintain_order=True).agg(pl.col("_row"))
    )
    return [
        (tuple(row[c] for c in columns), np.asarray(row["_row"], dtype=np.int64))
        for row in grouped.iter_rows(named=True)
    ]


class Pricer:
    """Prices requests at other models, with the price table and recorded texts."""

    def __init__(self, table: PriceTable):
        self.table = table
        self._prices: dict[tuple, ModelPrice | None] = {}
        self._levels: dict[tuple[int, str], tuple[np.ndarray, list[dict[str, float]]]] = {}
        self._token_counts: dict[tuple[str, str], int] = {}

    # -- prices ----------------------------------------------------------------------------
    def price_of(self, model: str, provider: str | None, record_provider: str | None = None) -> ModelPrice | None:
        """The price of `model`: as `provider` sells it when given, else as the request's own
        provider does, else as its maker does."""
        key = (model, provider, record_provider)
        if key not in self._prices:
            if provider is not None:
                found = self.table.resolve(model, provider)
            else:
                found = self.table.resolve(model, record_provider) if record_provider else None
                found = found or self.table.resolve(model, None)
            self._prices[key] = found
        return self._prices[key]

    def check_model(self, model: str, provider: str | None, policy, origin, key: str) -> None:
        """Raise the policy's error at `key` when `model` has no price."""
        if self.price_of(model, provider) is None and self.table.resolve(model, None) is None:
            where = f" at provider {provider}" if provider else ""
            raise policy.error(
                origin, key,
                f"model {model!r}{where} has no price in price table {self.table.version} "
                "(add one with: llm-shadow prices import FILE)",
            )

    def _rates(self, price: ModelPrice, service: str, input_tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row rates (USD per million tokens) of each token kind, by prompt-size tier."""
        key = (id(price), service)
        if key not in self._levels:
            thresholds = np.array(price.thresholds, dtype=np.int64)
            levels = [price.effective_rates(service, 0)]
            levels += [price.effective_rates(service, int(t) + 1) for t in thresholds]
            self._levels[key] = (thresholds, levels)
        thresholds, levels = self._levels[key]
        level = np.searchsorted(thresholds, input_tokens, side="left")  # thresholds below
        return {kind: np.array([lv[kind] for lv in levels])[level] for kind in levels[0]}

    def usage_cost(
        self, price: ModelPrice, service: str, input_tokens: np.ndarray, cached: np.ndarray,
        writes: np.ndarray, writes_1h: np.ndarray, output: np.ndarray, reasoning: np.ndarray,
    ) -> np.ndarray:
        """USD of these token counts at `price` (the formula of analysis.pricing)."""
        writes_1h = np.minimum(writes_1h, writes)
        reasoning = np.minimum(reasoning, output)
        r = self._rates(price, service, input_tokens)
        usd = np.maximum(input_tokens - cached - writes, 0) * r["input"]
        usd = usd + cached * r["cached_input"]
        usd = usd + (writes - writes_1h) * r["cache_write"]
        usd = usd + writes_1h * r["cache_write_1h"]
        usd = usd + (output - reasoning) * r["output"]
        usd = usd + reasoning * r["reasoning_output"]
        return usd / 1_000_000

    # -- token re-estimation -----------------------------------------------------------------
    def _count(self, text: str, encoding: str) -> int:
        key = (text, encoding)
        found = self._token_counts.get(key)
        if found is None:
            # count_tokens picks the encoding from a model name; these names map to it.
            found = self._token_counts[key] = count_tokens(text, "gpt-4o" if encoding == "o200k_base" else "gpt-4")
        return found

    def reestimated(self, frame: pl.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input tokens, output tokens, re-estimated?) of each row counted for `target`."""
        inputs, outputs = _ints(frame, "input_tokens"), _ints(frame, "output_tokens")
        changed = np.zeros(frame.height, dtype=bool)
        if not all(c in frame.columns for c in TEXT_COLUMNS):
            return inputs, outputs, changed
        target_encoding = encoding_name_for_model(target)
        models = frame["model"].to_list()
        system, prompt, response = (frame[c].to_list() for c in TEXT_COLUMNS)
        inputs, outputs = inputs.astype(np.float64), outputs.astype(np.float64)
        for i, model in enumerate(models):
            source_encoding = encoding_name_for_model(model)
            if source_encoding == target_encoding or prompt[i] is None:
                continue
            request_text = f"{system[i] or ''}\n{prompt[i]}"
            before = self._count(request_text, source_encoding)
            if before:
                inputs[i] *= self._count(request_text, target_encoding) / before
                changed[i] = True
            if response[i]:
                before = self._count(response[i], source_encoding)
                if before:
                    outputs[i] *= self._count(response[i], target_encoding) / before
        return np.rint(inputs).astype(np.int64), np.rint(outputs).astype(np.int64), changed

    # -- costs -----------------------------------------------------------------------------
    def costs_at(self, frame: pl.DataFrame, model: str, provider: str | None, batch: np.ndarray | bool = False) -> np.ndarray:
        """Cost of each row sent to `model` instead (standard, or batch price where `batch`);
        NaN where it cannot be priced."""
        out = np.full(frame.height, np.nan)
        if frame.height == 0:
            return out
        batch = np.broadcast_to(np.asarray(batch, dtype=bool), (frame.height,))
        inputs, outputs, _ = self.reestimated(frame, model)
        reasoning = _ints(frame, "reasoning_tokens")
        zeros = np.zeros(frame.height, dtype=np.int64)
        has_tokens = (frame["input_tokens"].is_not_null() | frame["output_tokens"].is_not_null()).to_numpy()
        for (record_provider,), rows in row_groups(frame, ["provider"]):
            price = self.price_of(model, provider, record_provider)
            if price is None:
                continue
            for is_batch in (False, True):
                selected = rows[has_tokens[rows] & (batch[rows] == is_batch)]
                if len(selected):
                    out[selected] = self.usage_cost(
                        price, "batch" if is_batch else "standard", inputs[selected], zeros[selected],
                        zeros[selected], zeros[selected], outputs[selected], reasoning[selected],
                    )
        return out

    def batch_costs(
        self, frame: pl.DataFrame, current: np.ndarray, routed_to: list[str | None],
        routed_provider: list[str | None], discount: float | None,
    ) -> np.ndarray:
        """Cost of each row sent through the batch API, `current` being its cost so far."""
        if discount is not None:
            return current * (1.0 - discount)
        out = np.full(frame.height, np.nan)
        targets = pl.DataFrame(
            {"_to": routed_to, "_provider": routed_provider}, schema={"_to": pl.Utf8, "_provider": pl.Utf8}
        )
        for (target, provider), rows in row_groups(targets, ["_to", "_provider"]):
            if target is None:
                continue
            out[rows] = self.costs_at(frame[rows], target, provider, batch=True)
        own = np.flatnonzero(targets["_to"].is_null().to_numpy())
        if len(own):
            out[own] = current[own] * self._batch_ratio(frame[own])
        return out

    def _batch_ratio(self, frame: pl.DataFrame) -> np.ndarray:
        """Batch price over the price paid, for each row's own model and recorded tokens."""
        ratio = np.full(frame.height, np.nan)
        usage = [_ints(frame, c) for c in USAGE_COLUMNS]
        columns = ["provider", "model", "model_requested", "service_tier"]
        for (provider, model, requested, tier), rows in row_groups(frame, columns):
            price = self.table.resolve(model, provider) if model else None
            if price is None and requested:
                price = self.table.resolve(requested, provider)
            if price is None:
                continue
            args = [u[rows] for u in usage]
            paid = self.usage_cost(price, service_of(tier, False), *args)
            batch = self.usage_cost(price, "batch", *args)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio[rows] = np.where(paid > 0, batch / paid, 1.0)
        return ratio
