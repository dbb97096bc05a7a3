"""The report's charts as plotly figures, built from the dict `reports.data.gather` returns.

One function per chart; `observation_charts` and `simulation_charts` list them in page order,
keyed by the id of the element each is drawn into. The figures carry data and layout only: the
HTML renderer embeds plotly.js once and draws them in the browser.
"""

import plotly.graph_objects as go

from reports.data import OTHER
from reports.format import usd

PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#94a3b8"]
OUTCOME_COLOURS = {
    "rate_limited": "#f59e0b",
    "server_error": "#ef4444",
    "client_error": "#8b5cf6",
    "timeout": "#ec4899",
    "upstream_cut": "#06b6d4",
    "client_disconnected": "#94a3b8",
    "connect_error": "#64748b",
}
BREAKDOWN_LABELS = {"model": "by model", "team": "by team", "feature": "by feature"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def _layout(fig: go.Figure, height: int = 360, **extra) -> go.Figure:
    layout = {
        "template": "plotly_white",
        "height": height,
        "font": {"family": FONT, "size": 12, "color": "#1f2937"},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "legend": {"orientation": "h", "y": -0.15},
        "hoverlabel": {"font": {"family": FONT}},
    }
    fig.update_layout(layout | extra)
    return fig


def over_time(report: dict, metric: str) -> go.Figure:
    """Spend ("cost_usd") or tokens per day, stacked, with buttons to split by model, team or
    feature."""
    days = report["daily"]["days"]
    breakdowns = report["daily"]["by"]
    fig = go.Figure()
    visibility = []
    for by, series in breakdowns.items():
        for i, s in enumerate(series):
            colour = PALETTE[-1] if s["name"] == OTHER else PALETTE[i % (len(PALETTE) - 1)]
            fig.add_bar(
                x=days,
                y=s[metric],
                name=s["name"],
                marker_color=colour,
                visible=by == "model",
                hovertemplate=(
                    "%{x}<br>"
                    + s["name"]
                    + ": "
                    + ("$%{y:,.4f}" if metric == "cost_usd" else "%{y:,} tokens")
                    + "<extra></extra>"
                ),
            )
            visibility.append(by)
    buttons = [
        {"label": BREAKDOWN_LABELS[by], "method": "update", "args": [{"visible": [v == by for v in visibility]}]}
        for by in breakdowns
    ]
    _layout(
        fig,
        barmode="stack",
        yaxis={
            "title": "USD per day" if metric == "cost_usd" else "tokens per day",
            "tickprefix": "$" if metric == "cost_usd" else "",
        },
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "x": 0,
                "y": 1.16,
                "xanchor": "left",
                "showactive": True,
                "bgcolor": "#f1f5f9",
            }
        ],
    )
    return fig


def latency(report: dict) -> go.Figure:
    """Latency and time to first token, p50 and p95, per provider and model (successful calls)."""
    rows = sorted(report["latency"], key=lambda r: r["latency_p50_ms"] or 0)
    labels = [f"{r['provider']} / {r['model']}" for r in rows]
    fig = go.Figure()
    for key, name, colour in (
        ("latency_p50_ms", "latency p50", "#93c5fd"),
        ("latency_p95_ms", "latency p95", "#2563eb"),
        ("ttft_p50_ms", "first token p50", "#fcd34d"),
        ("ttft_p95_ms", "first token p95", "#f59e0b"),
    ):
        fig.add_bar(
            y=labels,
            x=[r[key] for r in rows],
            name=name,
            orientation="h",
            marker_color=colour,
            hovertemplate="%{y}<br>" + name + ": %{x:,.0f} ms<extra></extra>",
        )
    _layout(
        fig,
        height=max(300, 60 + 46 * len(rows)),
        barmode="group",
        xaxis={"title": "milliseconds"},
        margin={"l": 260, "r": 20, "t": 20, "b": 40},
        legend={"orientation": "h", "y": -0.08 - 60 / max(300, 60 + 46 * len(rows))},
    )
    return fig


def outcomes(report: dict) -> go.Figure:
    """Failed calls per day by outcome (stacked), and the day's error rate."""
    daily = report["outcomes"]["daily"]
    fig = go.Figure()
    for outcome, values in daily["by_outcome"].items():
        fig.add_bar(
            x=daily["days"],
            y=values,
            name=outcome,
            marker_color=OUTCOME_COLOURS.get(outcome, "#64748b"),
            hovertemplate="%{x}<br>" + outcome + ": %{y}<extra></extra>",
        )
    fig.add_scatter(
        x=daily["days"],
        y=daily["error_rate"],
        name="error rate",
        yaxis="y2",
        mode="lines+markers",
        line={"color": "#111827", "width": 2},
        marker={"size": 4},
        hovertemplate="%{x}<br>error rate: %{y:.1%}<extra></extra>",
    )
    _layout(
        fig,
        barmode="stack",
        yaxis={"title": "failed calls"},
        yaxis2={
            "title": "error rate",
            "overlaying": "y",
            "side": "right",
            "tickformat": ".0%",
            "rangemode": "tozero",
            "showgrid": False,
        },
        margin={"l": 60, "r": 60, "t": 20, "b": 40},
    )
    return fig


