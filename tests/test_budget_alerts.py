"""Budget alerts (`alert_at`): the policy keys, the simulator's list, the state every backend
keeps for them, and the payload a Slack incoming webhook accepts.

Live alerts through a real proxy are in tests/test_budget_alerts_proxy.py.
"""

import threading

import pytest

from analysis.enforce.alerts import slack_payload, webhook_urls
from analysis.enforce.webhook import WebhookSender
from analysis.shared_state.backend import RedisBackend
from analysis.simulate.alerts import alert_line, fire
from analysis.simulate.facts import state_key
from analysis.simulate.policy import PolicyError, parse_policy
from analysis.simulate.state import MemoryBackend
from tests.simulate_helpers import run

BUDGET = """
[[budget]]
name = "team-day"
scope = "team"
window = "day"
limit_usd = 0.10
alert_at = [0.95, 0.8]
"""


def test_alert_keys_are_read_and_checked():
    budget = parse_policy(BUDGET + 'alert_webhook_env = "TEAM_HOOK"\n').budgets[0]
    assert budget.alert_at == (0.8, 0.95) and budget.alert_webhook_env == "TEAM_HOOK"
    bad = {  # what follows the budget -> (line at fault, message)
        "alert_at = [0]\n": (5, "above 0 and at most 1"),
        "alert_at = [1.5]\n": (5, "above 0 and at most 1"),
        'alert_at = "0.8"\n': (5, "expected a list"),
        'alert_at = [0.8]\nalert_webhook_env = "not a name"\n': (6, "expected the name of an environment variable"),
        'alert_webhook_env = "HOOK"\n': (5, 'a webhook needs "alert_at"'),
    }
    head = '[[budget]]\nname = "b"\nwindow = "day"\nlimit_usd = 1\n'
    for extra, (line, message) in bad.items():
        with pytest.raises(PolicyError) as e:
            parse_policy(head + extra, "policy.toml")
        assert message in str(e.value) and str(e.value).startswith(f"policy.toml:{line}:")


def test_webhook_url_is_read_from_the_environment_the_policy_names(monkeypatch):
    policy = parse_policy(BUDGET + 'alert_webhook_env = "TEAM_HOOK"\n', "policy.toml")
    monkeypatch.delenv("TEAM_HOOK", raising=False)
    with pytest.raises(PolicyError, match="policy.toml:8: .*the environment variable TEAM_HOOK is not set"):
        webhook_urls(policy)
    monkeypatch.setenv("TEAM_HOOK", "hooks.slack.com/x")
    with pytest.raises(PolicyError, match="holds no http\\(s\\) URL"):
        webhook_urls(policy)
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.slack.com/services/T/B/X")
    assert webhook_urls(policy) == {"team-day": "https://hooks.slack.com/services/T/B/X"}


def test_simulator_lists_each_share_once_per_window_and_scope_value():
    # search spends 0.03 a call: 0.09 after the third call (>= 0.08), 0.12 after the fourth
    # (>= 0.095); its fifth is blocked and fires nothing. ads reaches 0.08 only on the next day.
    rows = [{"team": "search", "cost_usd": 0.03, "model_requested": "gpt-4o" if i else "gpt-4o-mini"} for i in range(5)]
    rows += [{"team": "ads", "cost_usd": 0.04, "t": 10 + i, "feature": f"f{i}"} for i in range(2)]
    rows += [{"team": "ads", "cost_usd": 0.04, "t": 86_400 + i} for i in range(2)]
    result = run(BUDGET, rows)
    [budget] = result.budgets
    alerts = [(a["scope_value"], a["window_start"][:10], a["share"], a["request_id"]) for a in budget["alerts"]]
    assert alerts == [
        ("search", "2025-03-03", 0.8, "r2"),
        ("search", "2025-03-03", 0.95, "r3"),
        ("ads", "2025-03-03", 0.8, "r6"),
        ("ads", "2025-03-04", 0.8, "r8"),
    ]
    first, second = budget["alerts"][:2]
    assert first["spend_usd"] == pytest.approx(0.09) and first["limit_usd"] == 0.10
    assert first["spent_share"] == pytest.approx(0.9)
    assert first["top_models"] == [
        {"model": "gpt-4o", "spend_usd": pytest.approx(0.06)},
        {"model": "gpt-4o-mini", "spend_usd": pytest.approx(0.03)},
    ]
    assert second["top_features"] == [{"feature": "chat", "spend_usd": pytest.approx(0.12)}]
    assert budget["alert_at"] == [0.8, 0.95]
    assert result.to_dict()["budgets"][0]["alerts"][0]["fired_at"].startswith("2025-03-03T09:00:02")


