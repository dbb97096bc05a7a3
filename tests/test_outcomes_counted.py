"""Calls the proxy answered itself are decisions, not failures.

In enforce mode a call answered from the cache (`cached`), or refused by a budget, a rate
limit or a wrapped key (`blocked`, `throttled`, `refused`), never reached the upstream. `stats`'
errors column and the report's failed-call figures count only calls that failed, so an enforce
day does not look like an outage.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from analysis.recording.accounting import ANSWERED_OUTCOMES
from analysis.store.datadir import SegmentWriter, Store
from analysis.store.schema import ANSWERED_BY_PROXY
from cli import app
from reports.data import gather

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
OUTCOMES = ["ok", "ok", "server_error", "timeout", "cached", "cached", "blocked", "throttled", "refused"]


def row(i: int, outcome: str) -> dict:
    return {
        "id": f"r{i:05d}",
        "ts": T0 + timedelta(minutes=i),
        "provider": "openai",
        "endpoint": "chat",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 2,
        "cost_usd": 0.0 if outcome in ANSWERED_BY_PROXY else 0.001,
        "cost_source": "not_sent" if outcome in ANSWERED_BY_PROXY else "computed",
        "usage_source": "provider",
        "outcome": outcome,
    }


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    SegmentWriter(Store(path, create=True), "inst").write([row(i, o) for i, o in enumerate(OUTCOMES)], [])
    return path


def test_every_outcome_the_proxy_answers_with_is_named():
    assert set(ANSWERED_OUTCOMES.values()) == set(ANSWERED_BY_PROXY)


def test_stats_counts_only_failed_calls_as_errors(data_dir):
    result = CliRunner().invoke(app, ["stats", "--data", str(data_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)
    assert group["calls"] == len(OUTCOMES)
    assert group["errors"] == 2  # server_error and timeout


def test_the_report_counts_only_failed_calls(data_dir):
    con = Store(data_dir).connect()
    figures = gather(con)
    assert figures["totals"]["errors"] == 2
    assert figures["outcomes"]["error_rate"] == pytest.approx(2 / len(OUTCOMES))
    assert set(figures["outcomes"]["daily"]["by_outcome"]) == {"server_error", "timeout"}
    overall = {o["outcome"]: o["calls"] for o in figures["outcomes"]["overall"]}
    assert overall["cached"] == 2 and overall["blocked"] == 1  # still shown, as outcomes
