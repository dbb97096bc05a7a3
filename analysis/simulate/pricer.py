"""What a recorded request would have cost on another model, or at the batch price.

Routing and budget downgrades price the same request at another model's list price
(`PriceTable.resolve` finds the price; `ModelPrice.effective_rates` gives the rates of the
service and prompt-size tier, fallbacks included). Three things change against the record:

- The provider prompt-cache discount is lost: the cache belonged to the original model, so
  every input token is paid at the target's full input rate (no cached or cache-write tokens).
- Token counts are re-estimated when the target counts tokens differently: if its tiktoken
  encoding (analysis.parsers.tokens.encoding_name_for_model) differs from the original model's and the
  prompt and response texts were recorded, the recorded counts are scaled by the ratio of the
  two encodings' counts of the same texts. Without recorded texts the counts stay as recorded.
- The service tier falls back to standard (a priority or flex tier was the original's).

A batch candidate keeps its model and tokens; its cost is the recorded cost scaled by the ratio
of the batch price to the price it paid, or, when the policy gives a `discount`, the cost times
(1 - discount). Routed and batched, it pays the target's batch price.

Every cost is computed by numpy over arrays (`PricingRows`); one request is a one-row set
of arrays, so the one-request path (enforce mode) and the simulator share the arithmetic bit
for bit.
A cost that cannot be computed (the target has no price, the request has no token counts) is
NaN here and None in a decision: such a request is not routed or batched.

`can_move` says whether a routing rule or a downgrade may move a request to a target at all:
not when the request is already on that model (a served snapshot such as
`gpt-4o-mini-2024-07-18` is the alias `gpt-4o-mini`, analysis.pricing.identity), and not when
the target cannot serve the request's endpoint (an embeddings call never goes to a chat model).
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from analysis.parsers.tokens import encoding_name_for_model, get_encoding
from analysis.pricing.identity import same_model, serves_endpoint
from analysis.pricing.rates import ModelPrice, service_of
from analysis.pricing.table import PriceTable
from analysis.simulate.facts import shared_strings

USAGE_COLUMNS = [
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
]
LABEL_COLUMNS = ["provider", "model", "model_requested", "service_tier"]
TEXT_COLUMNS = ["system_prompt", "prompt_text", "response_text"]


@dataclass
class PricingRows:
    """What pricing reads of some requests, as plain columns: labels as object arrays (equal
    strings shared), token counts as int64 arrays (NULL as 0), and where to find the recorded texts.
    Built from a frame (the simulator) or from one record (enforce mode) without polars, so
    one request costs microseconds."""

    labels: dict[str, np.ndarray]  # object arrays
    usage: dict[str, np.ndarray]
    has_tokens: np.ndarray  # some token count was recorded
    texts: Any  # a frame with TEXT_COLUMNS, or a {column: [value]} dict; None: not read
    positions: np.ndarray | None = None  # rows of `texts` these rows are (None: the same)

    def __len__(self) -> int:
        return len(self.has_tokens)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> "PricingRows":
        usage = {c: frame[c].fill_null(0).cast(pl.Int64).to_numpy() for c in USAGE_COLUMNS}
        has_tokens = (frame["input_tokens"].is_not_null() | frame["output_tokens"].is_not_null()).to_numpy()
        texts = frame.select(TEXT_COLUMNS) if all(c in frame.columns for c in TEXT_COLUMNS) else None
        labels = {c: np.array(shared_strings(frame[c]), dtype=object) for c in LABEL_COLUMNS}
        return cls(labels, usage, has_tokens, texts)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "PricingRows":
        usage = {c: np.array([record.get(c) or 0], dtype=np.int64) for c in USAGE_COLUMNS}
        has_tokens = np.array([record.get("input_tokens") is not None or record.get("output_tokens") is not None])
        texts = {c: [record.get(c)] for c in TEXT_COLUMNS} if "prompt_text" in record else None
        labels = {c: np.array([record.get(c)], dtype=object) for c in LABEL_COLUMNS}
        return cls(labels, usage, has_tokens, texts)

    def take(self, rows: np.ndarray) -> "PricingRows":
        positions = rows if self.positions is None else self.positions[rows]
        return PricingRows(
            {c: v[rows] for c, v in self.labels.items()},
            {c: v[rows] for c, v in self.usage.items()},
            self.has_tokens[rows],
            self.texts,
            positions,
        )

    def texts_of(self, rows: np.ndarray) -> tuple[pl.Series | list, pl.Series | list]:
        """(request text, answer text) of `rows` (positions in these rows): the request text is
        the system prompt and the messages, None without recorded messages. Polars Series for
        many rows, lists for a few (one request in enforce mode); the same strings either way."""
        at = rows if self.positions is None else self.positions[rows]
        if isinstance(self.texts, pl.DataFrame) and len(at) > SMALL:
            texts = self.texts[at]
            request = texts.select(
                pl.when(pl.col("prompt_text").is_not_null())
                .then(pl.concat_str([pl.col("system_prompt").fill_null(""), pl.lit("\n"), pl.col("prompt_text")]))
                .alias("t")
            )["t"]
            return request, texts["response_text"]
        if isinstance(self.texts, pl.DataFrame):
            picked = self.texts[at]
            system, prompt, response = (picked[c].to_list() for c in TEXT_COLUMNS)
        else:
            system, prompt, response = ([self.texts[c][i] for i in at.tolist()] for c in TEXT_COLUMNS)
        request = [None if p is None else f"{s or ''}\n{p}" for s, p in zip(system, prompt, strict=True)]
        return request, response

    def groups(self, *columns: str) -> list[tuple[tuple, np.ndarray]]:
        """(values of the label `columns`, row positions) per distinct combination, in order
        of first appearance."""
        if len(self) > 10_000:  # the same grouping, in polars
            frame = pl.DataFrame({c: pl.Series(self.labels[c].tolist(), dtype=pl.Utf8) for c in columns})
            grouped = frame.with_row_index("_row").group_by(list(columns), maintain_order=True).agg(pl.col("_row"))
            return [
                (tuple(row[c] for c in columns), np.asarray(row["_row"], dtype=np.int64))
                for row in grouped.iter_rows(named=True)
            ]
        found: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(*(self.labels[c] for c in columns), strict=True)):
            found.setdefault(key, []).append(i)
        return [(key, np.array(rows, dtype=np.int64)) for key, rows in found.items()]


SMALL = 1000  # below this many rows, texts are handled as Python lists rather than polars


@functools.cache
def _encoding(model: str | None) -> str:
    return encoding_name_for_model(model)


class Pricer:
    """Prices requests at other models, with the price table and recorded texts."""

    def __init__(self, table: PriceTable):
        self.table = table
        self._prices: dict[tuple, ModelPrice | None] = {}
        self._levels: dict[tuple[int, str], tuple[np.ndarray, list[dict[str, float]]]] = {}
        self._token_counts: dict[tuple[str, str], int] = {}
        self._moves: dict[tuple, bool] = {}

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

    def can_move(
        self, served: str | None, requested: str | None, endpoint: str | None, target: str, provider: str | None
    ) -> bool:
        """Whether a request (served and requested model, endpoint) may be moved to `target`."""
        key = (served, requested, endpoint, target, provider)
        found = self._moves.get(key)
        if found is None:
            if same_model(served, target) or same_model(requested, target):
                found = False
            else:
                price = self.price_of(target, provider) or self.table.resolve(target, None)
                found = serves_endpoint(price.mode if price is not None else None, endpoint)
            self._moves[key] = found
        return found

    def check_model(self, model: str, provider: str | None, policy, origin, key: str) -> None:
        """Raise the policy's error at `key` when `model` has no price."""
        if self.price_of(model, provider) is None and self.table.resolve(model, None) is None:
            where = f" at provider {provider}" if provider else ""
            raise policy.error(
                origin,
                key,
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
        self,
        price: ModelPrice,
        service: str,
        input_tokens: np.ndarray,
        cached: np.ndarray,
        writes: np.ndarray,
        writes_1h: np.ndarray,
        output: np.ndarray,
        reasoning: np.ndarray,
    ) -> np.ndarray:
        """USD of these token counts at `price` (the formula of analysis.pricing.table)."""
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
    def _counts(self, texts: pl.Series | list, encoding: str) -> np.ndarray:
        """Tokens of each text in `encoding` (0 for NULL), as analysis.parsers.tokens.count_tokens
        counts them (special tokens as plain text); each distinct text is encoded once per
        Pricer."""
        known = self._token_counts
        distinct = (
            texts.drop_nulls().unique().to_list()
            if isinstance(texts, pl.Series)
            else list({t for t in texts if t is not None})
        )
        encode = get_encoding(encoding).encode_ordinary
        for text in distinct:
            if (text, encoding) not in known:
                known[(text, encoding)] = len(encode(text))
        if not isinstance(texts, pl.Series):
            return np.array([0 if t is None else known[(t, encoding)] for t in texts], dtype=np.int64)
        counts = pl.DataFrame(
            {"t": distinct, "n": [known[(t, encoding)] for t in distinct]}, schema={"t": pl.Utf8, "n": pl.Int64}
        )
        joined = texts.to_frame("t").join(counts, on="t", how="left", maintain_order="left")
        return joined["n"].fill_null(0).to_numpy()

    def reestimated(self, rows: PricingRows, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input tokens, output tokens, re-estimated?) of each row counted for `target`: the
        recorded counts times (target's count / original's count) of the recorded texts (the
        system prompt and messages for input, the answer for output)."""
        inputs, outputs = rows.usage["input_tokens"], rows.usage["output_tokens"]
        changed = np.zeros(len(rows), dtype=bool)
        if rows.texts is None:
            return inputs, outputs, changed
        target_encoding = _encoding(target)
        models = rows.labels["model"].tolist()
        sources = {m: _encoding(m) for m in set(models)}
        if all(e == target_encoding for e in sources.values()):
            return inputs, outputs, changed
        inputs, outputs = inputs.astype(np.float64), outputs.astype(np.float64)
        for source in set(sources.values()) - {target_encoding}:
            mine = {m for m, e in sources.items() if e == source}
            at = np.flatnonzero(np.array([m in mine for m in models], dtype=bool))
            request, response = rows.texts_of(at)
            for values, text, mark in ((inputs, request, True), (outputs, response, False)):
                before = self._counts(text, source)
                after = self._counts(text, target_encoding)
                usable = before > 0
                where = at[usable]
                values[where] = values[where] * (after[usable] / before[usable])
                if mark:
                    changed[where] = True
        return np.rint(inputs).astype(np.int64), np.rint(outputs).astype(np.int64), changed

    # -- costs -----------------------------------------------------------------------------
    def costs_at(
        self, rows: PricingRows, model: str, provider: str | None, batch: np.ndarray | bool = False
    ) -> np.ndarray:
        """Cost of each row sent to `model` instead (standard, or batch price where `batch`);
        NaN where it cannot be priced."""
        n = len(rows)
        out = np.full(n, np.nan)
        if n == 0:
            return out
        batch = np.broadcast_to(np.asarray(batch, dtype=bool), (n,))
        inputs, outputs, _ = self.reestimated(rows, model)
        reasoning = rows.usage["reasoning_tokens"]
        zeros = np.zeros(n, dtype=np.int64)
        for (record_provider,), group in rows.groups("provider"):
            price = self.price_of(model, provider, record_provider)
            if price is None:
                continue
            for is_batch in (False, True):
                selected = group[rows.has_tokens[group] & (batch[group] == is_batch)]
                if len(selected):
                    out[selected] = self.usage_cost(
                        price,
                        "batch" if is_batch else "standard",
                        inputs[selected],
                        zeros[selected],
                        zeros[selected],
                        zeros[selected],
                        outputs[selected],
                        reasoning[selected],
                    )
        return out

    def batch_costs(
        self,
        rows: PricingRows,
        current: np.ndarray,
        routed_to: list[str | None],
        routed_provider: list[str | None],
        discount: float | None,
    ) -> np.ndarray:
        """Cost of each row sent through the batch API, `current` being its cost so far."""
        if discount is not None:
            return current * (1.0 - discount)
        out = np.full(len(rows), np.nan)
        targets: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(routed_to, routed_provider, strict=True)):
            targets.setdefault(key, []).append(i)
        for (target, provider), picked in targets.items():
            picked = np.array(picked, dtype=np.int64)
            if target is None:
                out[picked] = current[picked] * self._batch_ratio(rows.take(picked))
            else:
                out[picked] = self.costs_at(rows.take(picked), target, provider, batch=True)
        return out

    def _batch_ratio(self, rows: PricingRows) -> np.ndarray:
        """Batch price over the price paid, for each row's own model and recorded tokens."""
        ratio = np.full(len(rows), np.nan)
        for (provider, model, requested, tier), group in rows.groups(*LABEL_COLUMNS):
            price = self.table.resolve(model, provider) if model else None
            if price is None and requested:
                price = self.table.resolve(requested, provider)
            if price is None:
                continue
            args = [rows.usage[c][group] for c in USAGE_COLUMNS]
            paid = self.usage_cost(price, service_of(tier, False), *args)
            batch = self.usage_cost(price, "batch", *args)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio[group] = np.where(paid > 0, batch / paid, 1.0)
        return ratio
