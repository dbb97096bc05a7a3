"""`llm-shadow label`: a person labels sampled semantic-cache pairs of a stored run, resumably,
and gets precision per threshold with a Wilson interval."""

import json
import re

import pytest
from typer.testing import CliRunner

from analysis.simulate.labels import precision_by_threshold, wilson
from analysis.simulate.runs import load_run
from analysis.store.datadir import SegmentWriter, Store
from cli import app
from tests.simulate_helpers import contents_frame, requests_frame

runner = CliRunner()

POLICY = """
[cache.semantic]
threshold = 0.9
sweep = [0.5, 0.9]
sample_pairs = 10
"""

# Pairs: the same question reworded (similarity 1 with the hashing embedder), and questions that
# share many words but ask different things (similarity between 0.5 and 0.9).
PROMPTS = [
    "user: How do I cancel my credit card?",
    "user: how do I cancel my credit card",
    "user: What is the exchange rate for euros today?",
    "user: what is the exchange rate for euros today",
    "user: What is the exchange rate for dollars today?",
    "user: How do I activate my credit card?",
]


@pytest.fixture
def run_id(tmp_path):
    data = tmp_path / "data"
    rows = [{"t": 10 * i, "prompt_hash": f"p{i}"} for i in range(len(PROMPTS))]
    requests = requests_frame(rows)
    contents = contents_frame(requests, {f"r{i}": p for i, p in enumerate(PROMPTS)})
    SegmentWriter(Store(data)).write(requests.to_dicts(), contents.to_dicts())
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    result = runner.invoke(app, ["simulate", "--policy", str(policy), "--data", str(data)])
    assert result.exit_code == 0, result.output
    [run_id] = re.findall(r"Stored as run (\S+) ", result.output)
    return data, load_run(data, run_id)


def test_label_stores_verdicts_with_the_run_and_resumes(run_id):
    data, run = run_id
    sweep = run.info["result"]["cache"]["semantic"]["sweep"]
    band_ids = {e["threshold"]: [p["request_id"] for p in e["band_pairs"]] for e in sweep}
    assert sorted(band_ids[0.9]) == ["r1", "r3"]
    assert sorted(band_ids[0.5]) == ["r4", "r5"]
    # First session: two verdicts, then quit.
    first = runner.invoke(app, ["label", run.run_id, "--data", str(data)], input="y\nmaybe\ny\nq\n")
    assert first.exit_code == 0, first.output
    labels = json.loads((run.directory / "labels.json").read_text())
    assert len(labels) == 2 and set(labels.values()) == {"y"}
    assert "pair 1 of 4" in first.output and "pair 3 of 4" in first.output
    # Second session starts at the third pair; input ends (EOF) after one verdict.
    second = runner.invoke(app, ["label", run.run_id, "--data", str(data)], input="n\n")
    assert second.exit_code == 0, second.output
    assert "2 of 4 pairs already labelled" in second.output and "pair 1 of 4" not in second.output
    labels = json.loads((run.directory / "labels.json").read_text())
    assert len(labels) == 3
    third = runner.invoke(app, ["label", run.run_id, "--data", str(data)], input="s\n")
    labels = json.loads((run.directory / "labels.json").read_text())
    assert sorted(labels.values()) == ["n", "skip", "y", "y"]
    assert "precision" in third.output
    summary = runner.invoke(app, ["label", run.run_id, "--summary", "--data", str(data)])
    assert summary.exit_code == 0 and "pair 1 of" not in summary.output
    # 0.90: both labelled pairs the same question; 0.50 adds a band of 2 hits whose one label is "n".
    assert "100.0%" in summary.output and "50.0%" in summary.output


def test_precision_is_weighted_by_band_and_has_a_wilson_interval():
    result = {
        "cache": {
            "semantic": {
                "sweep": [
                    {"threshold": 0.8, "band_hits": 300, "band_pairs": [{"request_id": f"a{i}"} for i in range(4)]},
                    {"threshold": 0.9, "band_hits": 100, "band_pairs": [{"request_id": f"b{i}"} for i in range(4)]},
                ]
            }
        }
    }
    labels = {"a0": "y", "a1": "n", "a2": "n", "a3": "skip", "b0": "y", "b1": "y", "b2": "y", "b3": "y"}
    rows = {r["threshold"]: r for r in precision_by_threshold(result, labels)}
    assert rows[0.9]["precision"] == 1.0 and rows[0.9]["labelled"] == 4
    # 300 hits at 1/3 and 100 hits at 1: (100 + 100) / 400.
    assert rows[0.8]["precision"] == pytest.approx(0.5) and rows[0.8]["labelled"] == 7
    low, high = rows[0.8]["interval"]
    assert low < 0.5 < high and (low, high) == pytest.approx(wilson(3.5, 7))
    # Wilson's interval for 8 of 10 (a textbook value): 0.490 - 0.943.
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 0) is None


def test_label_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["label", "nope", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "no simulation run 'nope'" in result.output


def test_a_judge_labels_pairs_through_a_chat_endpoint_within_its_spending_cap(run_id):
    from analysis.simulate.judge import verdict
    from tests.fake_provider import FakeProvider

    data, run = run_id
    assert [verdict(t) for t in ("Yes.", "no", "'No'", "maybe", None, "")] == ["y", "n", "n", "skip", "skip", "skip"]
    with FakeProvider() as provider:
        base = ["label", run.run_id, "--data", str(data), "--judge-url", provider.url + "/v1"]
        # A cap below one call's estimate: nothing is sent.
        capped = runner.invoke(app, [*base, "--judge-model", "gpt-4o-mini", "--max-spend", "0.0000001"])
        assert capped.exit_code == 0, capped.output
        assert provider.requests == [] and "4 left by the spending cap" in capped.output
        judged = runner.invoke(app, [*base, "--judge-model", "gpt-4o-mini"])
        assert judged.exit_code == 0, judged.output
        sent = [json.loads(r.body) for r in provider.requests]
        assert len(sent) == 4 and {b["model"] for b in sent} == {"gpt-4o-mini"}
        # The fake provider's reply is neither yes nor no: every pair is a skip.
        verdicts = json.loads((run.directory / "judge.json").read_text())
        assert sorted(verdicts) == ["r1", "r3", "r4", "r5"] and set(verdicts.values()) == {"skip"}
        again = runner.invoke(app, [*base, "--judge-model", "gpt-4o-mini"])  # resumes: nothing left to judge
        assert len(provider.requests) == 4 and "4 of 4 pairs judged" in again.output
        unpriced = runner.invoke(app, [*base, "--judge-model", "no-such-model"])
        assert unpriced.exit_code == 1 and "has no price" in unpriced.output
    assert not (run.directory / "labels.json").exists()  # the person's labels stay apart
