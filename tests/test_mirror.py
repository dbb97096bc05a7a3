"""Shadow-mode mirroring: a routing rule's `mirror` share sent to its target off the client's path,
and `evaluate --mirrored` comparing those answers with the recorded ones.

The end-to-end test runs the real `llm-shadow proxy --mode shadow` with the real openai SDK
against the fake provider; what was mirrored is read from the fake provider's log and from
`<data>/mirrors`, and `evaluate --mirrored` runs as the CLI."""

import json
import time
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from analysis.enforce.mirror import Mirror, chosen, read_counts, read_mirrors
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import PolicyError, parse_policy
from cli import app
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY

POLICY = """
[[routing]]
name = "to-mini"
model = "gpt-4o"
to = "gpt-4o-mini"
mirror = {share}
mirror_max_spend = {cap}
"""


def body(text: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": stream}).encode()


def test_the_mirrored_share_is_stable_and_close_to_asked():
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [i for i in ids if chosen(i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert picked == [i for i in ids if chosen(i, 0.1)]  # the same requests every time
    assert not any(chosen(i, 0.0) for i in ids) and all(chosen(i, 1.0) for i in ids)


def test_mirror_keys_are_checked_when_the_policy_is_read():
    rule = parse_policy(POLICY.format(share=0.25, cap=2)).routing[0]
    assert (rule.mirror, rule.mirror_max_spend_usd) == (0.25, 2.0)
    assert parse_policy('[[routing]]\nname = "r"\nto = "gpt-4o-mini"\n').routing[0].mirror == 0.0
    with pytest.raises(PolicyError, match="mirror"):
        parse_policy(POLICY.format(share=1.5, cap=1))


def test_mirror_sends_the_target_model_without_streaming_within_its_spend_cap(tmp_path):
    with FakeProvider() as provider:
        # Each fake answer costs about $0.00001 at gpt-4o-mini's price: a cap of $0.00002 lets
        # two or three through, never all ten.
        mirror = Mirror(parse_policy(POLICY.format(share=1, cap=0.00002)), tmp_path, PriceTable.load(), workers=1)
        url = f"{provider.url}/v1/chat/completions"
        for i in range(10):
            mirror.submit(f"r{i}", "to-mini", url, body(f"question {i}", stream=True), {"authorization": "Bearer k"})
        mirror.submit("r-not-chat", "to-mini", url, b'{"input": "an embedding"}', {})
        mirror.close()
        sent = [json.loads(r.body) for r in provider.requests]
    assert sent and all(b["model"] == "gpt-4o-mini" and "stream" not in b for b in sent)
    assert all(r.headers["authorization"] == "Bearer k" for r in provider.requests)
    counts = read_counts(tmp_path)
    assert counts["answered"] == len(sent) and 2 <= len(sent) < 10
    assert counts["spend_cap"] == 10 - len(sent) and counts["skipped_not_chat"] == 1
    rows = read_mirrors(tmp_path)
    assert rows.height == len(sent) and rows["answer"].is_not_null().all() and (rows["cost_usd"] > 0).all()


def test_an_unreachable_target_is_counted_not_raised(tmp_path):
    mirror = Mirror(parse_policy(POLICY.format(share=1, cap=1)), tmp_path, PriceTable.load(), timeout=2)
    mirror.submit("r0", "to-mini", "http://127.0.0.1:9/v1/chat/completions", body("hello"), {})
    mirror.close()
    [row] = read_mirrors(tmp_path).to_dicts()
    assert row["answer"] is None and row["error"].startswith("unreachable")
    assert read_counts(tmp_path)["error"] == 1


def test_shadow_proxy_mirrors_routed_calls_and_evaluate_compares_them(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(share=1, cap=1))
    data_dir = tmp_path / "data"
    with FakeProvider() as provider:
        args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", "shadow", "--force"]
        proxy = RunningProxy(llm_shadow_proxy_command(args, data_dir))
        try:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
            started = time.monotonic()
            for i in range(3):
                answer = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": f"What is {i} + {i}?"}]
                )
                assert answer.model.startswith("gpt-4o") and "mini" not in answer.model  # the client's own call
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "not routed"}])
            assert time.monotonic() - started < 60
            mirrored = wait_for(lambda: len(m := [r for r in provider.requests if b"gpt-4o-mini" in r.body]) >= 4 and m)
            assert mirrored, "nothing mirrored; proxy said:\n" + "".join(proxy.output[-20:])
            assert wait_for(lambda: read_mirrors(data_dir).height == 3)
        finally:
            proxy.stop()
    rows = read_mirrors(data_dir)
    assert sorted(rows["rule"].unique().to_list()) == ["to-mini"] and rows["error"].is_null().all()
    result = CliRunner().invoke(app, ["evaluate", "--policy", str(policy), "--mirrored", "--data", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "to-mini" in result.output and "gpt-4o-mini" in result.output
    [evaluation] = [json.loads(p.read_text()) for p in Path(data_dir, "evaluations").glob("*/evaluation.json")]
    assert evaluation["source"] == "mirror" and evaluation["rules"]["to-mini"]["evaluated"] == 3
    assert evaluation["mirror_counts"] == {"sent": 3, "answered": 3}  # written when the proxy stopped
    assert "Mirrored by the proxy: answered 3, sent 3" in result.output


def test_evaluate_mirrored_without_mirrors_says_what_to_do(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(share=0.1, cap=1))
    result = CliRunner().invoke(app, ["evaluate", "--policy", str(policy), "--mirrored", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "no mirrored answers" in result.output
