"""`llm-shadow evaluate`: routed requests replayed through a real HTTP upstream (the fake provider)
with the target model, answers compared with the recorded ones, the spend capped, and the result
shown by `simulate` where it said "unverified"."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.store.datadir import SegmentWriter, Store
from analysis.store.schema import CONTENTS, polars_schema
from cli import app
from tests.fake_provider import REPLY, FakeProvider
from tests.simulate_helpers import requests_frame

runner = CliRunner()

POLICY = """
[[routing]]
name = "to-mini"
model = "gpt-4o"
to = "gpt-4o-mini"
"""

DIFFERENT = "The capital of France is Paris, a city on the Seine with about two million inhabitants and many museums."


@pytest.fixture
def data(tmp_path):
    directory = tmp_path / "data"
    rows = [{"t": 0, "prompt_hash": "a"}, {"t": 10, "prompt_hash": "b"}, {"t": 20, "prompt_hash": "c"}]
    requests = requests_frame(rows)
    answers = {"r0": REPLY, "r1": DIFFERENT, "r2": REPLY}
    contents = pl.DataFrame(
        [
            {
                "id": r["id"],
                "ts": r["ts"],
                "system_prompt": "",
                "prompt_text": f"user: question {r['id']}",
                "request_json": None
                if r["id"] == "r2"  # no recorded body: cannot be replayed
                else json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {r['id']}"}]}),
                "response_text": answers[r["id"]],
            }
            for r in requests.iter_rows(named=True)
        ],
        schema=polars_schema(CONTENTS),
    )
    SegmentWriter(Store(directory)).write(requests.to_dicts(), contents.to_dicts())
    return directory


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


def test_evaluate_sends_routed_requests_to_the_target_and_measures_agreement(data, policy_file, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeProvider() as provider:
        result = runner.invoke(
            app,
            ["evaluate", "--policy", str(policy_file), "--data", str(data), "--upstream", provider.url + "/v1"],
        )
        assert result.exit_code == 0, result.output
        sent = [json.loads(r.body) for r in provider.requests]
    assert [body["model"] for body in sent] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert all(r.headers.get("authorization") == "Bearer sk-test" for r in provider.requests)
    [evaluation] = (data / "evaluations").iterdir()
    document = json.loads((evaluation / "evaluation.json").read_text())
    rule = document["rules"]["to-mini"]
    assert (rule["evaluated"], rule["agreed"], rule["agreement_rate"]) == (2, 1, 0.5)
    assert rule["interval"][0] < 0.5 < rule["interval"][1] and rule["cost_usd"] > 0
    assert rule["not_evaluated"] == {"no recorded body": 1}
    answers = pl.read_parquet(evaluation / "answers.parquet")
    assert answers["answer"].to_list() == [REPLY, REPLY]
    assert "answers agree 50.0%" in result.output
    # simulate shows the measured quality where it said "unverified".
    shown = runner.invoke(app, ["simulate", "--policy", str(policy_file), "--data", str(data), "--format", "json"])
    routing = json.loads(shown.output)["routing"]
    assert routing["rules"][0]["quality"] == "measured" and routing["rules"][0]["evaluation"]["agreed"] == 1
    table = runner.invoke(app, ["simulate", "--policy", str(policy_file), "--data", str(data), "--no-save"])
    assert "answers agree 50.0%" in table.output
    for fmt in ("md", "html"):
        out = data.parent / f"report.{fmt}"
        report = runner.invoke(
            app, ["report", "--policy", str(policy_file), "--data", str(data), "--format", fmt, "--out", str(out)]
        )
        assert report.exit_code == 0, report.output
        assert "answers agree 50.0%" in out.read_text()


def test_evaluate_stops_at_the_spend_cap(data, policy_file):
    with FakeProvider() as provider:
        result = runner.invoke(
            app,
            [
                "evaluate",
                "--policy",
                str(policy_file),
                "--data",
                str(data),
                "--upstream",
                provider.url + "/v1",
                "--max-spend",
                "0.000001",
            ],
        )
        assert result.exit_code == 0, result.output
        assert provider.requests == []
    [evaluation] = (data / "evaluations").iterdir()
    rule = json.loads((evaluation / "evaluation.json").read_text())["rules"]["to-mini"]
    assert rule["evaluated"] == 0 and rule["not_evaluated"] == {"no recorded body": 1, "spend cap": 2}


def test_evaluate_errors_are_one_line(data, policy_file, tmp_path):
    result = runner.invoke(app, ["evaluate", "--policy", str(policy_file), "--data", str(data), "--rule", "nope"])
    assert result.exit_code == 1 and "no routing rule named 'nope'" in result.output
    result = runner.invoke(
        app, ["evaluate", "--policy", str(policy_file), "--data", str(data), "--upstream", "http://127.0.0.1:9/v1"]
    )
    assert result.exit_code == 1 and "cannot reach" in result.output
