"""Everything the report shows, gathered once into plain dicts and lists.

`gather(con, since, until, simulation)` reads the recorded calls (through `analysis.store.stats`, the
functions `llm-shadow stats` prints, and `reports.queries` for series and percentiles) and
takes a simulation run's figures through `reports.simulation_data`. The HTML and Markdown renderers
and the charts only read this dict: no renderer runs a query, so the two formats cannot
disagree, and every figure has one source.
"""

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb

from analysis.store import stats
from analysis.store.schema import NOT_FAILED
from reports import format as fmt
from reports import queries
from reports.realised_view import realised_figures
from reports.simulation_data import SimulationRun, simulation_figures

if TYPE_CHECKING:
    from analysis.enforce.realised import Realised

BREAKDOWNS = ("model", "team", "feature")  # the dimensions spend over time is split by
TOP_GROUPS = 7  # series drawn per breakdown; the rest is summed as "other"
OTHER = "(other)"


class EmptyReport(Exception):
    """There are no recorded calls in the window asked for."""


def window_verdict(span_days: int, days_covered: int) -> tuple[str, str]:
    """(level, sentence): is the observation window long enough to act on?

    Traffic has a weekly rhythm (weekends are quiet) and budgets are monthly, so a week is the
    least that says anything and four weeks are what a monthly decision wants.
    """
    gaps = span_days - days_covered
    gap_note = f" ({gaps} days without traffic inside it)" if gaps > max(2, span_days // 7) else ""
    if span_days >= 28:
        return "good", f"Long enough to act on: {span_days} days cover a full month of weekly cycles{gap_note}."
    if span_days >= 14:
        return "fair", (
            f"Enough for first decisions: {span_days} days cover two weekly cycles; monthly "
            f"figures are extrapolated. Re-run after four weeks{gap_note}."
        )
    if span_days >= 7:
        return "weak", (
            f"Borderline: {span_days} days show one weekly cycle. Treat savings as a direction, "
            f"not a forecast{gap_note}."
        )
    return "poor", (
        f"Too short to act on: {span_days} day{'s' if span_days != 1 else ''} of traffic miss "
        "the weekly cycle. Keep recording for at least a week."
    )


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _series(frame, days: list[str], top: int) -> list[dict]:
    """Daily rows of (day, group, calls, tokens, cost_usd) as one series per top group, plus
    "other", each with a value for every day (0 where nothing was recorded)."""
    totals: dict[str, tuple[float, int]] = {}
    for row in frame.iter_rows(named=True):
        spent, calls = totals.get(row["group"], (0.0, 0))
        totals[row["group"]] = (spent + row["cost_usd"], calls + row["calls"])
    ranked = sorted(totals, key=lambda g: (-totals[g][0], -totals[g][1], g))
    shown = ranked if len(ranked) <= top + 1 else ranked[:top]  # "other" never stands for one group
    names = shown + ([OTHER] if len(ranked) > len(shown) else [])
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, dict[str, Any]] = {
        name: {"name": name, "cost_usd": [0.0] * len(days), "tokens": [0] * len(days), "calls": [0] * len(days)}
        for name in names
    }
    for row in frame.iter_rows(named=True):
        target = series[row["group"] if row["group"] in shown else OTHER]
        i = index[row["day"]]
        target["cost_usd"][i] += row["cost_usd"]
        target["tokens"][i] += row["tokens"]
        target["calls"][i] += row["calls"]
    return [series[name] for name in names]


def _outcomes(con, since, until, calls: int) -> dict:
    by_provider = queries.outcomes_by_provider(con, since, until)
    overall: dict[str, int] = {}
    providers: dict[str, dict] = {}
    for row in by_provider.iter_rows(named=True):
        overall[row["outcome"]] = overall.get(row["outcome"], 0) + row["calls"]
        p = providers.setdefault(
            row["provider"], {"provider": row["provider"], "calls": 0, "errors": 0, "outcomes": {}}
        )
        p["calls"] += row["calls"]
        p["outcomes"][row["outcome"]] = row["calls"]
        if row["outcome"] not in NOT_FAILED:
            p["errors"] += row["calls"]
    for p in providers.values():
        p["error_rate"] = _share(p["errors"], p["calls"])
    by_day = queries.outcomes_by_day(con, since, until)
    days = sorted(set(by_day["day"].to_list()))
    index = {d: i for i, d in enumerate(days)}
    failing = sorted(o for o in overall if o not in NOT_FAILED)
    daily = {o: [0] * len(days) for o in failing}
    day_calls = [0] * len(days)
    for row in by_day.iter_rows(named=True):
        i = index[row["day"]]
        day_calls[i] += row["calls"]
        if row["outcome"] not in NOT_FAILED:
            daily[row["outcome"]][i] += row["calls"]
    errors = sum(v for o, v in overall.items() if o not in NOT_FAILED)
    return {
        "errors": errors,
        "error_rate": _share(errors, calls),
        "overall": [
            {"outcome": o, "calls": n, "share": _share(n, calls)}
            for o, n in sorted(overall.items(), key=lambda kv: -kv[1])
        ],
        "by_provider": sorted(providers.values(), key=lambda p: -p["calls"]),
        "daily": {
            "days": days,
            "calls": day_calls,
            "by_outcome": daily,
            "error_rate": [_share(sum(daily[o][i] for o in failing), day_calls[i]) for i in range(len(days))],
        },
    }


