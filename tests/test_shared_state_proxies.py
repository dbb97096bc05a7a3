"""Several `llm-shadow proxy --mode enforce --state redis://...` processes on one real
redis-server behave as one proxy: a team budget trips at the same spend, a rate limit holds the
global rate, an answer cached by one is a hit on another (exact cache, and the semantic cache in
shadow and enforce mode); behind a real HAProxy the budget trips where one proxy's does; and Redis
killed mid-run breaks no call, is counted, and is shared again when it returns.

Each test uses its own team or feature, so the module's three proxies and one Redis serve all
of them. Calls are raw HTTP (the SDK paths are tested in tests/test_enforce.py and
tests/test_wrapped_keys_proxy.py): what matters here is which process answers.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from analysis.shared_state.redis_link import DEFAULT_RETRY_S as RETRY_S
from analysis.store.datadir import Store, query_frame
from tests.conftest import ROOT, RunningProxy, llm_shadow_proxy_command, subprocess_env, wait_for
from tests.fake_provider import FakeProvider
from tests.haproxy import HAProxy
from tests.redis_server import RedisServer

LIMIT_USD = 0.00004  # a few calls' worth at the fake provider's gpt-4o-mini usage
POLICY = f"""
[cache.exact]
name = "exact"
scope = "feature"

[[budget]]
name = "team-day"
scope = "team"
team = "budget-*"
window = "day"
limit_usd = {LIMIT_USD}

[[rate_limit]]
name = "five-a-minute"
scope = "feature"
feature = "rate-*"
requests_per_minute = 5
"""


class Fleet:
    def __init__(self, provider: FakeProvider, redis: RedisServer, data_dir: Path, proxies: list[RunningProxy]):
        self.provider, self.redis, self.data_dir, self.proxies = provider, redis, data_dir, proxies

    def call(self, proxy: int | str, text: str, **headers: str) -> httpx.Response:
        """A cacheable chat call through proxy number `proxy` (or to the URL `proxy`)."""
        body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]}
        headers = {"authorization": "Bearer sk-test", **headers}
        url = proxy if isinstance(proxy, str) else self.proxies[proxy].url
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    def upstream(self, marker: str) -> int:
        return sum(marker.encode() in r.body for r in self.provider.requests)

    def query(self, sql: str, params: list) -> list[dict]:
        with Store(self.data_dir).connect() as con:
            return query_frame(con, sql, params).to_dicts()


def fallbacks(fleet: Fleet) -> list:
    """What the proxies' status files say of shared state (for failure messages)."""
    return [json.loads(p.read_text()) for p in (fleet.data_dir / "status").glob("*.state.json")]


