"""The realised view (analysis.enforce.realised) as `stats` prints it and as the report shows it.

`realised_figures` turns a `Realised` into the plain dict the report templates read;
`print_realised` prints the same figures under `stats`, so the two cannot disagree.
"""

from typing import TYPE_CHECKING

from rich.console import Console

from reports.format import json_ready, usd
from reports.tables import print_frame

if TYPE_CHECKING:
    from analysis.enforce.realised import Realised

TITLE = "Realised against simulated (per policy entry and mode)"


def realised_figures(view: "Realised") -> dict:
    """What the report shows of the realised view."""
    return {
        "start": view.start.isoformat() if view.start else None,
        "end": view.end.isoformat() if view.end else None,
        "days": view.days,
        "calls": view.calls,
        "rows": [json_ready(row) for row in view.rows.iter_rows(named=True)],
        "totals": json_ready(view.totals),
        "notes": view.notes,
        "simulated": view.totals["simulated"] is not None,
    }


def period_line(view: "Realised") -> str:
    days = f"{len(view.days)} day{'s' if len(view.days) != 1 else ''}"
    return f"Policy ran live over {days} ({view.days[0]} to {view.days[-1]}), {view.calls:,} calls."


def totals_line(view: "Realised") -> str:
    t = view.totals
    simulated = (
        f"simulated saving {usd(t['simulated_usd'] or 0.0)} on {t['simulated']:,} calls (and "
        f"{usd(t['prevented_usd'] or 0.0)} of spend its blocks prevent, unanswered), "
        f"{t['differ']:,} live decisions differ from it; "
        if t["simulated"] is not None
        else ""
    )
    return (
        f"In total: {simulated}{t['decided']:,} decided live, {t['acted']:,} acted on in enforce mode, "
        f"realised saving {usd(t['realised_usd'] or 0.0)}; {t['unanswered']:,} calls refused, unanswered "
        "(spend prevented, not a saving)."
    )


def print_realised(view: "Realised", console: Console) -> None:
    print_frame(view.rows, "table", console, title=TITLE)
    console.print(period_line(view), highlight=False)
    console.print(totals_line(view), highlight=False)
    for note in view.notes:
        console.print(f"Note: {note}", highlight=False)