def test_cache_hits_and_unpriced_calls_charge_nothing_and_alert_nothing():
    policy = BUDGET.replace("[0.95, 0.8]", "[0.5]") + '[cache.exact]\nname = "exact"\n'
    rows = [{"team": "t", "cost_usd": 0.04, "t": i * 10} for i in range(3)]  # one prompt: two cache hits
    rows += [{"team": "t", "cost_usd": None, "prompt_hash": "other", "t": 40}]
    assert run(policy, rows).budgets[0]["alerts"] == []
    rows.append({"team": "t", "cost_usd": 0.02, "prompt_hash": "third", "t": 50})
    [alert] = run(policy, rows).budgets[0]["alerts"]
    assert (alert["request_id"], alert["spend_usd"]) == ("r4", pytest.approx(0.06))


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        return MemoryBackend()
    return RedisBackend(request.getfixturevalue("redis_server").url)


def test_alert_state_fires_once_and_names_the_top_spenders(backend):
    budget = parse_policy(BUDGET).budgets[0]
    state = backend.budget_alerts(budget.name)
    key = state_key("search", 20_150)
    state.add(key, "gpt-4o", "chat", 0.05)
    assert fire(budget, state, key, 0.05, "r1", 0) == []
    state.add(key, "gpt-4o-mini", "chat", 0.02)
    state.add(key, "gpt-4o", None, 0.02)
    [alert] = fire(budget, state, key, 0.09, "r3", 0)
    assert (alert.share, alert.request_id, alert.scope_value) == (0.8, "r3", "search")
    assert alert.top_models == (("gpt-4o", pytest.approx(0.07)), ("gpt-4o-mini", pytest.approx(0.02)))
    assert alert.top_features == (("chat", pytest.approx(0.07)), ("", pytest.approx(0.02)))
    assert [a.share for a in fire(budget, state, key, 0.2, "r4", 0)] == [0.95]
    assert fire(budget, state, key, 0.3, "r5", 0) == []
    # The same state asked for again (a reload, another proxy on the same Redis) remembers.
    assert backend.budget_alerts(budget.name).claim(key, 0.8) is False
    assert backend.budget_alerts(budget.name).claim(state_key("ads", 20_150), 0.8) is True


def test_redis_claim_is_won_by_exactly_one_of_many_racers(redis_server):
    states = [RedisBackend(redis_server.url).budget_alerts("b") for _ in range(8)]
    won: list[bool] = []
    barrier = threading.Barrier(len(states))

    def race(state) -> None:
        barrier.wait()
        won.append(state.claim("k", 0.8))

    threads = [threading.Thread(target=race, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(won) == [False] * 7 + [True]


def test_payload_is_a_slack_message_with_the_figures():
    budget = parse_policy(BUDGET).budgets[0]
    state = MemoryBackend().budget_alerts(budget.name)
    key = state_key("search", 20_150)
    state.add(key, "gpt-4o", "chat", 0.09)
    [alert] = fire(budget, state, key, 0.09, "r3", 1_741_000_000_000_000)
    payload = slack_payload(alert)
    assert payload["text"] == (
        "llm-shadow: budget 'team-day' (team 'search', day 2025-03-03) reached 80% of its limit: "
        "$0.0900 of $0.1000 spent"
    )
    assert payload["text"] == f"llm-shadow: {alert_line(alert)}"
    fields = [f["text"] for f in payload["blocks"][1]["fields"]]
    assert "*Spend*\n$0.0900 of $0.1000 (90.0%)" in fields
    assert "*Top models (up to 5)*\ngpt-4o: $0.0900" in fields
    assert payload["llm_shadow"]["spend_usd"] == 0.09 and payload["llm_shadow"]["share"] == 0.8


def test_sender_counts_a_webhook_that_cannot_be_reached():
    sender = WebhookSender(timeout_s=1)
    sender.submit("http://127.0.0.1:9/hook", {"text": "x"})  # port 9: nothing listens
    sender.close(timeout_s=5)
    assert sender.counts["failed"] == 1 and sender.counts["sent"] == 0
