"""Realised against simulated, end to end: a real `llm-shadow proxy` in shadow mode, then in
enforce mode on the same data directory (real openai SDK, fake provider upstream); then `stats
--policy`, `simulate` and `report` on that directory show what enforce mode saved, beside what
the simulation of the same calls predicted, with figures computed here from the calls made.

Each phase sends, one call at a time: the same cacheable question REPEATS times (one upstream
call, then REPEATS - 1 cache hits), one call for gpt-4o that the routing rule moves to
gpt-4o-mini, and two calls of a team whose budget the first one spends (the second is blocked).
"""

import json
from pathlib import Path

import openai
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.store.datadir import Store
from cli import app, realised_view
from reports.format import usd
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.headless_chromium import HeadlessChromium, find_chromium
from tests.sdk_support import API_KEY

POLICY = """
[cache.exact]
name = "exact"
ttl = "1h"
scope = "feature"

[[routing]]
name = "to-mini"
feature = "routed*"
to = "gpt-4o-mini"

[[budget]]
name = "capped-team"
scope = "team"
team = "capped*"
window = "day"
limit_usd = 0.000001
"""
REPEATS = 4
CALLS_PER_PHASE = REPEATS + 1 + 2


def send(url: str, phase: str) -> None:
    def client(feature: str, **headers: str) -> openai.OpenAI:
        headers = {"x-shadow-feature": feature, **headers}
        return openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, default_headers=headers)

    question = [{"role": "user", "content": f"What is the capital of France? ({phase})"}]
    cached = client(f"faq-{phase}")
    for _ in range(REPEATS):
        cached.chat.completions.create(model="gpt-4o-mini", messages=question, temperature=0)
    client(f"routed-{phase}").chat.completions.create(model="gpt-4o", messages=question, temperature=0.5)
    capped = client(f"budget-{phase}", **{"x-shadow-team": f"capped-{phase}"})
    capped.chat.completions.create(model="gpt-4o-mini", messages=question, temperature=0.5)
    try:
        capped.chat.completions.create(model="gpt-4o-mini", messages=question, temperature=0.5)
    except openai.RateLimitError:
        assert phase == "enforce"


def run_phase(provider: FakeProvider, data: Path, policy: Path, mode: str, expected: int) -> None:
    args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", mode, "--force"]
    proxy = RunningProxy(llm_shadow_proxy_command(args, data))
    try:
        send(proxy.url, mode)
        store = Store(data)
        done = wait_for(lambda: store.requests_frame().height == expected, timeout=30)
        assert done, "".join(proxy.output[-20:])
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("realised")
    policy, data = tmp / "policy.toml", tmp / "data"
    policy.write_text(POLICY)
    with FakeProvider() as provider:
        run_phase(provider, data, policy, "shadow", CALLS_PER_PHASE)
        run_phase(provider, data, policy, "enforce", 2 * CALLS_PER_PHASE)
        upstream = len(provider.requests)
    # Shadow mode sent every call; enforce mode all but the cache hits and the blocked call.
    assert upstream == CALLS_PER_PHASE + CALLS_PER_PHASE - (REPEATS - 1) - 1
    return policy, data


def calls(data: Path, feature: str) -> list[dict]:
    return Store(data).requests_frame().filter(pl.col("feature") == feature).sort("ts", "id").to_dicts()


def row(view, policy: str, mode: str) -> dict:
    [found] = view.rows.filter((pl.col("policy") == policy) & (pl.col("mode") == mode)).to_dicts()
    return found


def enforce_savings(data: Path) -> tuple[float, float]:
    """(cache, routing): what enforce mode saved, from the calls made. REPEATS - 1 hits, each the
    first call's cost; the routed call's tokens at gpt-4o's price minus what it cost on gpt-4o-mini."""
    first, *hits = calls(data, "faq-enforce")
    assert [c["outcome"] for c in hits] == ["cached"] * (REPEATS - 1)
    [routed] = calls(data, "routed-enforce")
    assert routed["model_requested"] == "gpt-4o-mini"
    at_gpt4o = (
        PriceTable.load(data)
        .cost(provider="openai", model="gpt-4o", usage=Usage(routed["input_tokens"], routed["output_tokens"]))
        .cost_usd
    )
    assert at_gpt4o > routed["cost_usd"] > 0
    return (REPEATS - 1) * first["cost_usd"], at_gpt4o - routed["cost_usd"]


