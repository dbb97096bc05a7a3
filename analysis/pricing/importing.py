"""`llm-shadow prices import` and `prices reset`: price files stored into `<data>/prices/`.

`import_price_file` takes either an override document (analysis.pricing.overrides) or a
LiteLLM price map (which then replaces the bundled snapshot) and stores it under
<data>/prices/, after validating it completely and with an atomic rename, so a bad file
leaves the stored prices as they were.
"""

import hashlib
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.pricing.files import (
    BASE_FILE_NAME,
    OVERRIDES_FILE_NAME,
    PRICES_DIR_NAME,
    PriceFileError,
    bundled_snapshot,
    prices_from_snapshot,
    read_snapshot,
)
from analysis.pricing.litellm import dump_snapshot, looks_like_litellm_map, snapshot_from_litellm
from analysis.pricing.overrides import TOP_LEVEL_KEYS, load_stored_overrides, parse_overrides
from analysis.pricing.table import PriceTable


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
    if is_toml or isinstance(document, dict) and set(document) & TOP_LEVEL_KEYS:
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
