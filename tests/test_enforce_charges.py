"""In enforce mode a budget counts every call that really reached the upstream: one that a
cache entry in shadow mode would have answered, or that a budget in shadow mode would have
blocked, goes upstream and costs money, so it is charged like any other call.

Driven through `LivePolicy` (decide, then settle when the call went upstream, as
addons.enforcer does) with the memory backend; the proxy end to end is tests/test_enforce.py.
"""

from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import parse_policy
from tests.enforce_support import T0, chat_record

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
    assert (logged.decision.disposition, logged.decision.budget_by, logged.action) == ("blocked", "shadow-cap", "pass")
    refused = call(live, 3, "question 3")
    assert (refused.action, refused.decision.budget_by) == ("refuse", "team-cap")
