"""Two price tables, one primary: every computed cost is priced again by the other table.

The primary table gives `cost_usd` (LiteLLM's map, analysis.pricing.table, unless the user chose
genai-prices with `llm-shadow prices use genai-prices`, stored in <data>/prices/primary.txt).
The other table prices the same tokens, and the row records what it said
(`price_check_cost_usd`, `price_check_version`) and how the two compare (`price_check`):

- `agree`: both priced the call and differ by at most 1% (of the larger);
- `differ`: both priced it and differ by more than 1%: one table is wrong, or has a price
  component (a long-context tier, an audio rate) the other lacks; `llm-shadow prices compare`
  shows both tables' rates side by side;
- `one-sided`: only one table knows the model;
- NULL: nothing to check (a cost the provider reported, a call without token counts, or a
  model neither table knows).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from analysis.parsers.exchange import Usage
from analysis.pricing.files import PRICES_DIR_NAME, PriceFileError
from analysis.pricing.genai_table import GenaiPricesTable
from analysis.pricing.rates import Cost
from analysis.pricing.table import PriceTable

TABLE_NAMES = ("litellm", "genai-prices")
PRIMARY_FILE_NAME = "primary.txt"  # under <data>/prices/: which table is primary
DIFFER_ABOVE = 0.01  # relative difference above which two costs differ


@dataclass(slots=True)  # not frozen: a frozen one costs 4x as much to build, and one is built per priced call
class Checked:
    cost: Cost  # the primary table's
    check: str | None  # agree, differ, one-sided, or None
    check_cost_usd: float | None  # the other table's cost
    check_version: str  # the other table's version


def compare(primary: Cost, other: Cost) -> str | None:
    if primary.cost_source not in ("computed", "unpriced"):
        return None  # a provider-reported cost, or no tokens: nothing of ours to check
    priced = [c.cost_usd is not None for c in (primary, other)]
    if primary.cost_usd is not None and other.cost_usd is not None:
        a, b = primary.cost_usd, other.cost_usd
        largest = max(abs(a), abs(b))
        return "agree" if largest == 0 or abs(a - b) <= DIFFER_ABOVE * largest else "differ"
    return "one-sided" if any(priced) else None


def primary_name(data_dir: Path | None) -> str:
    """The primary table chosen for this data directory (litellm unless changed)."""
    if data_dir is None:
        return "litellm"
    path = Path(data_dir) / PRICES_DIR_NAME / PRIMARY_FILE_NAME
    if not path.exists():
        return "litellm"
    name = path.read_text().strip()
    if name not in TABLE_NAMES:
        raise PriceFileError(f"{path}: unknown price table {name!r} (choose {' or '.join(TABLE_NAMES)})")
    return name


def set_primary(data_dir: Path, name: str) -> None:
    if name not in TABLE_NAMES:
        raise PriceFileError(f"unknown price table {name!r}: choose {' or '.join(TABLE_NAMES)}")
    prices_dir = Path(data_dir) / PRICES_DIR_NAME
    prices_dir.mkdir(parents=True, exist_ok=True)
    (prices_dir / PRIMARY_FILE_NAME).write_text(name + "\n")


class Pricing:
    """The primary table and the checking table, used together for every call."""

    def __init__(self, litellm: PriceTable, genai: GenaiPricesTable, primary: str = "litellm"):
        self.litellm, self.genai, self.primary_name = litellm, genai, primary
        self.primary = litellm if primary == "litellm" else genai
        self.other = genai if primary == "litellm" else litellm

    @classmethod
    def load(cls, data_dir: Path | None = None) -> "Pricing":
        """Both tables for a data directory; PriceFileError when a stored price file is bad."""
        return cls(PriceTable.load(data_dir), GenaiPricesTable(), primary_name(data_dir))

    @property
    def version(self) -> str:
        return self.primary.version

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
    ) -> Checked:
        """The primary table's cost, checked by the other table (see the module docstring).
        `at`: when the call was made, a datetime or a Unix timestamp (see GenaiPricesTable.cost)."""
        call: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "usage": usage,
            "service_tier": service_tier,
            "batch": batch,
            "model_requested": model_requested,
            "other_models": other_models,
            "at": at,
        }
        primary = self.primary.cost(**call, provider_cost_usd=provider_cost_usd, warn_unpriced=warn_unpriced)
        if primary.cost_source not in ("computed", "unpriced"):
            return Checked(primary, None, None, self.other.version)
        other = self.other.cost(**call, warn_unpriced=False)  # the primary table's warning says it
        return Checked(primary, compare(primary, other), other.cost_usd, self.other.version)
