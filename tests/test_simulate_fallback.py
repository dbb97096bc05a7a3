"""Fallback rules: read strictly from the policy file, and counted on recorded failures.

The traffic below is built by hand so that every figure of the fallback section can be counted
by reading it: which failures a rule handles, which attempt rescues each, what it costs."""

import pytest

from analysis.pricing.table import PriceTable
from analysis.simulate.enforceable import not_enforceable
from analysis.simulate.fallback import Fallbacks, failure_kind
from analysis.simulate.policy import PolicyError, parse_policy
from analysis.simulate.pricer import Pricer, PricingRows
from tests.simulate_helpers import run

POLICY = """\
[[fallback]]
name = "batch-retry"
team = "batch"
retries = 1
backoff_ms = 100

[[fallback]]
name = "gpt-4o-outage"
model = "gpt-4o"
retries = 2
backoff_ms = 1000
timeout_s = 20
chain = [
  { to = "gpt-4o-mini" },
  { to = "gpt-4o", to_url = "https://backup.example.com/v1" },
]
"""

NO_TOKENS = {"input_tokens": None, "output_tokens": None, "cost_usd": None, "cost_source": "none", "latency_ms": 0.0}


def failed(status: int | None, outcome: str, **extra) -> dict:
    return {**NO_TOKENS, "status": status, "outcome": outcome, **extra}


ROWS = [
    {"t": 0, "prompt_hash": "p0"},  # r0: answered
    # r1: its 503 came after 0.5 s; the first retry, 1 s later (11.5), finds the client's own retry r2 answered
    failed(503, "server_error", t=10, prompt_hash="p1", latency_ms=500.0),
    {"t": 11.5, "prompt_hash": "p1"},  # r2
    failed(429, "rate_limited", t=100, prompt_hash="p3"),  # r3: gpt-4o keeps failing (r4): gpt-4o-mini (r5 ok)
    failed(503, "server_error", t=100.5, prompt_hash="p4"),  # r4: the same
    {"t": 50, "model_requested": "gpt-4o-mini", "model": "gpt-4o-mini", "prompt_hash": "p5"},  # r5
    failed(503, "server_error", t=200, model_requested="gpt-4o-mini", model="gpt-4o-mini", prompt_hash="p6"),  # r6
    failed(None, "connect_error", t=300, prompt_hash="p7"),  # r7: refused; gpt-4o, then the mini failing: backup
    {"t": 400, "status": 400, "outcome": "client_error", "prompt_hash": "p8"},  # r8: not a failure it handles
    failed(500, "server_error", t=500, prompt_hash="p9"),  # r9: gpt-4o-mini failing too (r10): backup, never seen
    failed(503, "server_error", t=499, model_requested="gpt-4o-mini", model="gpt-4o-mini", prompt_hash="p10"),  # r10
    failed(502, "server_error", t=600, team="batch", prompt_hash="p11"),  # r11: one retry, nothing answers
]


def test_rescued_failures_counted_by_hand():
    result = run(POLICY, ROWS)
    section = result.to_dict()["fallback"]
    assert section["failures"] == 8  # r1 r3 r4 r6 r7 r9 r10 r11
    assert section["handled"] == 6
    assert section["unhandled"] == {"5xx": 2}  # r6, r10: gpt-4o-mini, no rule matches it
    batch, outage = section["rules"]
    assert batch["failures"] == 1 and batch["not_rescued"] == 1 and batch["attempts"] == 1 and batch["rescued"] == 0
    assert outage["failures"] == 5
    assert outage["by_kind"] == {"5xx": 3, "429": 1, "connect_error": 1}
    assert outage["rescued"] == 5  # a refused connection (r7) is rescued live like a 5xx
    assert outage["rescued_by"] == {"retry": 1, "gpt-4o-mini": 2, "gpt-4o at backup.example.com": 2}
    assert outage["rescued_assumed"] == 2  # r7, r9: nothing was ever recorded at the backup
    assert outage["not_rescued"] == 0
    assert outage["attempts"] == 1 + 3 + 3 + 4 + 4  # r1: first retry; r3, r4: the mini; r7, r9: the backup
    assert outage["client_retried"] == 1  # r1, by r2
    assert outage["wait_s"] == pytest.approx(1.0 + 4 * 3.0)  # r1 after 1 s; the others after the 1 s and 2 s backoffs
    # Only r1 has tokens to price (its client's retry r2: 1000 in, 100 out at gpt-4o).
    assert outage["unpriced"] == 4
    pricer = Pricer(PriceTable.load())
    one = pricer.costs_at(PricingRows.from_record({**ROWS[2], "provider": "openai"} | _tokens()), "gpt-4o", None)[0]
    assert one > 0
    assert outage["estimated_cost_usd"] == pytest.approx(one)
    assert outage["estimated_cost_usd"] == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)  # gpt-4o list price