def start_fleet(provider: FakeProvider, redis: RedisServer, tmp: Path, count: int) -> list[RunningProxy]:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", "enforce", "--force"]
    # A loaded test machine can take longer than the 50 ms default to answer: a call served
    # from local state would make the figures below depend on the load, so allow 2 s here.
    args += ["--state", f"{redis.url}?socket_timeout=2&socket_connect_timeout=2"]
    return [RunningProxy(llm_shadow_proxy_command(args, tmp / "data")) for _ in range(count)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(tmp / "redis").start()
    with FakeProvider() as provider:
        proxies = start_fleet(provider, redis, tmp, 3)
        try:
            yield Fleet(provider, redis, tmp / "data", proxies)
        finally:
            for p in proxies:
                p.stop()
            redis.stop()


def spend_until_refused(fleet: Fleet, team: str, proxies: list[int | str], limit: int = 30) -> list[int]:
    """Calls in turn through `proxies` (numbers or URLs) until one is refused; the status of each."""
    statuses = []
    for n in range(limit):
        answer = fleet.call(proxies[n % len(proxies)], f"{team} question {n}", **{"x-shadow-team": team})
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            break
    return statuses


def test_team_budget_trips_at_the_same_spend_as_one_proxy(fleet, feature):
    one = spend_until_refused(fleet, f"budget-one-{feature}", [0])
    three = spend_until_refused(fleet, f"budget-three-{feature}", [0, 1, 2])
    assert one[-1] == 429 and one.count(200) >= 3  # the budget takes a few calls
    assert three == one  # the same number of calls, then the same refusal

    def spent(team: str) -> float:
        rows = wait_for(lambda: len(found := fleet.query(SPEND, [team])) == len(one) and found)
        return sum(r["cost_usd"] for r in rows)

    assert spent(f"budget-three-{feature}") == pytest.approx(spent(f"budget-one-{feature}"))
    assert spent(f"budget-one-{feature}") >= LIMIT_USD


SPEND = "SELECT cost_usd, outcome FROM requests WHERE team = ? ORDER BY ts"


def test_team_budget_behind_haproxy_trips_at_the_same_spend_as_one_proxy(fleet, feature, tmp_path):
    """The deployment the README describes: a real HAProxy balancing over the three proxies."""
    balancer = HAProxy(tmp_path, "balancer", [p.port for p in fleet.proxies])
    try:
        one = spend_until_refused(fleet, f"budget-direct-{feature}", [0])
        balanced = spend_until_refused(fleet, f"budget-balanced-{feature}", [balancer.url])
    finally:
        balancer.stop()
    assert one[-1] == 429 and one.count(200) >= 3
    assert balanced == one
    query = "SELECT count(DISTINCT instance) AS n FROM requests WHERE team = ?"
    spread = wait_for(lambda: (n := fleet.query(query, [f"budget-balanced-{feature}"])[0]["n"]) >= 2 and n)
    assert spread >= 2  # HAProxy did spread the calls over several proxies


def test_concurrent_calls_overshoot_by_at_most_the_calls_in_flight(fleet, feature):
    """Three clients at once, one per proxy. Each call is admitted while the team's spend is
    under the limit, but a call's cost is charged only when it ends: the calls in flight when
    the limit was reached (at most the two others) may still pass, and nothing beyond them."""
    team = f"budget-concurrent-{feature}"

    def client(proxy: int) -> list[int]:
        return [fleet.call(proxy, f"{team} {proxy} {n}", **{"x-shadow-team": team}).status_code for n in range(10)]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(client, range(3)))
    admitted = sum(r.count(200) for r in results)
    assert all(set(r) <= {200, 429} for r in results) and sum(r.count(429) for r in results) >= 3
    rows = wait_for(lambda: len(found := fleet.query(SPEND, [team])) == 30 and found)
    costs = sorted(r["cost_usd"] for r in rows if r["outcome"] == "ok")
    assert len(costs) == admitted
    assert sum(costs) >= LIMIT_USD  # it tripped
    # Without the last admitted call and the two that may have been in flight with it, the
    # spend was under the limit (the largest three: the bound holds whichever they were).
    assert sum(costs[:-3]) < LIMIT_USD


def test_rate_limit_holds_the_global_rate(fleet, feature):
    marker = f"rate-{feature}"
    statuses = [fleet.call(n % 3, f"{marker} call {n}", **{"x-shadow-feature": marker}).status_code for n in range(12)]
    # Each proxy sees 4 calls: with windows of their own, all 12 would pass.
    assert statuses == [200] * 5 + [429] * 7, fallbacks(fleet)
    assert fleet.upstream(marker) == 5


def test_answer_cached_by_one_proxy_is_a_hit_on_another(fleet, feature):
    headers = {"x-shadow-feature": feature}
    first = fleet.call(0, f"cache me {feature}", **headers)
    assert first.status_code == 200 and "x-llm-shadow-decision" not in first.headers
    for proxy in (1, 2):
        again = fleet.call(proxy, f"cache me {feature}", **headers)
        assert again.headers["x-llm-shadow-decision"] == "exact_cache=hit; policy=exact"
        assert again.content == first.content
    assert fleet.upstream(f"cache me {feature}") == 1


def stats_json(data_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "cli.py"), "stats", "--data", str(data_dir), "--format", "json"]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=60)


