"""The user's own prices: override files, and importing price files into the data directory.

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

`import_price_file` takes either such a document or a LiteLLM price map (which then replaces
the bundled snapshot) and stores it under <data>/prices/, after validating it completely and
with an atomic rename, so a bad file leaves the stored prices as they were.
"""

import hashlib
import json
import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.pricing.litellm import (
    KINDS,
    SERVICES,
    dump_snapshot,
    looks_like_litellm_map,
    snapshot_from_litellm,
)
from analysis.pricing.table import (
    BASE_FILE_NAME,
    OVERRIDES_FILE_NAME,
    PRICES_DIR_NAME,
    ModelPrice,
    PriceFileError,
    PriceTable,
    bundled_snapshot,
    prices_from_snapshot,
    read_snapshot,
)

ANY_PROVIDER = "*"
_TOP_LEVEL_KEYS = {"models", "azure_deployments"}
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


def parse_overrides(document: Any, base: PriceTable, origin: str) -> Overrides:
    """Validate an override document against the base table; PriceFileError says what is wrong."""
    if not isinstance(document, dict):
        raise PriceFileError(f'{origin}: an override file is a table with [models."NAME"] entries')
    unknown = set(document) - _TOP_LEVEL_KEYS
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


def load_stored_overrides(path: Path, base: PriceTable) -> Overrides:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read ({e})") from e
    return parse_overrides(document, base, str(path))


# --- import --------------------------------------------------------------------------------


def read_price_file(path: Path) -> Any:
    """The parsed content of a TOML or JSON file; PriceFileError when it is neither."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PriceFileError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode())
        return json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise PriceFileError(f"{path}: not valid {kind} ({e})") from e


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ImportResult:
    kind: str  # "litellm" or "overrides"
    models: int
    version: str  # the price version after the import


def import_price_file(path: Path, data_dir: Path) -> ImportResult:
    """Validate a LiteLLM map or an override document and store it under <data_dir>/prices/.

    A LiteLLM map replaces the bundled snapshot; an override document replaces the previous
    override document (keep your overrides in one file and import it again after editing).
    Nothing is written unless the whole file is valid.
    """
    path = Path(path)
    prices_dir = Path(data_dir) / PRICES_DIR_NAME
    document = read_price_file(path)
    overrides_path = prices_dir / OVERRIDES_FILE_NAME

    is_toml = path.suffix.lower() == ".toml"  # LiteLLM maps are JSON; TOML is always overrides
    if is_toml or isinstance(document, dict) and set(document) & _TOP_LEVEL_KEYS:
        base = _base_table(prices_dir)
        overrides = parse_overrides(document, base, str(path))
        if not overrides.prices and not overrides.azure_deployments:
            raise PriceFileError(f'{path}: nothing to import (no [models."NAME"] or [azure_deployments] entries)')
        _write_atomically(overrides_path, json.dumps(document, indent=2, sort_keys=True) + "\n")
        count = sum(len(models) for models in overrides.prices.values())
        return ImportResult("overrides", count, f"{base.version}+{overrides.digest}")

    if looks_like_litellm_map(document):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        try:
            snapshot = snapshot_from_litellm(document, f"litellm-import-{digest}")
        except ValueError as e:
            raise PriceFileError(f"{path}: {e}") from e
        version, prices = prices_from_snapshot(snapshot, str(path))
        base = PriceTable(version, prices)
        if overrides_path.exists():  # the stored overrides must still make sense on the new base
            version = f"{version}+{load_stored_overrides(overrides_path, base).digest}"
        _write_atomically(prices_dir / BASE_FILE_NAME, dump_snapshot(snapshot))
        return ImportResult("litellm", sum(len(m) for m in prices.values()), version)

    raise PriceFileError(
        f"{path}: neither a LiteLLM price map nor an override file "
        '(expected [models."NAME"] tables or model -> {input_cost_per_token, ...} entries)'
    )


def reset_prices(data_dir: Path) -> list[Path]:
    """Remove imported prices (back to the bundled snapshot); returns the files removed."""
    removed = []
    for name in (BASE_FILE_NAME, OVERRIDES_FILE_NAME):
        path = Path(data_dir) / PRICES_DIR_NAME / name
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _base_table(prices_dir: Path) -> PriceTable:
    base_path = prices_dir / BASE_FILE_NAME
    version, prices = read_snapshot(base_path) if base_path.exists() else bundled_snapshot()
    return PriceTable(version, prices)
