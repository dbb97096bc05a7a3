"""In enforce mode a budget counts every call that really reached the upstream: one that a
cache entry in shadow mode would have answered, or that a budget in shadow mode would have
blocked, goes upstream and costs money, so it is charged like any other call.

Driven through `LivePolicy` (decide, then settle when the call went upstream, as
addons.enforcer does) with the memory backend; the proxy end to end is tests/test_enforce.py.
"""

from analysis.enforce.decisions import decision_rows
from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.simulate.engine import PolicyEngine
from analysis.simulate.policy import parse_policy
from analysis.simulate.pricer import Pricer
from analysis.simulate.replay import decisions_frame
from analysis.simulate.simulator import replay_frames
from tests.enforce_support import T0, chat_record
from tests.simulate_helpers import requests_frame

COST = 0.001  # each call's cost, as the recorder would price it
ANSWER = (b'{"choices": [{"message": {"content": "Paris"}}]}',)
BUDGET = """
[[budget]]
name = "team-cap"
scope = "team"
window = "day"
limit_usd = 0.0025
"""


def call(live: LivePolicy, n: int, prompt: str, team: str = "search"):
    """One call, decided; settled (charged COST) unless the proxy answered or refused it."""
    at = T0 + n
    record = chat_record(n, prompt, at, team=team)
    verdict = live.decide(record, "openai_chat")
    if verdict.action not in ("answer", "refuse"):
        live.settle(verdict, True, COST, at + 0.5, 200, ((b"content-type", b"application/json"),), ANSWER)
    return verdict


def live_policy(text: str, mode: str = "enforce") -> LivePolicy:
    return LivePolicy(parse_policy(text), mode, PriceTable.load())


def test_a_call_a_shadow_cache_entry_would_have_answered_is_charged():
    live = live_policy('[cache.exact]\nname = "exact"\nttl = "1h"\nmode = "shadow"\n' + BUDGET)
    assert call(live, 0, "capital of France").action == "pass"  # miss: charged, stored
    hit = call(live, 1, "capital of France")
    assert (hit.decision.disposition, hit.action) == ("exact_hit", "pass")  # logged, not served
    assert call(live, 2, "another question").action == "pass"  # 3 x 0.001 > 0.0025 after this one
    refused = call(live, 3, "a third question")
    assert (refused.action, refused.decision.budget_by) == ("refuse", "team-cap")


def test_a_served_hit_costs_nothing():
    live = live_policy('[cache.exact]\nname = "exact"\nttl = "1h"\n' + BUDGET)
    call(live, 0, "capital of France")
    assert call(live, 1, "capital of France").action == "answer"  # served from the cache: free
    call(live, 2, "another question")
    assert call(live, 3, "a third question").action == "pass"  # 0.002 spent: under the limit


def test_calls_a_shadow_budget_would_have_blocked_are_charged_to_an_enforcing_one():
    shadow_cap = BUDGET.replace('"team-cap"', '"shadow-cap"').replace("0.0025", "0.0015") + 'mode = "shadow"\n'
    live = live_policy(BUDGET + shadow_cap)
    assert [call(live, n, f"question {n}").action for n in range(2)] == ["pass", "pass"]
    logged = call(live, 2, "question 2")  # shadow-cap is spent: logged as a block, sent anyway
    assert (logged.decision.budget_logged, logged.action) == ("shadow-cap", "pass")
    assert [(r["policy"], r["action"], r["mode"]) for r in logged.rows] == [("shadow-cap", "block", "shadow")]
    refused = call(live, 3, "question 3")
    assert (refused.action, refused.decision.budget_by) == ("refuse", "team-cap")


SHADOW_CAP = BUDGET.replace('"team-cap"', '"shadow-cap"').replace("0.0025", "0.0015") + 'mode = "shadow"\n'


def test_a_shadow_budget_listed_first_does_not_hide_an_enforcing_one():
    live = live_policy(SHADOW_CAP + BUDGET)
    assert [call(live, n, f"question {n}").action for n in range(2)] == ["pass", "pass"]
    logged = call(live, 2, "question 2")  # shadow-cap is spent (0.002): logged, sent; team-cap is not
    assert logged.action == "pass"
    assert [(r["policy"], r["action"], r["mode"]) for r in logged.rows] == [("shadow-cap", "block", "shadow")]
    refused = call(live, 3, "question 3")  # team-cap is spent too (0.003 >= 0.0025): refused
    assert (refused.action, refused.decision.budget_by) == ("refuse", "team-cap")
    assert [(r["policy"], r["action"], r["mode"]) for r in refused.rows] == [
        ("shadow-cap", "block", "shadow"),
        ("team-cap", "block", "enforce"),
    ]


def test_the_simulator_told_the_entry_modes_decides_as_enforce_mode():
    """The engine's `log_only` is how enforce mode runs the simulator's code; replayed over the
    same calls (charged at once, as the simulator does), it gives the rows enforce mode logged."""
    policy = parse_policy(SHADOW_CAP + BUDGET)
    live = LivePolicy(policy, "enforce", PriceTable.load())
    live_rows = [row for n in range(5) for row in call(live, n, f"question {n}").rows]
    frame = requests_frame(
        [
            {
                "t": n,
                "cost_usd": COST,
                "prompt_hash": f"sha256:question {n}",
                "model": "gpt-4o-mini",
                "temperature": 0.0,
            }
            for n in range(5)
        ]
    )
    engine = PolicyEngine(policy, Pricer(PriceTable.load()), log_only=frozenset({"shadow-cap"}))
    replayed = replay_frames(engine, frame)
    simulated_rows = [
        row
        for decision in decisions_frame(engine, replayed.facts, replayed.trace).iter_rows(named=True)
        for row in decision_rows(decision, policy, None, live.mode_of)
    ]

    def key(rows: list[dict]) -> list[tuple]:
        return [(r["id"], r["policy"], r["action"], r["mode"]) for r in rows]

    assert key(live_rows) == key(simulated_rows)
    assert key(live_rows) == [
        ("r2", "shadow-cap", "block", "shadow"),
        ("r3", "shadow-cap", "block", "shadow"),
        ("r3", "team-cap", "block", "enforce"),
        ("r4", "shadow-cap", "block", "shadow"),
        ("r4", "team-cap", "block", "enforce"),
    ]