def test_redis_killed_mid_run_breaks_no_call_and_state_resumes(tmp_path, feature):
    redis = RedisServer(tmp_path / "redis").start()
    with FakeProvider() as provider:
        proxies = start_fleet(provider, redis, tmp_path, 2)
        fleet = Fleet(provider, redis, tmp_path / "data", proxies)
        try:
            headers = {"x-shadow-feature": feature}
            assert [fleet.call(n % 2, f"before {n}", **headers).status_code for n in range(4)] == [200] * 4
            redis.stop()
            during = [fleet.call(n % 2, f"during {n}", **headers) for n in range(6)]
            assert [a.status_code for a in during] == [200] * 6  # no call broken
            # Every call asked Redis at least once (its decision), each of those was served locally.
            counted = wait_for(
                lambda: sum(s["problems"].get("shared_state_fallback", 0) for s in fallbacks(fleet)) >= 6, timeout=10
            )
            assert counted, fallbacks(fleet)
            assert "shared_state_fallback" in stats_json(fleet.data_dir).stderr
            redis.start()  # the same port, empty
            time.sleep(RETRY_S + 0.2)  # each proxy tries Redis again at its next call after this
            assert [fleet.call(n, f"wake {n}", **headers).status_code for n in range(2)] == [200, 200]
            # Shared again: an answer stored through one proxy is a hit on the other.
            assert fleet.call(0, f"after {feature}", **headers).status_code == 200
            hit = fleet.call(1, f"after {feature}", **headers)
            assert hit.headers["x-llm-shadow-decision"] == "exact_cache=hit; policy=exact"
            assert fleet.upstream(f"after {feature}") == 1
        finally:
            for p in proxies:
                p.stop()
            redis.stop()


SEMANTIC_POLICY = """
[cache.semantic]
name = "semantic"
threshold = 0.8
embedder = "hashing"
lookup_timeout_ms = 60000  # a loaded test machine must not turn the hit into a timeout
"""
SEMANTIC_DECISIONS = (
    "SELECT d.action, d.matched_id, r.id FROM decisions d JOIN requests r ON d.id = r.id "
    "WHERE d.kind = 'semantic_cache' AND r.feature = ? ORDER BY r.ts"
)


@pytest.mark.parametrize("mode", ["shadow", "enforce"])
@pytest.mark.parametrize("state", ["memory", "redis"])
def test_semantic_hit_on_one_proxy_from_an_answer_through_another(tmp_path, feature, state, mode):
    """An answer that came through the first proxy is stored in the semantic cache's index; a
    paraphrase sent to the second (the same proxy with --state memory) is a semantic hit on it.
    With --state redis the two proxies share the index and, in enforce mode, the answer's
    bytes: the second proxy answers the paraphrase itself."""
    policy = tmp_path / "policy.toml"
    policy.write_text(SEMANTIC_POLICY)
    redis = RedisServer(tmp_path / "redis").start() if state == "redis" else None
    with FakeProvider() as provider:
        args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--mode", mode, "--force"]
        args += ["--state", f"{redis.url}?socket_timeout=2" if redis else "memory"]
        proxies = [RunningProxy(llm_shadow_proxy_command(args, tmp_path / "data")) for _ in range(2 if redis else 1)]
        fleet = Fleet(provider, redis, tmp_path / "data", proxies)
        try:
            headers = {"x-shadow-feature": feature}
            first = fleet.call(0, "how do I cancel my credit card", **headers)
            assert first.status_code == 200
            again = fleet.call(len(proxies) - 1, "how can I cancel my credit card", **headers)
            assert again.status_code == 200
            if mode == "shadow":
                assert "x-llm-shadow-decision" not in again.headers  # shadow: untouched
            else:
                assert again.headers["x-llm-shadow-decision"] == "semantic_cache=hit; policy=semantic"
                assert again.content == first.content
            rows = wait_for(lambda: len(found := fleet.query(SEMANTIC_DECISIONS, [feature])) == 2 and found, timeout=60)
            assert rows, fleet.query(SEMANTIC_DECISIONS, [feature])  # a loaded machine writes rows late
            assert [r["action"] for r in rows] == ["miss", "hit"], (
                rows,
                "".join(proxies[0].output[-40:]),
                fallbacks(fleet),
            )
            assert rows[1]["matched_id"] == rows[0]["id"]
            assert fleet.upstream("cancel my credit card") == (2 if mode == "shadow" else 1)  # shadow mode sends both
        finally:
            for p in proxies:
                p.stop()
            if redis:
                redis.stop()
