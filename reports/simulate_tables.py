"""Simulation results in the terminal: rich tables read from `SimulationResult.to_dict()`.

Every table reads the same dictionary the JSON output and stored runs carry, so the terminal,
`--format json` and the HTML report can never disagree. What a policy costs (blocked,
downgraded, throttled requests, unverified answers) is shown next to what it saves.
"""

from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from reports.format import percent
from reports.format import usd as money
from reports.tables import shown

GROUP_TITLES = {"by_day": "day", "by_team": "team", "by_feature": "feature", "by_model": "model"}


def plain(value: Any) -> str:
    """Text from the data (prompts, names, scope values) shown as is: never read as markup, its
    control characters escaped (see reports.tables.shown)."""
    return shown(str(value))


def usd(amount: float | None) -> str:
    return money(amount, missing="-")


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _summary(result: dict[str, Any]) -> Table:
    t = result["totals"]
    table = Table(title="Simulation", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row(
        "requests",
        f"{t['requests']:,}  ({t['unpriced_requests']:,} unpriced"
        + (f", {t['unbilled_requests']:,} without token counts" if t.get("unbilled_requests") else "")
        + ", not in money figures)",
    )
    table.add_row("baseline spend (recorded)", usd(t["baseline_usd"]))
    table.add_row("simulated spend", usd(t["simulated_usd"]))
    table.add_row("saving", f"{usd(t['saving_usd'])}  ({t['saving_pct']:.1f}%)")
    table.add_row(
        "cache hits",
        f"{t['cache_hits']:,}  ({pct(t['cache_hit_rate'])}), {t['latency_saved_ms'] / 1000:,.0f} s of latency saved",
    )
    table.add_row("routed", f"{t['routed']:,}")
    table.add_row("downgraded by a budget", f"{t['downgraded']:,}")
    table.add_row(
        "blocked by a budget",
        f"[bold]{t['blocked']:,}[/] left unanswered"
        + (f", {usd(t['blocked_spend_usd'])} prevented (not in the saving)" if t.get("blocked_spend_usd") else ""),
    )
    table.add_row("throttled by a rate limit", f"[bold]{t['throttled']:,}[/]")
    table.add_row("batched", f"{t['batched']:,}")
    table.add_row("answer quality unverified", f"[bold yellow]{t['quality_unverified']:,}[/]")
    return table


def quality_text(rule: dict[str, Any]) -> str:
    """A routing rule's quality: the measured agreement with its interval, or "unverified"."""
    evaluation = rule.get("evaluation")
    if not evaluation:
        return "unverified"
    low, high = evaluation["interval"]
    return (
        f"answers agree {pct(evaluation['agreement_rate'])} ({pct(low)}-{pct(high)}, "
        f"{evaluation['evaluated']:,} evaluated for {usd(evaluation['cost_usd'])})"
    )


def _by_policy(result: dict[str, Any]) -> Table:
    table = Table(title="By policy, in the order they apply (each saving counted once)")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("policy", "left"),
        ("kind", "left"),
        ("requests", "right"),
        ("saving", "right"),
        ("what it costs", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in result["by_policy"]:
        costs = {
            "routing": quality_text(row),
            "budget": f"{row.get('blocked', 0):,} blocked, {row.get('downgraded', 0):,} downgraded",
            "rate_limit": f"{row.get('throttled', 0):,} throttled (cost kept: clients retry)",
            "semantic_cache": "similar-prompt answers: quality unverified",
            "batch": "answers up to 24 h later",
        }.get(row["kind"], "")
        table.add_row(plain(row["name"]), row["kind"], count(row["requests"]), usd(row["saving_usd"]), costs)
    return table


def _grouped(result: dict[str, Any], key: str, limit: int = 40) -> Table:
    rows = result[key]
    title = f"By {GROUP_TITLES[key]}" + (f" (first {limit} of {len(rows)})" if len(rows) > limit else "")
    table = Table(title=title)
    for name in (
        GROUP_TITLES[key],
        "requests",
        "baseline",
        "simulated",
        "saving",
        "cache hits",
        "routed",
        "blocked",
        "throttled",
    ):
        table.add_column(name, justify="left" if name == GROUP_TITLES[key] else "right")
    for row in rows[:limit]:
        table.add_row(
            plain(row["key"]) if row["key"] is not None else "(none)",
            count(row["requests"]),
            usd(row["baseline_usd"]),
            usd(row["simulated_usd"]),
            usd(row["saving_usd"]),
            count(row["cache_hits"]),
            count(row["routed"]),
            count(row["blocked"]),
            count(row["throttled"]),
        )
    return table


def _caches(result: dict[str, Any]) -> list[Table]:
    tables = []
    for kind in ("exact", "semantic"):
        cache = result["cache"].get(kind)
        if not cache:
            continue
        table = Table(
            title=f"{kind.capitalize()} cache {cache['name']!r} (scope {cache['scope']}, ttl {cache['ttl_seconds']} s)",
            show_header=False,
        )
        table.add_column("", style="bold")
        table.add_column("")
        table.add_row(
            "hits", f"{cache['hits']:,} ({pct(cache['hit_rate'])} of requests), saving {usd(cache['saving_usd'])}"
        )
        if kind == "semantic":
            rate = cache["estimated_wrong_rate"]
            table.add_row(
                "probably wrong",
                f"{count(cache['estimated_wrong_hits'])} ({'n/a' if rate is None else pct(rate)}, "
                f"{cache['answers_compared']:,} answers compared); saving net of them {usd(cache['saving_net_usd'])}",
            )
        if kind == "exact":
            misses = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in cache["misses"].items())
            table.add_row("misses", misses)
        excluded = cache["excluded"]
        if excluded["requests"]:
            table.add_row("not cacheable", ", ".join(f"{k} {v:,}" for k, v in excluded["requests"].items()))
            dup = excluded["duplicates"]
            table.add_row("... of which repeats", ", ".join(f"{k} {v:,}" for k, v in dup.items()) or "none")
        tables.append(table)
        if kind == "semantic":
            sweep = Table(
                title=f"Threshold sweep ({cache['embedder']} embedder; * = estimated)",
                caption=cache["wrong_hits_note"],
            )
            for name in ("threshold", "hits", "hit rate", "saving", "prob. wrong", "wrong rate", "net saving"):
                sweep.add_column(name, justify="right")
            for row in cache["sweep"]:
                mark = "*" if row["estimated"] else " (this run)"
                rate = row["estimated_wrong_rate"]
                sweep.add_row(
                    f"{row['threshold']:.2f}{mark}",
                    count(row["hits"]),
                    pct(row["hit_rate"]),
                    usd(row["saving_usd"]),
                    count(row["estimated_wrong_hits"]),
                    "n/a" if rate is None else pct(rate),
                    usd(row["saving_net_usd"]),
                )
            tables.append(sweep)
            if cache["sample_pairs"]:
                pairs = Table(title="Matched pairs to judge (a random sample, each pair once)", show_lines=True)
                for name in ("similarity", "request", "answered with (cached prompt)", "answers"):
                    pairs.add_column(name)
                for pair in cache["sample_pairs"][:10]:
                    agreement = pair.get("answer_agreement")
                    verdict = (
                        "not compared"
                        if agreement is None
                        else "agree"
                        if agreement >= cache["answer_threshold"]
                        else "disagree"
                    )
                    pairs.add_row(
                        f"{pair['similarity']:.3f}",
                        plain(pair["request_prompt"]),
                        plain(pair["cached_prompt"]),
                        verdict,
                    )
                tables.append(pairs)
    return tables


def _budgets(result: dict[str, Any], limit: int = 15) -> list[Table]:
    tables = []
    for budget in result["budgets"]:
        action = budget["action"] + (f" to {budget['to']}" if budget["to"] else "")
        table = Table(
            title=(
                f"Budget {budget['name']!r}: {budget['scope']}, {usd(budget['limit_usd'])} per {budget['window']}, "
                f"{action}: "
                f"{budget['windows_tripped']:,} windows tripped, {budget['blocked']:,} blocked, "
                f"{budget['downgraded']:,} downgraded, "
                f"{usd(budget['spend_prevented_usd'])} prevented"
            )
        )
        for name in (budget["scope"], "window", "tripped by", "at", "blocked", "downgraded", "prevented"):
            table.add_column(name, justify="right" if name in ("blocked", "downgraded", "prevented") else "left")
        for incident in budget["incidents"][:limit]:
            table.add_row(
                plain(incident["scope_value"]),
                incident["window_start"][:16],
                plain(incident["tripped_by"] or "-"),
                (incident["tripped_at"] or "-")[:19],
                count(incident["blocked"]),
                count(incident["downgraded"]),
                usd(incident["spend_prevented_usd"]),
            )
        tables.append(table)
        if budget.get("alert_at"):
            tables.append(_alerts(budget, limit))
    return tables


def _alerts(budget: dict[str, Any], limit: int) -> Table:
    """When each of a budget's alerts (alert_at) would have fired."""
    alerts = budget.get("alerts", [])
    shares = ", ".join(percent(s, 0) for s in budget["alert_at"])
    table = Table(title=f"Budget {budget['name']!r} alerts at {shares} of its limit: {len(alerts):,} would have fired")
    for name in (budget["scope"], "window", "share", "fired at", "request", "spend", "top models", "top features"):
        table.add_column(name, justify="right" if name in ("share", "spend") else "left")
    for alert in alerts[:limit]:
        table.add_row(
            plain(alert["scope_value"]),
            alert["window_start"][:16],
            percent(alert["share"], 0),
            alert["fired_at"][:19],
            plain(alert["request_id"]),
            usd(alert["spend_usd"]),
            plain(", ".join(f"{m['model']} {usd(m['spend_usd'])}" for m in alert["top_models"][:3])),
            plain(", ".join(f"{f['feature']} {usd(f['spend_usd'])}" for f in alert["top_features"][:3])),
        )
    return table


def _rate_limits(result: dict[str, Any]) -> list[Table]:
    tables = []
    for limit in result["rate_limits"]:
        table = Table(
            title=(
                f"Rate limit {limit['name']!r}: {limit['scope']}, {limit['requests_per_minute'] or '-'} requests / "
                f"{limit['tokens_per_minute'] or '-'} tokens per minute: {limit['throttled']:,} throttled "
                f"({limit['scope_values_affected']:,} {limit['scope']} values)"
            )
        )
        for name in (limit["scope"], "throttled", "first", "last"):
            table.add_column(name)
        for row in limit["top_scope_values"][:10]:
            table.add_row(plain(row["scope_value"]), count(row["throttled"]), row["first"][:16], row["last"][:16])
        tables.append(table)
    return tables


def fallback_rescues(rule: dict[str, Any]) -> str:
    """How a fallback rule's rescues split: "retry 1, gpt-4o-mini 2"."""
    return ", ".join(f"{by} {n:,}" for by, n in rule["rescued_by"].items()) or "-"


def _fallback(result: dict[str, Any]) -> list[Table]:
    section = result.get("fallback")  # absent from runs stored before fallback rules existed
    if not section:
        return []
    table = Table(
        title=(
            f"Fallback: {section['failures']:,} recorded failures (429, 5xx, timeout, connect error), "
            f"{section['handled']:,} handled by a rule; costs are estimates"
        )
    )
    for name in (
        "rule",
        "failures",
        "rescued",
        "by",
        "assumed",
        "not rescued",
        "attempts",
        "est. cost",
        "wait",
    ):
        table.add_column(name, justify="left" if name in ("rule", "by") else "right")
    for rule in section["rules"]:
        table.add_row(
            plain(rule["name"]),
            count(rule["failures"]),
            count(rule["rescued"]),
            plain(fallback_rescues(rule)),
            count(rule["rescued_assumed"]),
            count(rule["not_rescued"]),
            count(rule["attempts"]),
            usd(rule["estimated_cost_usd"]) + (f" ({rule['unpriced']:,} unpriced)" if rule["unpriced"] else ""),
            f"{rule['wait_s']:,.1f} s",
        )
    return [table]


def print_result(
    result: dict[str, Any], console: Console, groups: tuple[str, ...] = ("by_day", "by_team", "by_feature", "by_model")
) -> None:
    """The whole result as tables, summary first."""
    console.print(_summary(result))
    console.print(_by_policy(result))
    for table in _caches(result):
        console.print(table)
    if result["routing"]["rules"]:
        routing = Table(title="Routing (answers from another model; quality from `llm-shadow evaluate` when run)")
        for name in ("rule", "to", "requests", "from", "saving", "quality"):
            routing.add_column(name, justify="right" if name in ("requests", "saving") else "left")
        for rule in result["routing"]["rules"]:
            origins = ", ".join(f"{m} {n:,}" for m, n in list(rule["from_models"].items())[:4])
            routing.add_row(
                plain(rule["name"]),
                plain(rule["to"]),
                count(rule["requests"]),
                plain(origins),
                usd(rule["saving_usd"]),
                quality_text(rule),
            )
        console.print(routing)
    for table in _budgets(result) + _rate_limits(result) + _fallback(result):
        console.print(table)
    if result.get("fallback"):
        console.print(f"[dim]Fallback:[/] {result['fallback']['note']}", highlight=False)
    for key in groups:
        console.print(_grouped(result, key))
    for note in result["notes"]:
        console.print(f"[dim]Note:[/] {note}", highlight=False)


def print_comparison(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str], console: Console) -> None:
    """Two results side by side: totals, then each file's policies."""
    table = Table(title=f"{names[0]}  vs  {names[1]}")
    table.add_column("")
    table.add_column(names[0], justify="right")
    table.add_column(names[1], justify="right")
    rows = [
        ("baseline spend", "baseline_usd", usd),
        ("simulated spend", "simulated_usd", usd),
        ("saving", "saving_usd", usd),
        ("cache hits", "cache_hits", count),
        ("routed", "routed", count),
        ("downgraded", "downgraded", count),
        ("blocked", "blocked", count),
        ("throttled", "throttled", count),
        ("batched", "batched", count),
        ("quality unverified", "quality_unverified", count),
    ]
    for label, key, fmt in rows:
        table.add_row(label, fmt(a["totals"][key]), fmt(b["totals"][key]))
    table.add_row("saving %", f"{a['totals']['saving_pct']:.1f}%", f"{b['totals']['saving_pct']:.1f}%")
    console.print(table)
    for name, result in zip(names, (a, b), strict=True):
        policies = _by_policy(result)
        policies.title = f"{name}: by policy"
        console.print(policies)


