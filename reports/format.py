"""How the report writes a number, shared by the HTML and Markdown renderers.

Money is written as `llm-shadow stats` writes it (two decimals from a dollar up, four below), so
a figure copied from the report can be found in the terminal and the other way round.
"""

from datetime import date, datetime


def usd(amount: float | None) -> str:
    if amount is None:
        return "n/a"
    if round(amount, 4) == 0:
        return "$0.0000"  # never "$-0.0000"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return sign + (f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}")


def count(value: int | float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}"


def percent(share: float | None, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    if share is None:
        return "n/a"
    return f"{share * 100:.{digits}f}%"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def tokens(value: int | float | None) -> str:
    """Token counts, shortened past a million: 1,234,567 -> 1.23M."""
    if value is None:
        return "n/a"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.2f}M"
    return f"{value:,.0f}"


def day(value: date | datetime | None) -> str:
    if value is None:
        return "n/a"
    return value.strftime("%Y-%m-%d")


FILTERS = {"usd": usd, "count": count, "percent": percent, "ms": ms, "tokens": tokens, "day": day}
