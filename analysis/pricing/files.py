"""Price files: the bundled snapshot and the files imported into `<data>/prices/`.

`<data>/prices/base.json` is an imported LiteLLM map, trimmed like the bundled snapshot
(analysis/pricing/snapshot/snapshot.json); `<data>/prices/overrides.json` is the user's
override document (analysis.pricing.overrides). A file that cannot be read is a
`PriceFileError` naming it.
"""

import functools
import json
from pathlib import Path
from typing import Any

from analysis.pricing.litellm import KINDS, parse_rate_set_key
from analysis.pricing.rates import ModelPrice

SNAPSHOT_PATH = Path(__file__).resolve().parent / "snapshot" / "snapshot.json"
PRICES_DIR_NAME = "prices"  # under the data directory
BASE_FILE_NAME = "base.json"  # an imported LiteLLM map, trimmed like the bundled snapshot
OVERRIDES_FILE_NAME = "overrides.json"  # the user's override document (see analysis.pricing.overrides)


class PriceFileError(ValueError):
    """A price or override file is unreadable or malformed; the message says which and why."""


def prices_from_snapshot(data: Any, origin: str) -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    """(version, prices by provider and name) of a snapshot document; PriceFileError if bad."""
    try:
        version = data["version"]
        models = data["models"]
        prices: dict[str, dict[str, ModelPrice]] = {}
        for provider, entries in models.items():
            table = prices.setdefault(provider, {})
            for name, record in entries.items():
                rates = {
                    parse_rate_set_key(key): {k: float(v) for k, v in kinds.items() if k in KINDS}
                    for key, kinds in record["rates"].items()
                }
                if "input" not in rates.get(("standard", 0), {}):
                    raise ValueError(f"{provider}/{name} has no standard input price")
                table[name] = ModelPrice(
                    provider, name, record.get("mode", "chat"), f"litellm:{record.get('from', name)}", rates
                )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise PriceFileError(f"{origin}: not a price snapshot ({e})") from e
    if not isinstance(version, str) or not version:
        raise PriceFileError(f"{origin}: snapshot has no version")
    return version, prices


def read_snapshot(path: Path) -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read ({e})") from e
    return prices_from_snapshot(data, str(path))


@functools.cache
def bundled_snapshot() -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    """The snapshot shipped with llm-shadow, parsed once per process (it is never mutated)."""
    return read_snapshot(SNAPSHOT_PATH)
