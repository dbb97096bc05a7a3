"""`llm-shadow demo`: a company month generated and recorded through the real recorder into a
fresh data directory, simulated and reported, in one command run in an empty directory."""

import re
import subprocess

import pytest
from typer.testing import CliRunner

from analysis.store import stats
from analysis.store.datadir import Store
from cli import DEMO_POLICY, app
from reports import format as fmt
from reports.demo import (
    MARKER,
    SAMPLE_MONTH_CALLS,
    SAMPLE_MONTH_USD,
    command_for_new_shell,
    prepare_demo_dir,
    scaled_policy,
)
from sample_traffic.company import DEFAULT_SCALE, DEFAULT_SEED, calls_per_day
from tests.conftest import DEMO_TEST_SCALE


def test_demo_runs_end_to_end_in_a_fresh_directory(sample_demo):
    result = sample_demo.result
    assert result.returncode == 0, result.stderr
    recorded = int(re.search(r"Recorded ([\d,]+) LLM calls", result.stdout)[1].replace(",", ""))
    assert recorded == sum(calls_per_day(DEFAULT_SEED, DEMO_TEST_SCALE))  # every generated flow is an LLM call

    # Everything it wrote is inside the demo directory, and the data is what the recorder wrote.
    assert sorted(p.name for p in sample_demo.workdir.iterdir()) == ["shadow-demo"]
    assert sorted(p.name for p in sample_demo.out.iterdir()) == [MARKER, "data", "policy.toml", "report.html"]
    assert sample_demo.report.is_file() and (sample_demo.out / MARKER).is_file()
    with Store(sample_demo.data, create=False).connect() as con:
        total = stats.totals(con)
    assert total.calls == recorded
    assert f"Report: {sample_demo.report.resolve()}" in result.stdout


def test_demo_prints_the_three_headline_figures_of_its_report(sample_demo):
    out = sample_demo.result.stdout
    with Store(sample_demo.data, create=False).connect() as con:
        total = stats.totals(con)
    observed = re.search(r"Observed spend:\s+(\S+) over (\d+) days \(([\d,]+) calls\)", out)
    assert observed, out
    assert observed[1] == fmt.usd(total.cost_usd)
    assert observed[3] == fmt.count(total.calls)
    assert int(observed[2]) == (total.last_ts.date() - total.first_ts.date()).days + 1
    assert re.search(r"Simulated spend:\s+\S", out)
    assert re.search(r"Cache hit rate:\s+\S", out)
    html = sample_demo.report.read_text()
    assert observed[1] in html


def test_the_closing_hint_works_in_a_new_shell(sample_demo):
    hint = re.search(r"Explore further: (.+)", sample_demo.result.stdout)
    assert hint, sample_demo.result.stdout
    env = {"PATH": "/usr/bin:/bin", "HOME": str(sample_demo.workdir)}  # no venv on PATH
    result = subprocess.run(
        ["sh", "-c", hint[1]], cwd=sample_demo.workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    with Store(sample_demo.data, create=False).connect() as con:
        total = stats.totals(con)
    assert fmt.count(total.calls) in result.stdout


def test_the_hint_names_a_program_by_path_unless_path_finds_it(tmp_path, monkeypatch):
    program = tmp_path / "venv" / "bin" / "llm-shadow"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_for_new_shell(str(program)) == "venv/bin/llm-shadow"
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    assert command_for_new_shell(str(program)) == "llm-shadow"


def test_a_second_run_starts_from_an_empty_data_directory(tmp_path):
    out = tmp_path / "demo"
    data = prepare_demo_dir(out)
    data.mkdir()
    (data / "left-over.parquet").write_bytes(b"x")
    (out / "report.html").write_text("old")
    assert prepare_demo_dir(out) == data
    assert not data.exists()  # the importer creates it afresh
    assert (out / "report.html").exists()


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--out", str(foreign)])
    assert result.exit_code == 1
    assert "was not made by llm-shadow demo" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_the_default_demo_month_is_company_sized():
    """Tens of thousands of calls (the spend is measured in docs/benchmarks.md: recording
    the default month in a test would take a minute)."""
    days = calls_per_day(DEFAULT_SEED, DEFAULT_SCALE)
    assert len(days) == 30 and min(days) > 0
    assert 20_000 <= sum(days) <= 60_000


def test_the_demo_policy_is_scaled_to_the_month():
    text = DEMO_POLICY.read_text()
    same = scaled_policy(text, SAMPLE_MONTH_CALLS, SAMPLE_MONTH_USD)
    assert re.findall(r"(?m)^limit_usd = (.+)$", same) == re.findall(r"(?m)^limit_usd = (.+)$", text)
    bigger = scaled_policy(text, SAMPLE_MONTH_CALLS * 20, SAMPLE_MONTH_USD * 1000)
    limits = [float(v) for v in re.findall(r"(?m)^limit_usd = (.+)$", text)]
    assert [float(v) for v in re.findall(r"(?m)^limit_usd = (.+)$", bigger)] == [
        pytest.approx(v * 1000) for v in limits
    ]
    rates = [int(v) for v in re.findall(r"(?m)^requests_per_minute = (\d+)$", text)]
    assert rates and [int(v) for v in re.findall(r"(?m)^requests_per_minute = (\d+)$", bigger)] == [
        r * 20 for r in rates
    ]


def test_the_demos_failed_calls_end_when_they_failed(sample_demo):
    """The generator makes no timeouts: its failed streams are cut by the upstream or left by
    the client, seconds after they began. Measured against the time of recording instead of
    the error's own time, they read as timeouts lasting months."""
    with Store(sample_demo.data, create=False).connect() as con:
        outcomes = dict(con.execute("SELECT outcome, count(*) FROM requests GROUP BY 1").fetchall())
        longest = con.execute("SELECT max(latency_ms) FROM requests").fetchone()[0]
    assert outcomes.get("client_disconnected", 0) > 0 and outcomes.get("upstream_cut", 0) > 0
    assert "timeout" not in outcomes
    assert longest < 15 * 60 * 1000  # no call of the month lasts a quarter of an hour