def _tokens() -> dict:
    return {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "reasoning_tokens": 0,
    }


def test_no_fallback_rule_no_section():
    assert run('[[routing]]\nname = "r"\nmodel = "x"\nto = "gpt-4o-mini"\n', ROWS).to_dict()["fallback"] is None


def test_failure_kinds():
    assert failure_kind(429, "rate_limited") == "429"
    assert failure_kind(503, "server_error") == "5xx"
    assert failure_kind(None, "timeout") == "timeout"
    assert failure_kind(None, "connect_error") == "connect_error"
    assert failure_kind(200, "upstream_cut") is None  # a stream cut after its first byte: never
    assert failure_kind(400, "client_error") is None
    assert failure_kind(None, "client_disconnected") is None


def test_plan_retries_then_chain_with_doubling_backoff():
    policy = parse_policy(POLICY, "policy.toml")
    plan = Fallbacks(policy).plan({"model_requested": "gpt-4o", "team": "search"}, 503, "server_error")
    assert plan is not None and plan.rule.name == "gpt-4o-outage"
    assert [(a.action, a.model, a.url, a.backoff_s) for a in plan.attempts] == [
        ("retry", "gpt-4o", None, 1.0),
        ("retry", "gpt-4o", None, 2.0),
        ("fallback", "gpt-4o-mini", None, 0.0),
        ("fallback", "gpt-4o", "https://backup.example.com/v1", 0.0),
    ]
    only_503 = parse_policy('[[fallback]]\nname = "f"\non = ["503"]\nretries = 1\n', "p.toml")
    assert Fallbacks(only_503).plan({"model": "m"}, 503, "server_error") is not None
    assert Fallbacks(only_503).plan({"model": "m"}, 500, "server_error") is None
    assert Fallbacks(only_503).plan({"model": "m"}, 429, "rate_limited") is None


@pytest.mark.parametrize(
    "body, message",
    [
        ('on = ["404"]\nretries = 1', '"on": expected values among 429, 5xx, timeout, connect_error or a 5xx status'),
        ("retries = 0", "does nothing"),
        ("retries = 11", '"retries": expected at most 10'),
        ("retries = -1", '"retries": expected an integer >= 0'),
        ("timeout_s = 0\nretries = 1", '"timeout_s": expected a number >= 0.001'),
        ('chain = "gpt-4o-mini"', '"chain": expected a list of tables'),
        ("chain = [{ model = 'x' }]", 'missing "to"'),
        ("chain = [{ to = 'x', to_url = 'ftp://a' }]", "expected a URL"),
        ("chain = [{ to = 'x', to_api_key_env = 'K' }]", 'only a step with "to_url" takes a key'),
        ("retries = 1\nbackof_ms = 3", '"backof_ms": unknown key'),
    ],
)
def test_bad_fallback_rules_are_one_line_errors(body, message):
    with pytest.raises(PolicyError) as caught:
        parse_policy(f'[[fallback]]\nname = "f"\n{body}\n', "policy.toml")
    text = str(caught.value)
    assert text.startswith("policy.toml:") and "\n" not in text
    assert message in text


