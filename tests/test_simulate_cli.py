"""`llm-shadow simulate` and `llm-shadow explain` over a real data directory; stored runs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis.simulate.runs import RUNS_DIR, StoredRun
from analysis.store.datadir import SegmentWriter, Store
from cli import app
from tests.simulate_helpers import contents_frame, requests_frame

POLICY = """
name = "demo"

[cache.exact]
ttl = "1h"

[[routing]]
name = "to-mini"
model = "gpt-4o"
max_input_tokens = 1500
to = "gpt-4o-mini"

[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 0.02
"""

# Routed to gpt-4o-mini, 1000 input and 100 output tokens cost 1000 x 0.15 + 100 x 0.60 per million.
ROUTED = 0.00021
ROWS = [
    {"t": 0, "prompt_hash": "a", "cost_usd": 0.01},  # routed: the team has spent 0.00021
    {"t": 60, "prompt_hash": "a", "cost_usd": 0.01},  # cache hit on r0
    {"t": 120, "prompt_hash": "b", "input_tokens": 3000, "cost_usd": 0.02},  # too big to route; trips the budget
    {"t": 180, "prompt_hash": "c", "cost_usd": 0.01},  # routed, then blocked
    {"t": 86_400, "prompt_hash": "d", "cost_usd": 0.01},  # next day: routed
]


@pytest.fixture
def data(tmp_path):
    directory = tmp_path / "data"
    requests = requests_frame(ROWS)
    contents = contents_frame(requests, {r: f"user: question {r}" for r in requests["id"]})
    SegmentWriter(Store(directory)).write(requests.to_dicts(), contents.to_dicts())
    return directory


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


runner = CliRunner()


def stored_runs(data: Path) -> list[StoredRun]:
    root = Path(data) / RUNS_DIR
    paths = sorted(root.glob("*/run.json")) if root.is_dir() else []
    return [StoredRun(p.parent.name, p.parent, json.loads(p.read_text())) for p in paths]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_simulate_table_output_and_stored_run(data, policy_file):
    result = invoke("simulate", "--policy", policy_file, "--data", data)
    assert result.exit_code == 0, result.output
    for text in ("Simulation", "exact-cache", "to-mini", "team-daily", "blocked by a budget", "Stored as run"):
        assert text in result.output
    [run] = stored_runs(data)
    assert run.info["format"] == 1
    assert run.info["policy_text"] == POLICY
    assert run.info["result"]["totals"]["blocked"] == 1
    decisions = run.decisions()
    assert decisions.height == 5
    assert decisions.filter(decisions["id"] == "r1")["disposition"][0] == "exact_hit"
    assert run.info["run_id"] == run.run_id
    assert f"Stored as run {run.run_id}" in result.output


def test_simulate_json_output(data, policy_file):
    result = invoke("simulate", "--policy", policy_file, "--data", data, "--format", "json", "--no-save")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["run_id"] is None and not stored_runs(data)
    totals = document["totals"]
    assert totals["baseline_usd"] == pytest.approx(0.06)
    # r0 and r4 routed, r1 a cache hit; r3 blocked: its cost is prevented, not saved.
    assert totals["saving_usd"] == pytest.approx(2 * (0.01 - ROUTED) + 0.01)
    assert totals["blocked_spend_usd"] == pytest.approx(0.01) and totals["routed"] == 2
    assert [p["name"] for p in document["by_policy"]] == ["exact-cache", "to-mini", "team-daily"]
    assert document["budgets"][0]["incidents"][0]["tripped_by"] == "r2"
    assert [row["key"] for row in document["by_day"]] == ["2025-03-03", "2025-03-04"]


def test_simulate_date_range(data, policy_file):
    result = invoke(
        "simulate", "--policy", policy_file, "--data", data, "--format", "json", "--no-save", "--from", "2025-03-04"
    )
    assert json.loads(result.output)["totals"]["requests"] == 1


def test_compare_two_policy_files(data, policy_file, tmp_path):
    other = tmp_path / "no-budget.toml"
    other.write_text(POLICY.split("[[budget]]")[0])
    result = invoke("simulate", "--compare", policy_file, other, "--data", data, "--no-save")
    assert result.exit_code == 0, result.output
    assert "policy.toml" in result.output and "no-budget.toml" in result.output
    document = json.loads(
        invoke("simulate", "--compare", policy_file, other, "--data", data, "--no-save", "--format", "json").output
    )
    assert document["a"]["totals"]["blocked"] == 1 and document["b"]["totals"]["blocked"] == 0


def test_explain_says_which_rule_fired_and_why(data, policy_file):
    result = invoke("explain", "r3", "--policy", policy_file, "--data", data, "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    steps = {s["policy"]: s for s in document["steps"]}
    assert steps["to-mini"]["outcome"] == "fired"
    assert "yes  input_tokens 1000 <= 1500" in steps["to-mini"]["reasons"]
    assert steps["team-daily"]["outcome"] == "blocked"
    assert f"had spent ${ROUTED + 0.02:.4f} of $0.02" in steps["team-daily"]["reasons"][0]
    assert document["decision"]["disposition"] == "blocked"
    hit = json.loads(invoke("explain", "r1", "--policy", policy_file, "--data", data, "--format", "json").output)
    assert hit["steps"][0]["outcome"] == "hit" and "request r0" in hit["steps"][0]["reasons"][0]
    table = invoke("explain", "r3", "--policy", policy_file, "--data", data)
    assert table.exit_code == 0 and "to-mini" in table.output and "fired" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--data", "{data}"], "give either --policy FILE or --compare"),
        (["simulate", "--policy", "{bad}", "--data", "{data}"], 'bad.toml:3: [[routing]] "to": expected a model name'),
        (["simulate", "--policy", "{policy}", "--data", "{data}", "--format", "xml"], "unknown format"),
        (["simulate", "--policy", "{policy}", "--data", "{data}", "--from", "2030-01-01"], "no recorded requests"),
        (["explain", "nope", "--policy", "{policy}", "--data", "{data}"], "no request with id 'nope'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(data, policy_file, tmp_path, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routing]]\nname = "x"\nto = 3\n')
    result = invoke(*(a.format(data=data, policy=policy_file, bad=bad) for a in args))
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_a_stored_run_of_another_format_is_refused(data, policy_file):
    from analysis.simulate.runs import RunNotFound, load_run

    result = invoke("simulate", "--policy", policy_file, "--data", data)
    [run] = stored_runs(data)
    assert load_run(data, run.run_id).info == run.info
    path = run.directory / "run.json"
    path.write_text(json.dumps({**run.info, "format": 99}))
    with pytest.raises(RunNotFound, match="format 99"):
        load_run(data, run.run_id)
    with pytest.raises(RunNotFound, match="no simulation run"):
        load_run(data, "nope")
    assert result.exit_code == 0
