"""The user's own prices: override documents, checked against the table they override.

An override document (TOML or JSON, documented in docs/pricing.md) names models with prices
in USD per million tokens, optionally per service (`batch`, `priority`, `flex`) and prompt
tier (`above_200k`, any `above_<N>k`), and maps Azure deployment names to models:

    [models."gpt-4o"]
    provider = "openai"          # optional: without it the price applies at every provider
    input_per_mtok = 2.0
    output_per_mtok = 8.0
    cached_input_per_mtok = 1.0

    [azure_deployments]
    "my-gpt4o-prod" = "gpt-4o"

A model's entry replaces the bundled one unless it says `inherit = true`, in which case the
fields it gives replace those fields of the bundled entry and the rest stay.

Importing such a document into the data directory is analysis.pricing.importing's job. This
module needs the table only to look up what an entry inherits (`base_price`), so it does not
import analysis.pricing.table, which loads stored overrides through it.
"""

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.pricing.files import PriceFileError
from analysis.pricing.litellm import (
    KINDS,
    SERVICES,
)
from analysis.pricing.rates import ModelPrice

if TYPE_CHECKING:
    from analysis.pricing.table import PriceTable

ANY_PROVIDER = "*"
TOP_LEVEL_KEYS = {"models", "azure_deployments"}
_KIND_FIELDS = {f"{kind}_per_mtok": kind for kind in KINDS}
_MODEL_KEYS = {"provider", "mode", "inherit"}
_TIER = re.compile(r"^above_(\d+)k$")


@dataclass(frozen=True)
class Overrides:
    prices: dict[str, dict[str, ModelPrice]]  # provider (or "*") -> name -> price
    azure_deployments: dict[str, str]
    digest: str  # sha256 of the document, 8 hex digits: the "+..." part of the price version


def document_digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceFileError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise PriceFileError(f"{where}: expected a price >= 0, got {value!r}")
    return float(value)


def _rate_sets(entry: dict[str, Any], where: str) -> dict[tuple[str, int], dict[str, float]]:
    """The rate sets of one model entry (its own fields, service and tier subtables)."""
    rates: dict[tuple[str, int], dict[str, float]] = {}

    def read(table: dict[str, Any], service: str, above: int, at: str, allow: set[str]) -> None:
        for key, value in table.items():
            if key in _KIND_FIELDS:
                rates.setdefault((service, above), {})[_KIND_FIELDS[key]] = _number(value, f"{at}.{key}")
            elif key in SERVICES[1:] and service == "standard" and above == 0 and isinstance(value, dict):
                read(value, key, 0, f"{at}.{key}", set())
            elif (tier := _TIER.match(key)) and above == 0 and isinstance(value, dict):
                read(value, service, int(tier.group(1)) * 1000, f"{at}.{key}", set())
            elif key not in allow:
                known = ", ".join([*_KIND_FIELDS, "batch", "priority", "flex", "above_<N>k"])
                raise PriceFileError(f"{at}: unknown key {key!r} (known: {known})")

    read(entry, "standard", 0, where, _MODEL_KEYS)
    return rates


def parse_overrides(document: Any, base: "PriceTable", origin: str) -> Overrides:
    """Validate an override document against the base table; PriceFileError says what is wrong."""
    if not isinstance(document, dict):
        raise PriceFileError(f'{origin}: an override file is a table with [models."NAME"] entries')
    unknown = set(document) - TOP_LEVEL_KEYS
    if unknown:
        raise PriceFileError(
            f"{origin}: unknown top-level key {sorted(unknown)[0]!r} (known: models, azure_deployments)"
        )
    models = document.get("models", {})
    deployments = document.get("azure_deployments", {})
    if not isinstance(models, dict) or not isinstance(deployments, dict):
        raise PriceFileError(f"{origin}: 'models' and 'azure_deployments' must be tables")
    for deployment, model in deployments.items():
        if not isinstance(model, str) or not model:
            raise PriceFileError(f"{origin}: azure_deployments.{deployment}: expected a model name")

    prices: dict[str, dict[str, ModelPrice]] = {}
    for name, entry in models.items():
        where = f"{origin}: models.{json.dumps(name)}"
        if not isinstance(entry, dict):
            raise PriceFileError(f"{where}: expected a table of prices")
        provider = entry.get("provider")
        mode = entry.get("mode", "chat")
        inherit = entry.get("inherit", False)
        if provider is not None and (not isinstance(provider, str) or not provider):
            raise PriceFileError(f'{where}.provider: expected a provider name such as "openai"')
        if not isinstance(mode, str) or not isinstance(inherit, bool):
            raise PriceFileError(f"{where}: 'mode' is a string and 'inherit' true or false")
        rates = _rate_sets(entry, where)
        source = "override"
        if inherit:
            inherited = base.base_price(name, provider)
            if inherited is None:
                raise PriceFileError(f"{where}: inherit = true but the price table has no {name!r} to inherit from")
            merged = {key: dict(kinds) for key, kinds in inherited.rates.items()}
            for key, kinds in rates.items():
                merged.setdefault(key, {}).update(kinds)
            rates = merged
            mode = entry.get("mode", inherited.mode)
            source = f"override of {inherited.source}"
        standard = rates.get(("standard", 0), {})
        if "input" not in standard:
            raise PriceFileError(f"{where}: needs input_per_mtok")
        if "output" not in standard and mode != "embedding":
            raise PriceFileError(f'{where}: needs output_per_mtok (or mode = "embedding")')
        key = provider or ANY_PROVIDER
        label_provider = provider or "any"
        prices.setdefault(key, {})[name] = ModelPrice(label_provider, name, mode, source, rates)
    return Overrides(prices, dict(deployments), document_digest(document))


def load_stored_overrides(path: Path, base: "PriceTable") -> Overrides:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read ({e})") from e
    return parse_overrides(document, base, str(path))
