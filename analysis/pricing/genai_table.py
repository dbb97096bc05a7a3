"""The second price table: pydantic's genai-prices (PyPI `genai-prices`, MIT), used as bundled.

LiteLLM's community map (analysis.pricing.table) is one table maintained by one community; a
price it gets wrong, or a tier it lacks (Claude Sonnet 4.x above 200k input tokens), would
silently be our number. genai-prices is maintained apart, from the providers' pricing pages,
and models what LiteLLM's map does not (tiered prices, price variants by service tier and
batch, start dates). `GenaiPricesTable` prices the same `Usage` with it, through the same
`cost(...)` interface as `PriceTable`, so either can be the primary table (see
analysis.pricing.check) and the other checks it.

Only the data bundled in the installed package is used: genai-prices can fetch newer prices
at run time (`UpdatePrices`), which llm-shadow never starts, so nothing is downloaded and a
row's `price_check_version` (the package version) names exactly the prices used.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version as package_version

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as genai_types

from analysis.parsers.exchange import Usage
from analysis.pricing.names import clean_model_name, home_provider
from analysis.pricing.rates import Cost

NAME = "genai-prices"

# llm-shadow provider -> genai-prices provider id (None: let genai-prices match the model name).
PROVIDER_IDS: dict[str | None, str | None] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "anthropic_compatible": "anthropic",
    "gemini": "google",
    "gemini_compatible": "google",
    "vertex": "google",
    "openrouter": "openrouter",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "together": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "perplexity": "perplexity",
}
# A first-party model seen at a host that does not sell it under its own list (an unknown
# OpenAI-compatible gateway; Claude on Vertex AI): priced at its maker's list price.
_MAKER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "xai": "x-ai", "mistral": "mistral"}
_SERVICE_CONTEXT = {"priority": {"service_tier": "priority"}, "flex": {"service_tier": "flex"}}

# Our token kinds -> genai-prices price keys (USD per million tokens), for `rates`.
PRICE_KEYS = {
    "input": "input_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
    "input_audio": "input_audio_mtok",
    "output_audio": "output_audio_mtok",
}


@dataclass(frozen=True)
class TableRates:
    """One model's per-million-token rates in genai-prices, for a service, at base and tiers."""

    label: str  # "<provider id>/<model id>"
    rates: dict[str, float]  # kind -> USD per 1M tokens below any tier
    tiers: dict[str, list[tuple[int, float]]]  # kind -> [(above N input tokens, USD per 1M)]


def price_context(service_tier: str | None, batch: bool) -> dict[str, str] | None:
    if batch:
        return {"processing": "batch"}
    return _SERVICE_CONTEXT.get((service_tier or "").strip().lower())


def genai_usage(usage: Usage) -> genai_prices.Usage:
    """Our Usage in genai-prices' terms (its input_tokens, like ours, include cache reads and
    writes; audio is a part of input and output in both)."""
    writes = usage.cache_write_tokens or 0
    writes_1h = min(usage.cache_write_1h_tokens or 0, writes)
    values = {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_tokens": usage.cached_input_tokens or 0,
        "cache_write_tokens": writes,
        "input_audio_tokens": usage.audio_input_tokens or 0,
        "output_audio_tokens": usage.audio_output_tokens or 0,
    }
    if writes_1h:
        values["cache_write_1h_tokens"] = writes_1h
        values["cache_write_5m_tokens"] = writes - writes_1h
    return genai_prices.Usage(**{k: v for k, v in values.items() if v})