def test_stats_shows_what_enforce_mode_saved_beside_the_simulation(recorded):
    policy, data = recorded
    cache_saving, routing_saving = enforce_savings(data)

    view = realised_view(data, policy, None, None)
    assert view.calls == 2 * CALLS_PER_PHASE

    exact = row(view, "exact", "enforce")
    assert (exact["simulated"], exact["decided"], exact["acted"], exact["differ"]) == (REPEATS - 1,) * 3 + (0,)
    assert exact["realised_usd"] == pytest.approx(cache_saving)
    assert exact["simulated_usd"] == pytest.approx(cache_saving)
    route = row(view, "to-mini", "enforce")
    assert (route["simulated"], route["acted"], route["differ"]) == (1, 1, 0)
    assert route["realised_usd"] == pytest.approx(routing_saving)
    assert route["simulated_usd"] == pytest.approx(routing_saving)
    budget = row(view, "capped-team", "enforce")
    assert (budget["acted"], budget["unanswered"], budget["realised_usd"]) == (1, 1, None)

    # Shadow mode decided what the simulation predicts (parity) and acted on nothing.
    shadow_first, *_ = calls(data, "faq-shadow")
    shadow = row(view, "exact", "shadow")
    assert (shadow["simulated"], shadow["decided"], shadow["differ"], shadow["acted"]) == (
        REPEATS - 1,
        REPEATS - 1,
        0,
        0,
    )
    assert shadow["simulated_usd"] == pytest.approx((REPEATS - 1) * shadow_first["cost_usd"])
    assert row(view, "capped-team", "shadow")["unanswered"] == 0
    assert view.totals["differ"] == 0
    assert view.totals["realised_usd"] == pytest.approx(cache_saving + routing_saving)

    printed = CliRunner().invoke(app, ["stats", "--policy", str(policy), "--data", str(data)], env={"COLUMNS": "200"})
    assert printed.exit_code == 0, printed.output
    assert "Realised against simulated" in printed.output
    words = " ".join(printed.output.split())
    assert f"realised saving {usd(cache_saving + routing_saving)};" in words
    assert "1 calls refused, unanswered" in words

    without = CliRunner().invoke(app, ["stats", "--data", str(data)], env={"COLUMNS": "200"})
    assert without.exit_code == 0 and "Realised against simulated" in without.output
    assert "--policy" in without.output  # says how to add the simulation


