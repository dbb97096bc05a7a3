"""What an LLM call cost: the provider's published price applied to the tokens it reported.

A `PriceTable` is the bundled snapshot (analysis/pricing/snapshot/snapshot.json, built from LiteLLM's
community price map; see SOURCE.txt there) plus what the user imported into
<data>/prices/ (a newer LiteLLM map replacing the bundled one, and an override file with
custom or negotiated prices; see analysis/pricing/overrides.py and docs/pricing.md). Its
`version` names exactly that combination, and every `Cost` carries it, so a row says which
table priced it.

`resolve` finds the price of a model the way users and APIs write its name (the spellings are
analysis.pricing.names'); results are cached because the recorder asks once per call. `cost`
applies it to a `Usage` (the arithmetic and the rate fallbacks are analysis.pricing.rates'; the
files, analysis.pricing.files'). A cost the provider reported itself (OpenRouter's usage.cost)
wins over the table. A model the table does not know is never $0: its cost is None with
cost_source "unpriced", and a warning is logged once per model. A call without any token count
has cost None and cost_source "none" (nothing known to be billed).
"""

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from analysis.parsers.exchange import Usage
from analysis.pricing.files import BASE_FILE_NAME, OVERRIDES_FILE_NAME, PRICES_DIR_NAME, bundled_snapshot, read_snapshot
from analysis.pricing.names import (
    BORROWS_FROM_VENDOR,
    FALLBACK_PROVIDERS,
    VENDOR_PROVIDERS,
    NameIndex,
    clean_model_name,
    home_provider,
    name_variants,
)
from analysis.pricing.overrides import load_stored_overrides
from analysis.pricing.rates import Cost, ModelPrice, compute_cost_usd, service_of

log = logging.getLogger(__name__)

RESOLVE_CACHE_SIZE = 10_000