class GenaiPricesTable:
    """genai-prices' bundled data behind PriceTable's `cost` interface."""

    def __init__(self) -> None:
        self.version = f"{NAME}-{package_version('genai-prices')}"
        self._snapshot = data_snapshot.get_snapshot()
        self._found: dict[tuple[str, str | None], tuple | None] = {}

    def find(self, model: str | None, provider: str | None) -> tuple | None:
        """(genai provider, genai model) for this model as this provider sells it, or None."""
        if not model:
            return None
        key = (model, provider)
        if key not in self._found:
            self._found[key] = self._search(model, provider)
        return self._found[key]

    def _search(self, model: str, provider: str | None) -> tuple | None:
        name = clean_model_name(model)
        candidates: list[tuple[str, str | None]] = []
        own = PROVIDER_IDS.get(provider)
        if provider == "vertex" and name.startswith("claude"):
            own = "anthropic"
        if own:
            candidates.append((name, own))
        vendor, _, rest = name.partition("/")
        if rest and provider in ("openrouter", "openai_compatible", None):
            maker = _MAKER_IDS.get(home_provider(rest) or "")
            if maker:
                candidates.append((rest, maker))
        if provider in ("azure", "openai_compatible", None) and (maker := _MAKER_IDS.get(home_provider(name) or "")):
            candidates.append((name, maker))
        for ref, provider_id in candidates:
            try:
                return self._snapshot.find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
        return None

    def cost(
        self,
        *,
        provider: str | None,
        model: str | None,
        usage: Usage,
        service_tier: str | None = None,
        batch: bool = False,
        provider_cost_usd: float | None = None,
        model_requested: str | None = None,
        other_models: Sequence[tuple[str, Usage]] = (),
        at: datetime | float | None = None,
        warn_unpriced: bool = True,
    ) -> Cost:
        """Same meaning as PriceTable.cost; `at` is when the call was made (prices that changed
        over time apply as they were then; default now), a datetime or a Unix timestamp (the
        recorder's; made a datetime only here, as the other table never reads it). `warn_unpriced` is taken as
        PriceTable.cost takes it: this table logs nothing (an unpriced call says so in its row)."""
        if provider_cost_usd is not None:
            return Cost(float(provider_cost_usd), "provider", self.version)
        if usage.input_tokens is None and usage.output_tokens is None:
            return Cost(None, "none", self.version)
        found = self.find(model, provider)
        if found is None and model_requested and model_requested != model:
            found = self.find(model_requested, provider)
        if found is None:
            return Cost(None, "unpriced", self.version)
        context = price_context(service_tier, batch)
        if at is None:
            when = datetime.now(UTC)
        else:
            when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
        try:
            total = self._price(found, usage, context, when)
            for other_model, other_usage in other_models:
                other = self.find(other_model, provider)
                if other is None:
                    return Cost(None, "unpriced", self.version)
                total += self._price(other, other_usage, context, when)
        except (ValueError, LookupError, ArithmeticError):  # usage the model cannot be priced for
            return Cost(None, "unpriced", self.version)
        genai_provider, genai_model = found
        return Cost(round(float(total), 12), "computed", self.version, f"{genai_provider.id}/{genai_model.id}")

    @staticmethod
    def _price(found: tuple, usage: Usage, context: dict | None, when: datetime) -> Decimal:
        genai_provider, genai_model = found
        calculation = genai_model.calc_price(
            genai_usage(usage), genai_provider, genai_request_timestamp=when, price_context=context
        )
        return calculation.total_price

    def rates(
        self, model: str, provider: str | None, service: str = "standard", at: datetime | None = None
    ) -> TableRates | None:
        """The model's per-token rates for a service (standard, batch, priority, flex)."""
        found = self.find(model, provider)
        if found is None:
            return None
        genai_provider, genai_model = found
        context = price_context(None if service == "batch" else service, service == "batch")
        prices = genai_model.get_prices(at or datetime.now(UTC), context)
        rates: dict[str, float] = {}
        tiers: dict[str, list[tuple[int, float]]] = {}
        for kind, key in PRICE_KEYS.items():
            value = getattr(prices, key, None)
            if isinstance(value, genai_types.TieredPrices):
                rates[kind] = float(value.base)
                tiers[kind] = [(tier.start, float(tier.price)) for tier in value.tiers]
            elif value is not None:
                rates[kind] = float(value)
        return TableRates(f"{genai_provider.id}/{genai_model.id}", rates, tiers)