def _quality(con, since, until, total: stats.Totals, days_covered: int) -> dict:
    assert total.first_ts is not None and total.last_ts is not None  # gather checked there are calls
    first, last = total.first_ts.date(), total.last_ts.date()
    span_days = (last - first).days + 1
    level, verdict = window_verdict(span_days, days_covered)
    usage = queries.source_counts(con, "usage_source", since, until).to_dicts()
    cost = queries.source_counts(con, "cost_source", since, until).to_dicts()
    versions = queries.source_counts(con, "price_version", since, until).to_dicts()
    estimated_cost = sum(r["cost_usd"] for r in usage if r["value"] == "estimated")
    tokenless = sum(r["calls"] for r in cost if r["value"] == "none")
    return {
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "span_days": span_days,
        "days_covered": days_covered,
        "window_level": level,
        "window_verdict": verdict,
        "estimated_calls": total.estimated_calls,
        "estimated_share": _share(total.estimated_calls, total.calls),
        "estimated_cost_usd": estimated_cost,
        "estimated_cost_share": _share(estimated_cost, total.cost_usd),
        "tokenless_calls": tokenless,
        "tokenless_share": _share(tokenless, total.calls),
        "unpriced_calls": total.unpriced_calls,
        "unpriced_share": _share(total.unpriced_calls, total.calls),
        "price_differ_calls": total.price_differ_calls,
        "price_one_sided_calls": total.price_one_sided_calls,
        "price_unchecked_calls": total.price_unchecked_calls,
        "price_checks": queries.source_counts(con, "price_check", since, until).to_dicts(),
        "usage_sources": usage,
        "cost_sources": cost,
        "price_versions": versions,
    }


def summary(total: stats.Totals, quality: dict, groups: dict) -> str:
    """Two sentences a reader can quote: what was spent, and where most of it went."""
    text = (
        f"Over {quality['span_days']} days ({quality['first_day']} to {quality['last_day']}), "
        f"{fmt.count(total.calls)} LLM API calls cost {fmt.usd(total.cost_usd)}"
    )
    if quality["span_days"] != 30:
        text += f", about {fmt.usd(total.cost_usd / quality['span_days'] * 30)} per 30 days"
    text += "."
    leaders = []
    for by in ("model", "team", "feature"):
        rows = groups[by]
        if rows and total.cost_usd > 0 and rows[0]["cost_usd"] > 0:
            leaders.append(f"{by} {rows[0][by]} ({fmt.percent(rows[0]['cost_usd'] / total.cost_usd, 0)})")
    if leaders:
        text += (
            " The largest share of spend went to "
            + ", ".join(leaders[:-1])
            + (" and " if len(leaders) > 1 else "")
            + leaders[-1]
            + "."
        )
    return text


def simulation_summary(simulated: dict) -> str:
    h = simulated["headline"]
    return (
        f" Under policy {simulated['policy_name']} the same traffic would have cost {fmt.usd(h['simulated_usd'])}, "
        f"a saving of {fmt.usd(h['saving_usd'])} ({fmt.percent(h['saving_share'])}), with "
        f"{fmt.percent(h['cache_hit_rate'])} of calls answered from a cache."
    )


def gather(
    con: duckdb.DuckDBPyConnection,
    since: datetime | None = None,
    until: datetime | None = None,
    simulation: SimulationRun | None = None,
    top: int = TOP_GROUPS,
    realised: "Realised | None" = None,
) -> dict:
    """The report's figures for calls in [since, until), with a simulation run's if given, and
    what the policy realised live (analysis.enforce.realised) if it ran there."""
    total = stats.totals(con, since, until)
    if total.calls == 0:
        raise EmptyReport("no recorded calls" + (" in the chosen window" if since or until else ""))
    assert total.first_ts is not None and total.last_ts is not None  # there are calls, so times
    first, last = total.first_ts.date(), total.last_ts.date()
    days = _days_between(first, last)
    groups = {by: stats.grouped(con, by, since, until).to_dicts() for by in ("model", "provider", "team", "feature")}
    daily_totals = stats.grouped(con, "day", since, until)
    quality = _quality(con, since, until, total, daily_totals.height)
    outcomes = _outcomes(con, since, until, total.calls)
    simulated = simulation_figures(con, simulation) if simulation is not None else None
    return {
        "summary": summary(total, quality, groups) + (simulation_summary(simulated) if simulated else ""),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "filter": {"from": since.isoformat() if since else None, "to": until.isoformat() if until else None},
        "totals": {
            "calls": total.calls,
            "cost_usd": total.cost_usd,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cost_per_30_days_usd": total.cost_usd / quality["span_days"] * 30,
            "errors": outcomes["errors"],
            "error_rate": outcomes["error_rate"],
        },
        "groups": groups,
        "daily": {
            "days": days,
            "totals": daily_totals.to_dicts(),
            "by": {by: _series(queries.daily_by(con, by, since, until), days, top) for by in BREAKDOWNS},
        },
        "realised": realised_figures(realised) if realised is not None else None,
        "latency": queries.latency_by_model(con, since, until).to_dicts(),
        "outcomes": outcomes,
        "quality": quality,
        "simulation": simulated,
    }