class PriceTable:
    """Prices by provider and model, with the version string that names them."""

    def __init__(
        self,
        version: str,
        prices: Mapping[str, Mapping[str, ModelPrice]],
        override_prices: Mapping[str, Mapping[str, ModelPrice]] | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ):
        self.version = version
        self._base = {provider: NameIndex(models) for provider, models in prices.items()}
        # Overrides are keyed by provider, "*" for those that name none (any provider).
        self._overrides = {provider: NameIndex(models) for provider, models in (override_prices or {}).items()}
        self.azure_deployments = dict(azure_deployments or {})
        self._resolved: dict[tuple[str, str | None], ModelPrice | None] = {}
        self._warned: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, data_dir: Path | None = None) -> "PriceTable":
        """The bundled snapshot, or the LiteLLM map imported into <data_dir>/prices/, plus
        the override file imported there. Raises PriceFileError when a stored file is bad."""
        prices_dir = Path(data_dir) / PRICES_DIR_NAME if data_dir is not None else None
        base_path = prices_dir / BASE_FILE_NAME if prices_dir else None
        if base_path is not None and base_path.exists():
            version, prices = read_snapshot(base_path)
        else:
            version, prices = bundled_snapshot()
        table = cls(version, prices)
        if prices_dir is not None and (prices_dir / OVERRIDES_FILE_NAME).exists():
            overrides = load_stored_overrides(prices_dir / OVERRIDES_FILE_NAME, table)
            table = cls(
                f"{version}+{overrides.digest}",
                prices,
                overrides.prices,
                overrides.azure_deployments,
            )
        return table

    def base_price(self, model: str, provider: str | None) -> ModelPrice | None:
        """`resolve` on the base table alone, overrides ignored (what an override inherits)."""
        return self._search(model, provider, overrides=False)

    def resolve(self, model: str | None, provider: str | None) -> ModelPrice | None:
        """The price of this model as this provider sells it, or None when unknown."""
        if not model:
            return None
        key = (model, provider)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        found = self._search(model, provider, overrides=True)
        with self._lock:
            if len(self._resolved) >= RESOLVE_CACHE_SIZE:  # bound memory if names never repeat
                self._resolved.clear()
            self._resolved[key] = found
        return found

    def _search(self, model: str, provider: str | None, *, overrides: bool) -> ModelPrice | None:
        name = model.strip()
        if provider == "azure":
            name = self.azure_deployments.get(name, name)
        name = clean_model_name(name)
        vendor, _, rest = name.partition("/")
        vendor_provider = VENDOR_PROVIDERS.get(vendor.lower()) if rest else None
        names = [name, rest] if vendor_provider else [name]

        searches: list[tuple[NameIndex, str]] = []
        own = provider if provider in self._base or provider in self._overrides else None
        if overrides:
            for key in ("*", own):
                if key in self._overrides:
                    searches += [(self._overrides[key], n) for n in names]
        if own in self._base:
            searches += [(self._base[own], n) for n in names]
        borrowed: list[tuple[str, str]] = []
        if provider in FALLBACK_PROVIDERS:
            borrowed += [(p, name) for p in FALLBACK_PROVIDERS[provider]]
        if own is None or provider in BORROWS_FROM_VENDOR:
            if vendor_provider:
                borrowed.append((vendor_provider, rest))
            elif home := home_provider(name):
                borrowed.append((home, name))
        for other, other_name in borrowed:
            if overrides and other in self._overrides:
                searches.append((self._overrides[other], other_name))
            if other in self._base:
                searches.append((self._base[other], other_name))

        for index, candidate in searches:
            for variant in name_variants(candidate):
                if (found := index.find(variant)) is not None:
                    return found
        if provider == "openrouter" and model.strip().endswith(":free"):
            return ModelPrice(
                "openrouter",
                model.strip(),
                "chat",
                "openrouter ':free' variant",
                {("standard", 0): {"input": 0.0, "output": 0.0}},
            )
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
        warn_unpriced: bool = True,
        other_models: Sequence[tuple[str, Usage]] = (),
        at: datetime | float | None = None,
    ) -> Cost:
        """The call's cost: the provider's own figure if it gave one, else the table's price
        of `model` (or of `model_requested` when `model` is unknown), else unpriced (logged
        once per model unless `warn_unpriced` is false: a caller that sums them up says so).
        `at` (when the call was made) is taken as GenaiPricesTable.cost takes it and unused:
        this table has one price per model.

        `other_models`: tokens the call spent on other models (Anthropic's advisor), each
        priced at its own model's price and added; if one of them has no price the whole call
        is unpriced (a partial sum would understate it).

        A call with neither input nor output token counts (an error before any output, a body
        we could not read) gets cost None and cost_source "none": nothing is known to have
        been billed, and that is not the same as a model without a price. One count missing
        and the other present counts the missing one as 0.
        """
        if provider_cost_usd is not None:
            return Cost(float(provider_cost_usd), "provider", self.version)
        if usage.input_tokens is None and usage.output_tokens is None:
            return Cost(None, "none", self.version)
        price = self.resolve(model, provider)
        if price is None and model_requested and model_requested != model:
            price = self.resolve(model_requested, provider)
        if price is None:
            if warn_unpriced:
                self._warn_unpriced(provider, model or model_requested)
            return Cost(None, "unpriced", self.version)
        service = service_of(service_tier, batch)
        usd = compute_cost_usd(price, usage, service)
        for other_model, other_usage in other_models:
            other_price = self.resolve(other_model, provider)
            if other_price is None:
                if warn_unpriced:
                    self._warn_unpriced(provider, other_model)
                return Cost(None, "unpriced", self.version)
            usd = round(usd + compute_cost_usd(other_price, other_usage, service), 12)
        return Cost(usd, "computed", self.version, price.label)

    def _warn_unpriced(self, provider: str | None, model: str | None) -> None:
        key = (provider, model or "")
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(
            "no price for model %r (provider %s): its calls are recorded unpriced; "
            "add a price with `llm-shadow prices import`",
            model,
            provider,
        )
