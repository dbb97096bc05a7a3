"""How every output writes a figure: one function per kind, used by `stats`, `sql`, `simulate`,
`explain`, the HTML and Markdown report and every JSON writer, so a figure copied from one can
be found in the others.

- Money (`usd`): the sign before the dollar (`-$0.5000`); two decimals from a dollar up, four
  from a hundredth of a cent up, and below that two significant digits (`$0.00000012`), never
  scientific notation, never `-$0.0000`.
- Other numbers in a table column (`column`): integers with thousands separators; floats of one
  column share one number of decimals (`146.3`, `18.1`, `30.0`), never scientific notation.
- JSON (`json_ready`): a money figure (a key ending in `_usd`) rounded to 1e-10 dollars, far
  below what any price can mean, which removes float noise (`0.0058920000000000005` is
  `0.005892`); other floats to 12 significant digits.
"""

import math
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

MONEY_DECIMALS = 10  # JSON: 1e-10 USD; a token costs at least ~1e-8 USD at any listed price
MAX_SMALL_DECIMALS = 12  # below this a cost shows as $0.0000 (prices are computed to 1e-12)


def is_money(name: str) -> bool:
    """A figure is money when its name says so: `cost_usd`, `saving_usd`, `limit_usd`, ..."""
    return name.endswith("_usd")


def usd(amount: float | Decimal | None, missing: str = "n/a") -> str:
    if amount is None or (isinstance(amount, float) and math.isnan(amount)):
        return missing
    amount = float(amount)
    size = abs(amount)
    if size >= 1:
        decimals = 2
    elif size >= 0.0001 or size == 0:
        decimals = 4
    else:  # two significant digits
        decimals = min(MAX_SMALL_DECIMALS, 1 - math.floor(math.log10(size)))
    text = f"{size:,.{decimals}f}"
    if amount < 0 and text.strip("0.,") != "":
        return f"-${text}"
    return f"${text}"


def count(value: int | float | None, missing: str = "n/a") -> str:
    if value is None:
        return missing
    return f"{value:,.0f}"


def percent(share: float | None, digits: int = 1, missing: str = "n/a") -> str:
    """A share in [0, 1] as a percentage."""
    if share is None:
        return missing
    return f"{share * 100:.{digits}f}%"


def ms(value: float | None, missing: str = "n/a") -> str:
    if value is None:
        return missing
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def tokens(value: int | float | None, missing: str = "n/a") -> str:
    """Token counts, shortened past a million: 1,234,567 -> 1.23M."""
    if value is None:
        return missing
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.2f}M"
    return f"{value:,.0f}"


def day(value: date | datetime | None, missing: str = "n/a") -> str:
    if value is None:
        return missing
    return value.strftime("%Y-%m-%d")


def _decimals(value: float) -> int:
    """Decimals a float needs by its magnitude: 1 from 10 up, 2 from 1, then 2 significant digits."""
    size = abs(value)
    if size == 0 or size >= 10:
        return 1 if size != int(size) else 0
    if size >= 1:
        return 2 if round(size, 2) != round(size, 1) else 1
    return min(6, 1 - math.floor(math.log10(size)))


def column(name: str, values: Iterable[Any], missing: str = "-") -> list[str]:
    """The cells of one table column: money by `usd`, floats with one number of decimals."""
    values = list(values)
    if is_money(name):
        return [usd(v, missing) if isinstance(v, int | float | Decimal) or v is None else str(v) for v in values]
    floats = [float(v) for v in values if isinstance(v, float | Decimal) and math.isfinite(float(v))]
    decimals = max((_decimals(v) for v in floats), default=0)
    cells = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            cells.append(missing)
        elif isinstance(v, bool):
            cells.append(str(v))
        elif isinstance(v, int):
            cells.append(f"{v:,}")
        elif isinstance(v, float | Decimal):
            text = f"{float(v):,.{decimals}f}"
            cells.append(text[1:] if text.startswith("-") and text.strip("-0.,") == "" else text)
        elif isinstance(v, datetime):
            cells.append(v.strftime("%Y-%m-%d %H:%M:%S"))
        else:
            cells.append(str(v))
    return cells


def json_number(value: float, money: bool = False) -> float | None:
    """A float as JSON should carry it: see the module docstring."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return value
    rounded = round(value, MONEY_DECIMALS) if money else float(f"{value:.12g}")
    return rounded + 0.0  # -0.0 -> 0.0


def json_ready(value: Any, name: str = "") -> Any:
    """`value` (dicts, lists, numbers, dates) made ready for json.dumps, floats rounded."""
    if isinstance(value, dict):
        return {k: json_ready(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, name) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return json_number(value, money=is_money(name))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


FILTERS = {"usd": usd, "count": count, "percent": percent, "ms": ms, "tokens": tokens, "day": day}
