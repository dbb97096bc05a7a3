"""One formatter per kind of figure: money, table numbers, JSON (reports/format.py)."""

import json
import math
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from analysis.store.datadir import SegmentWriter, Store
from cli import app
from reports.format import column, json_ready, usd
from reports.simulate_tables import usd as simulate_usd


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "$0.0000"),
        (-0.0, "$0.0000"),
        (-0.00001, "-$0.000010"),
        (-0.000000001, "-$0.0000000010"),
        (-0.5, "-$0.5000"),
        (0.5, "$0.5000"),
        (9.8e-05, "$0.000098"),
        (1e-07, "$0.00000010"),
        (0.0058920000000000005, "$0.0059"),
        (1234.5, "$1,234.50"),
        (-1234.5, "-$1,234.50"),
        (1e-15, "$0.000000000000"),
        (None, "n/a"),
        (math.nan, "n/a"),
    ],
)
def test_money_is_written_by_magnitude_and_never_in_scientific_notation(amount, text):
    assert usd(amount) == text
    assert "e" not in usd(amount).replace("n/a", "")


def test_every_output_writes_minus_half_a_dollar_the_same_way():
    assert usd(-0.5) == simulate_usd(-0.5) == "-$0.5000"
    assert simulate_usd(None) == "-"


def test_a_float_column_shares_one_number_of_decimals():
    assert column("latency_p50_ms", [146.3, 18.1, 30.0, None]) == ["146.3", "18.1", "30.0", "-"]
    assert column("n", [1234567, 3]) == ["1,234,567", "3"]
    assert column("share", [0.0234, 0.5]) == ["0.023", "0.500"]
    assert column("x", [-0.00001, 2.0]) == ["-0.000010", "2.000000"]
    assert column("x", [-0.00000001, 2.0]) == ["0.000000", "2.000000"]  # never "-0.000000"
    assert column("cost_usd", [9.8e-05, 146.3, None]) == ["$0.000098", "$146.30", "-"]
    assert all("e" not in c for c in column("v", [1e-7, 12345678.9]))


def test_json_carries_no_float_noise():
    document = {
        "cost_usd": 0.0058920000000000005,
        "tiny_usd": 1.23e-08,
        "rows": [{"saving_usd": -0.5, "latency_ms": 0.1 + 0.2}],
        "negative_zero_usd": -0.0,
        "missing": math.nan,
        "when": datetime(2026, 1, 2, tzinfo=UTC),
    }
    assert json.loads(json.dumps(json_ready(document))) == {
        "cost_usd": 0.005892,
        "tiny_usd": 1.23e-08,
        "rows": [{"saving_usd": -0.5, "latency_ms": 0.3}],
        "negative_zero_usd": 0.0,
        "missing": None,
        "when": "2026-01-02T00:00:00+00:00",
    }


def _row(i: int, cost: float | None, latency: float) -> dict:
    from analysis.store.schema import REQUEST_COLUMNS

    row = dict.fromkeys(REQUEST_COLUMNS)
    row.update(
        id=f"r{i}",
        ts=datetime(2026, 3, 3, 12, i, tzinfo=UTC),
        provider="openai",
        endpoint="chat",
        model="m-small" if i % 2 else "m-large",
        outcome="ok",
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        cost_source="computed" if cost is not None else "unpriced",
        usage_source="provider",
        latency_ms=latency,
    )
    return row


@pytest.fixture
def small_store(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    # m-large: 0.003 + 0.0029 (float noise in the sum); m-small: 1e-07 + 2e-07, odd latencies
    rows = [_row(0, 0.003, 146.3), _row(1, 1e-07, 18.1), _row(2, 0.0029, 30.0), _row(3, 2e-07, 30.0)]
    SegmentWriter(store).write(rows, [])
    return data


def test_stats_table_writes_money_and_latency_one_way(small_store):
    result = CliRunner().invoke(app, ["stats", "--data", str(small_store)])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│ m-" in line}
    assert "$0.0059" in lines["m-large"] and "$0.00000030" in lines["m-small"]
    assert "88.2" in lines["m-large"] and "24.1" in lines["m-small"]  # medians, one decimal
    assert "e-0" not in result.stdout
    assert "4 calls, $0.0059," in result.stdout


def test_stats_json_and_csv_carry_no_float_noise(small_store):
    result = CliRunner().invoke(app, ["stats", "--format", "json", "--data", str(small_store)])
    assert result.exit_code == 0, result.output
    by_model = {row["model"]: row for row in json.loads(result.stdout)}
    assert by_model["m-large"]["cost_usd"] == 0.0059
    assert repr(by_model["m-large"]["cost_usd"]) == "0.0059"
    assert by_model["m-small"]["cost_usd"] == 3e-07
    result = CliRunner().invoke(app, ["stats", "--format", "csv", "--data", str(small_store)])
    assert "0.0059," in result.stdout and "3e-07" in result.stdout  # CSV: the JSON number's text