def observation_charts(report: dict) -> dict[str, go.Figure]:
    return {
        "chart-spend": over_time(report, "cost_usd"),
        "chart-tokens": over_time(report, "tokens"),
        "chart-latency": latency(report),
        "chart-outcomes": outcomes(report),
    }


def waterfall(sim: dict) -> go.Figure:
    """Recorded spend, minus each policy's saving in the order they apply, to simulated spend."""
    steps = sim["waterfall"]
    headline = sim["headline"]
    x = ["recorded spend", *[s["name"] for s in steps], "simulated spend"]
    y = [headline["baseline_usd"], *[-s["saving_usd"] for s in steps], headline["simulated_usd"]]
    fig = go.Figure(
        go.Waterfall(
            x=x,
            y=y,
            measure=["absolute", *["relative"] * len(steps), "total"],
            text=[usd(abs(v)) for v in y],
            textposition="outside",
            decreasing={"marker": {"color": "#10b981"}},
            increasing={"marker": {"color": "#ef4444"}},
            totals={"marker": {"color": "#2563eb"}},
            connector={"line": {"color": "#cbd5e1"}},
            hovertemplate="%{x}: %{text}<extra></extra>",
        )
    )
    _layout(
        fig,
        height=380,
        showlegend=False,
        yaxis={"title": "USD", "tickprefix": "$", "rangemode": "tozero"},
        margin={"l": 60, "r": 20, "t": 30, "b": 60},
    )
    return fig


def simulated_over_time(sim: dict) -> go.Figure:
    """Recorded and simulated spend per day; the gap between them is the saving."""
    days = [row["key"] for row in sim["daily"]]
    fig = go.Figure()
    fig.add_scatter(
        x=days,
        y=[row["simulated_usd"] for row in sim["daily"]],
        name="simulated spend",
        mode="lines",
        line={"color": "#10b981", "width": 2},
        fill="tozeroy",
        fillcolor="rgba(16,185,129,0.15)",
        hovertemplate="%{x}<br>simulated: $%{y:,.4f}<extra></extra>",
    )
    fig.add_scatter(
        x=days,
        y=[row["baseline_usd"] for row in sim["daily"]],
        name="recorded spend",
        mode="lines",
        line={"color": "#2563eb", "width": 2},
        fill="tonexty",
        fillcolor="rgba(37,99,235,0.10)",
        hovertemplate="%{x}<br>recorded: $%{y:,.4f}<extra></extra>",
    )
    _layout(
        fig,
        height=320,
        yaxis={"title": "USD per day", "tickprefix": "$", "rangemode": "tozero"},
        margin={"l": 60, "r": 20, "t": 20, "b": 40},
    )
    return fig


def threshold_sweep(semantic: dict) -> go.Figure:
    """Semantic cache: hit rate, saving and saving net of probably wrong answers at each
    similarity threshold (others estimated)."""
    sweep = semantic["sweep"]
    labels = [f"{s['threshold']:.2f}" + ("" if not s["estimated"] else "*") for s in sweep]
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=[s["hit_rate"] for s in sweep],
        name="hit rate",
        marker_color=["#2563eb" if not s["estimated"] else "#93c5fd" for s in sweep],
        hovertemplate="threshold %{x}<br>hit rate %{y:.1%}<extra></extra>",
    )
    fig.add_scatter(
        x=labels,
        y=[s["saving_usd"] for s in sweep],
        name="saving",
        yaxis="y2",
        mode="lines+markers",
        line={"color": "#10b981", "width": 2},
        hovertemplate="threshold %{x}<br>saving $%{y:,.4f}<extra></extra>",
    )
    fig.add_scatter(
        x=labels,
        y=[s.get("saving_net_usd") for s in sweep],
        name="saving net of probably wrong answers",
        yaxis="y2",
        mode="lines+markers",
        line={"color": "#ef4444", "width": 2, "dash": "dot"},
        hovertemplate="threshold %{x}<br>net of wrong answers $%{y:,.4f}<extra></extra>",
    )
    _layout(
        fig,
        height=320,
        xaxis={"title": "similarity threshold (* estimated)", "type": "category"},
        yaxis={"title": "hit rate", "tickformat": ".0%", "rangemode": "tozero"},
        yaxis2={
            "title": "saving",
            "overlaying": "y",
            "side": "right",
            "tickprefix": "$",
            "rangemode": "tozero",
            "showgrid": False,
            "tickmode": "auto",
            "nticks": 5,
        },
        margin={"l": 60, "r": 70, "t": 20, "b": 50},
    )
    return fig


def simulation_charts(report: dict) -> dict[str, go.Figure]:
    sim = report["simulation"]
    charts = {"chart-waterfall": waterfall(sim), "chart-simulated-daily": simulated_over_time(sim)}
    if sim["cache"]["semantic"] is not None and sim["cache"]["semantic"]["sweep"]:
        charts["chart-sweep"] = threshold_sweep(sim["cache"]["semantic"])
    return charts


def all_charts(report: dict) -> dict[str, go.Figure]:
    charts = observation_charts(report)
    if report["simulation"] is not None:
        charts |= simulation_charts(report)
    return charts
