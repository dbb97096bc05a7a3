"""Budget alerts: a warning when a budget's spend in a window reaches a share of its limit.

A budget may carry `alert_at = [0.8, 0.95]`. The definition, shared by the simulator and the
live proxy: right after a charge to a budget window, every share `s` of `alert_at` with
`spend >= s * limit_usd` is due, and fires unless it has fired before for that scope value,
window and share (`AlertState.claim`, analysis.simulate.state: in Redis one atomic SET NX, so
several proxies fire it once). An alert reports the spend, the limit, the share reached, the
window and scope value, the request whose charge reached it, and the models and features that
spent most in the window up to and including that request (models as the requests asked for
them: `model_requested`).

Charges are the budget's own (analysis.simulate.replay: completed calls' recorded cost, a
cache hit or a blocked call charges nothing), so an alert fires after the call that crossed
the share, as enforce mode charges. The simulator lists the alerts that would have fired
(`simulated_alerts`, vectorised: spend only grows, so the first charge at or past a share is
the one that crosses it); live, `fire` runs after each charge (analysis.enforce.alerts).
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from analysis.simulate.facts import EPOCH, FrameFacts, split_state_key, window_start
from analysis.simulate.policy import Budget, Policy
from analysis.simulate.state import AlertState
from reports.format import usd  # alert texts are for people: money is written as everywhere else

TOP_SPENDERS = 5  # models and features an alert names


@dataclass(frozen=True)
class Alert:
    """One alert that fired (or would have fired)."""

    budget: str
    scope: str
    scope_value: str | None
    window: str
    window_start: str  # ISO 8601, UTC
    share: float  # the alert_at share reached
    spend_usd: float  # the window's spend after the charge that reached it
    limit_usd: float
    request_id: str  # the request whose charge reached it
    fired_at: str  # that request's start, ISO 8601, UTC
    top_models: tuple[tuple[str, float], ...]
    top_features: tuple[tuple[str, float], ...]

    @property
    def spent_share(self) -> float:
        return self.spend_usd / self.limit_usd if self.limit_usd else 1.0

    def to_dict(self) -> dict:
        row = asdict(self)
        row["spent_share"] = self.spent_share
        row["top_models"] = [{"model": m, "spend_usd": usd} for m, usd in self.top_models]
        row["top_features"] = [{"feature": f, "spend_usd": usd} for f, usd in self.top_features]
        return row


# Spend is a sum of floats and `share * limit_usd` a product: 0.04 + 0.04 falls short of
# 0.8 * 0.10 by one ulp. A share counts as reached within this relative margin.
FLOAT_MARGIN = 1e-9


def threshold_usd(budget: Budget, share: float) -> float:
    """The spend at which `share` of the budget's limit counts as reached."""
    return share * budget.limit_usd * (1 - FLOAT_MARGIN)


def requested(record: Mapping[str, Any]) -> str | None:
    """The model an alert names for a request: the one asked for (`model_requested`, else
    `model`), the same live, where the request is decided before its answer names a model, and
    simulated."""
    return record.get("model_requested") or record.get("model")


def due_shares(budget: Budget, spent: float) -> list[float]:
    """The shares of `alert_at` that a window which has spent `spent` has reached."""
    return [share for share in budget.alert_at if spent >= threshold_usd(budget, share)]


def make_alert(
    budget: Budget,
    key: str,
    share: float,
    spent: float,
    request_id: str,
    ts_us: int,
    top: tuple[list[tuple[str, float]], list[tuple[str, float]]],
) -> Alert:
    scope_value, window = split_state_key(key)
    return Alert(
        budget=budget.name,
        scope=budget.scope,
        scope_value=scope_value,
        window=budget.window,
        window_start=window_start(int(window), budget.window).isoformat(),
        share=share,
        spend_usd=spent,
        limit_usd=budget.limit_usd,
        request_id=request_id,
        fired_at=(EPOCH + timedelta(microseconds=ts_us)).isoformat(),
        top_models=tuple(top[0]),
        top_features=tuple(top[1]),
    )