def test_simulate_reads_enforce_days_back_as_the_calls_they_stood_for(recorded):
    """The cached calls count in the baseline at their answered call's cost and are cache hits
    again; the routed call is back at gpt-4o; the blocked call has no cost."""
    policy, data = recorded
    out = CliRunner().invoke(
        app, ["simulate", "--policy", str(policy), "--format", "json", "--no-save", "--data", str(data)]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["totals"]["cache_hits"] == 2 * (REPEATS - 1)
    assert result["totals"]["routed"] == 2
    first = calls(data, "faq-enforce")[0]
    by_policy = {p["name"]: p for p in result["by_policy"]}
    shadow_first = calls(data, "faq-shadow")[0]
    assert by_policy["exact"]["saving_usd"] == pytest.approx(
        (REPEATS - 1) * (first["cost_usd"] + shadow_first["cost_usd"])
    )
    assert result["totals"]["unbilled_requests"] == 1  # the call enforce mode blocked: never sent


def test_the_report_shows_the_realised_view_in_html_and_markdown(recorded, tmp_path):
    policy, data = recorded
    cache_saving, routing_saving = enforce_savings(data)
    md = CliRunner().invoke(app, ["report", "--policy", str(policy), "--format", "md", "--data", str(data)])
    assert md.exit_code == 0, md.output
    section = md.output.split("### Realised against simulated", 1)[1].split("### Data quality", 1)[0]
    enforced_cache = next(line for line in section.splitlines() if line.startswith("| exact | exact_cache | enforce |"))
    assert enforced_cache.split(" | ")[3:] == ["3", usd(cache_saving), "-", "3", "0", "3", usd(cache_saving), "0 |"]
    assert f"**{usd(cache_saving + routing_saving)}**" in section

    out = tmp_path / "report.html"
    html = CliRunner().invoke(app, ["report", "--policy", str(policy), "--out", str(out), "--data", str(data)])
    assert html.exit_code == 0, html.output
    executable = find_chromium()
    if executable is None:
        pytest.fail("chromium is not installed: run .ci/install-system-deps (apt-get install chromium)")
    with HeadlessChromium(executable) as browser:
        page = browser.open_page(out.resolve().as_uri())
        cells = page.evaluate(
            """[...document.querySelectorAll('#realised-table tr[data-mode="enforce"]')]
                 .map(r => [r.dataset.policy, r.querySelector('.realised-usd').innerText])"""
        )
        total = page.evaluate("document.querySelector('#realised-total th:nth-child(10)').innerText")
        visible = page.evaluate("document.getElementById('realised').getBoundingClientRect().height")
        browser.pump(0.2)
        assert page.log.problems() == []
        assert page.evaluate("document.documentElement.scrollWidth") <= browser.width, "the page scrolls sideways"
    assert cells == [["exact", usd(cache_saving)], ["to-mini", usd(routing_saving)], ["capped-team", "-"]]
    assert total == usd(cache_saving + routing_saving)
    assert visible > 100


def test_explain_reads_an_enforced_hit_as_the_hit_it_was(recorded):
    policy, data = recorded
    first, second, *_ = calls(data, "faq-enforce")
    args = ["explain", second["id"], "--policy", str(policy), "--format", "json", "--data", str(data)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    explained = json.loads(out.output)
    step = explained["steps"][0]
    assert step["outcome"] == "hit" and f"request {first['id']}" in step["reasons"][0]
    # Read back as the call it stood for: it would have cost what the answered call cost.
    assert (explained["request"]["outcome"], explained["request"]["input_tokens"]) == ("ok", first["input_tokens"])
    assert explained["decision"]["saving_cache"] == pytest.approx(first["cost_usd"]) and first["cost_usd"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "{tmp}/missing.toml"], "no such file"),
        (["--policy", "{policy}", "--format", "json"], "--policy adds the realised view to the table"),
        (["--policy", "{tmp}/bad.toml"], "bad.toml"),
    ],
)
def test_bad_stats_policy_options_are_one_line_errors(recorded, tmp_path, args, message):
    policy, data = recorded
    (tmp_path / "bad.toml").write_text('[[routing]]\nname = "x"\nto = 3\n')
    args = [a.format(tmp=tmp_path, policy=policy) for a in args]
    out = CliRunner().invoke(app, ["stats", *args, "--data", str(data)])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1


def test_enforcing_the_cache_and_a_budget_with_routing_kept_in_shadow(tmp_path):
    """The README's step 4: the exact cache and the budget act, the routing rule (mode = "shadow")
    only logs; the view says so entry by entry, and the simulation agrees with every decision."""
    policy, data = tmp_path / "policy.toml", tmp_path / "data"
    policy.write_text(POLICY.replace('to = "gpt-4o-mini"\n', 'to = "gpt-4o-mini"\nmode = "shadow"\n'))
    with FakeProvider() as provider:
        run_phase(provider, data, policy, "enforce", CALLS_PER_PHASE)
        upstream = [json.loads(r.body)["model"] for r in provider.requests]
    assert len(upstream) == CALLS_PER_PHASE - (REPEATS - 1) - 1 and "gpt-4o" in upstream  # not routed
    first = calls(data, "faq-enforce")[0]
    view = realised_view(data, policy, None, None)
    exact, route, budget = (
        row(view, *key) for key in (("exact", "enforce"), ("to-mini", "shadow"), ("capped-team", "enforce"))
    )
    assert (exact["acted"], exact["realised_usd"]) == (REPEATS - 1, pytest.approx((REPEATS - 1) * first["cost_usd"]))
    assert (route["decided"], route["acted"], route["realised_usd"], route["simulated"]) == (1, 0, None, 1)
    assert (budget["acted"], budget["unanswered"]) == (1, 1)
    assert view.totals["differ"] == 0
    assert {d["mode"] for d in Store(data).decisions_frame().filter(pl.col("policy") == "to-mini").to_dicts()} == {
        "shadow"
    }