def print_explanation(explanation: dict[str, Any], console: Console) -> None:
    request, decision = explanation["request"], explanation["decision"]
    console.print(
        f"[bold]Request {request['id']}[/] at {request['ts']}: {request['provider']} {request['model']}, "
        f"team {request['team']}, feature {request['feature']}, {count(request['input_tokens'])} in / "
        f"{count(request['output_tokens'])} out tokens, recorded cost {usd(request['cost_usd'])}",
        highlight=False,
    )
    table = Table(title="Policies in order", show_lines=True)
    for name in ("policy", "kind", "outcome", "why"):
        table.add_column(name)
    for step in explanation["steps"]:
        table.add_row(plain(step["policy"]), step["kind"], step["outcome"], plain("\n".join(step["reasons"])))
    console.print(table)
    savings = ", ".join(
        f"{k.removeprefix('saving_')} {usd(decision[k])}"
        for k in ("saving_cache", "saving_routing", "saving_batch", "saving_budget")
        if decision[k]
    )
    console.print(
        f"Decision: {decision['disposition']}, model {decision['model_after']}, quality {decision['quality']}; "
        f"cost {usd(decision['cost_usd'])} -> {usd(decision['simulated_cost_usd'])}"
        + (f" (saving: {savings})" if savings else ""),
        highlight=False,
    )