def test_chain_step_in_another_wire_format_is_not_enforceable():
    policy = parse_policy(
        '[[fallback]]\nname = "to-claude"\nmodel = "gpt-4o"\nchain = [{ to = "claude-3-5-haiku-latest" }]\n', "p.toml"
    )
    found = not_enforceable(policy, check_environment=False)
    assert len(found) == 1 and "anthropic wire format" in found[0][2]
    shadow = parse_policy(
        '[[fallback]]\nname = "to-claude"\nmode = "shadow"\nmodel = "gpt-4o"\n'
        'chain = [{ to = "claude-3-5-haiku-latest" }]\n',
        "p.toml",
    )
    assert not_enforceable(shadow, check_environment=False) == []
    result = run(policy.text, ROWS)
    assert any("to-claude" in note and "not enforceable" in note for note in result.notes)


def test_names_unique_across_fallback_and_other_kinds():
    with pytest.raises(PolicyError, match="used twice"):
        parse_policy('[[routing]]\nname = "a"\nto = "gpt-4o-mini"\n[[fallback]]\nname = "a"\nretries = 1\n', "p.toml")


def test_enforce_mode_refuses_a_chain_step_in_another_wire_format_in_one_line():
    from analysis.simulate.enforceable import check_enforceable

    text = '[[fallback]]\nname = "to-claude"\nmodel = "gpt-4o"\nchain = [{ to = "claude-3-5-haiku-latest" }]\n'
    with pytest.raises(PolicyError) as caught:
        check_enforceable(parse_policy(text, "policy.toml"))
    assert str(caught.value) == (
        "policy.toml:4: [[fallback]] \"chain\": 'claude-3-5-haiku-latest' speaks the anthropic wire format, "
        "the matched models openai: not enforceable (a fallback resends the same request)"
    )


def test_cli_json_table_and_both_report_formats_show_the_rescues(tmp_path):
    import json

    from typer.testing import CliRunner

    from analysis.store.datadir import SegmentWriter, Store
    from cli import app
    from tests.simulate_helpers import requests_frame

    data, policy = tmp_path / "data", tmp_path / "policy.toml"
    policy.write_text(POLICY)
    SegmentWriter(Store(data)).write(requests_frame(ROWS).to_dicts(), [])
    runner = CliRunner()

    def invoke(*args) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    document = json.loads(invoke("simulate", "--policy", policy, "--data", data, "--format", "json", "--no-save"))
    outage = document["fallback"]["rules"][1]
    assert (outage["rescued"], outage["rescued_assumed"]) == (5, 2)
    table = invoke("simulate", "--policy", policy, "--data", data, "--no-save")
    assert "8 recorded failures" in table and "6 handled by a rule" in table and "estimates" in table
    assert "retry 1, gpt-4o-mini 2" in " ".join(table.split())
    for fmt in ("html", "md"):
        out = tmp_path / f"report.{fmt}"
        invoke("report", "--policy", policy, "--data", data, "--format", fmt, "--out", out)
        text = out.read_text()
        assert "8 recorded failures" in text and "gpt-4o-outage" in text
        assert "retry 1, gpt-4o-mini 2, gpt-4o at backup.example.com 2" in text


def test_explain_says_what_the_rule_would_do_about_a_failed_answer():
    from analysis.simulate.explain import explain
    from analysis.simulate.simulator import build_engine
    from tests.simulate_helpers import requests_frame

    engine = build_engine(parse_policy(POLICY, "policy.toml"), PriceTable.load())
    frame = requests_frame(ROWS)

    def fallback_step(request_id: str):
        return [s for s in explain(engine, frame, None, request_id).steps if s.kind == "fallback"]

    [step] = fallback_step("r1")
    assert (step.policy, step.outcome) == ("gpt-4o-outage", "retry")
    assert step.reasons == [
        "5xx (503): retry 2 times, then fall back to gpt-4o-mini, then fall back to gpt-4o at "
        "https://backup.example.com/v1."
    ]
    [step] = fallback_step("r7")
    assert "Not rescuable live" in step.reasons[0]
    [step] = fallback_step("r6")
    assert (step.policy, step.outcome) == ("-", "no match")
    assert fallback_step("r0") == []  # answered: nothing to say