def fire(budget: Budget, state: AlertState, key: str, spent: float, request_id: str, ts_us: int) -> list[Alert]:
    """The alerts due after a charge brought window `key` to `spent`, each claimed once."""
    fired = []
    for share in due_shares(budget, spent):
        if state.claim(key, share):
            fired.append(make_alert(budget, key, share, spent, request_id, ts_us, state.top(key, TOP_SPENDERS)))
    return fired


def simulated_alerts(
    policy: Policy, requests: pl.DataFrame, facts: FrameFacts, charged: np.ndarray
) -> dict[str, list[Alert]]:
    """The alerts each budget would have fired over a run, in time order: `requests` in the
    run's order (with ts, id, model, feature), `facts` its budget keys, `charged` what each
    request charged the budgets (replay.Trace.charged)."""
    out: dict[str, list[Alert]] = {}
    if not any(b.alert_at for b in policy.budgets):
        return out
    base = pl.DataFrame(
        {
            "row": np.arange(requests.height),
            "id": requests["id"],
            "ts": requests["ts"],
            "model": requests.select(pl.coalesce("model_requested", "model").fill_null("")).to_series(),
            "feature": requests["feature"].fill_null(""),
            "charged": charged,
        }
    )
    for index, budget in enumerate(policy.budgets):
        if not budget.alert_at:
            continue
        mine = (
            base.with_columns(pl.Series("key", facts.columns[f"budget_key.{index}"], dtype=pl.Utf8))
            .filter(pl.col("key").is_not_null())
            .with_columns(pl.col("charged").cum_sum().over("key").alias("spent"))
        )
        crossings = []
        for share in budget.alert_at:
            first = (
                mine.filter(pl.col("spent") >= threshold_usd(budget, share))
                .group_by("key")
                .agg(pl.all().sort_by("row").first())
                .with_columns(pl.lit(share).alias("share"))
            )
            crossings.append(first.select("key", "share", "row", "id", "ts", "spent"))
        found = pl.concat(crossings).sort("row", "share")
        if found.height == 0:
            out[budget.name] = []
            continue
        spenders = mine.select("key", "row", "model", "feature", "charged").join(
            found.select("key", "share", pl.col("row").alias("at")), on="key"
        )
        spenders = spenders.filter(pl.col("row") <= pl.col("at"))
        tops: dict[str, dict[tuple[str, float], list[tuple[str, float]]]] = {}
        for kind in ("model", "feature"):
            ranked = (
                spenders.group_by("key", "share", kind)
                .agg(pl.col("charged").sum().alias("usd"))
                .sort(["usd", kind], descending=[True, False])
                .group_by("key", "share", maintain_order=True)
                .head(TOP_SPENDERS)
            )
            tops[kind] = {}
            for row in ranked.iter_rows(named=True):
                tops[kind].setdefault((row["key"], row["share"]), []).append((row[kind], row["usd"]))
        alerts = []
        for row in found.iter_rows(named=True):
            ts = row["ts"] if row["ts"].tzinfo else row["ts"].replace(tzinfo=UTC)
            ts_us = (ts - EPOCH) // timedelta(microseconds=1)
            marker = (row["key"], row["share"])
            top = (tops["model"].get(marker, []), tops["feature"].get(marker, []))
            alerts.append(make_alert(budget, row["key"], row["share"], row["spent"], row["id"], ts_us, top))
        out[budget.name] = alerts
    return out


def alert_line(alert: Alert | dict) -> str:
    """One line saying what an alert says (logs, CLI)."""
    a = alert.to_dict() if isinstance(alert, Alert) else alert
    who = f"{a['scope']} {a['scope_value']!r}" if a["scope"] != "global" else "all traffic"
    start = datetime.fromisoformat(a["window_start"])
    when = {"hour": f"{start:%Y-%m-%d %H:00}", "day": f"{start:%Y-%m-%d}", "month": f"{start:%Y-%m}"}[a["window"]]
    return (
        f"budget {a['budget']!r} ({who}, {a['window']} {when}) reached {a['share'] * 100:g}% of its limit: "
        f"{usd(a['spend_usd'])} of {usd(a['limit_usd'])} spent"
    )
