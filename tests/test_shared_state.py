"""The state backends: the same cases against the simulator's memory classes and against a real
redis-server, so shared state means exactly what the simulator's state module defines."""

import random
import threading

import pytest

from analysis.shared_state.backend import BadStateURL, MemoryBackend, RedisBackend, open_backend
from analysis.simulate.state import MINUTE_US
from tests.conftest import wait_for

SECOND = 1_000_000
T0 = 1_790_000_000 * SECOND  # a realistic epoch time in microseconds (needs 51 bits)


@pytest.fixture(params=["memory", "redis"])
def backend(request, tmp_path):
    if request.param == "memory":
        yield MemoryBackend()
        return
    server = request.getfixturevalue("redis_server")
    yield RedisBackend(server.url)


# -- exact cache --------------------------------------------------------------------------------


def test_cache_entry_lifecycle(backend):
    cache = backend.response_cache("exact", ttl_us=10 * SECOND, max_entries=100)
    assert cache.lookup("k", T0) == ("miss", None)
    assert cache.store("k", T0 + 2 * SECOND, "req-1") is True
    assert cache.lookup("k", T0 + SECOND) == ("miss_in_flight", (T0 + 2 * SECOND, T0 + 12 * SECOND, "req-1"))
    assert cache.lookup("k", T0 + 2 * SECOND) == ("hit", (T0 + 2 * SECOND, T0 + 12 * SECOND, "req-1"))
    # A usable entry is not replaced by a later answer to the same prompt.
    assert cache.store("k", T0 + 3 * SECOND, "req-2") is False
    assert cache.lookup("k", T0 + 12 * SECOND)[0] == "miss_expired"
    assert cache.store("k", T0 + 13 * SECOND, "req-3") is True
    assert cache.lookup("k", T0 + 14 * SECOND) == ("hit", (T0 + 13 * SECOND, T0 + 23 * SECOND, "req-3"))


def test_cache_evicts_least_recently_used(backend):
    cache = backend.response_cache("exact", ttl_us=100 * SECOND, max_entries=2)
    cache.store("a", T0, "1")
    cache.store("b", T0, "2")
    assert cache.lookup("a", T0 + 1)[0] == "hit"  # "a" becomes the most recently used
    cache.store("c", T0 + 2, "3")
    assert cache.lookup("b", T0 + 3) == ("miss_evicted", None)
    assert cache.lookup("a", T0 + 3)[0] == "hit"
    cache.store("b", T0 + 4, "4")  # stored again: no longer "evicted"
    assert cache.lookup("b", T0 + 5)[0] == "hit"
    assert cache.lookup("c", T0 + 5) == ("miss_evicted", None)


def test_cache_keys_with_separators_and_unicode(backend):
    cache = backend.response_cache("exact", ttl_us=SECOND, max_entries=10)
    key = "\x1eteam é\x1fsha256:abc def"
    cache.store(key, T0, "source with spaces")
    assert cache.lookup(key, T0) == ("hit", (T0, T0 + SECOND, "source with spaces"))


# -- budget windows -----------------------------------------------------------------------------


def test_budget_trips_once_on_the_charge_that_reaches_the_limit(backend):
    budget = backend.budget_windows("team-daily", limit_usd=1.0)
    assert budget.spent_in("support\x1f20000") == 0.0
    trips = [budget.charge("support\x1f20000", 0.1) for _ in range(12)]
    expected = 0.0
    for _ in range(12):
        expected += 0.1
    assert budget.spent_in("support\x1f20000") == expected  # bit for bit the sum in Python
    assert trips.index(True) == 10 and trips.count(True) == 1  # 0.1 * 10 is 0.9999999999999999 in floats
    assert budget.spent.get("support\x1f20000", 0.0) == expected
    assert budget.spent_in("support\x1f20001") == 0.0  # the next window starts from nothing


def test_budget_unpriced_charge_changes_nothing(backend):
    budget = backend.budget_windows("b", limit_usd=0.5)
    assert budget.charge("k", 0.0) is False
    assert budget.charge("k", 0.5) is True
    assert budget.spent_in("k") == 0.5


# -- rate windows -------------------------------------------------------------------------------


def test_rate_window_slides_after_exactly_a_minute(backend):
    rate = backend.rate_windows("rpm", requests_per_minute=2, tokens_per_minute=None)
    rate.admit("team", T0, 10)
    rate.admit("team", T0 + SECOND, 20)
    assert rate.full("team", T0 + MINUTE_US - 1)
    assert rate.usage("team", T0 + MINUTE_US - 1) == (2, 30)
    assert not rate.full("team", T0 + MINUTE_US)  # the first event is a minute old: out
    assert rate.usage("team", T0 + MINUTE_US) == (1, 20)
    assert rate.usage("other", T0 + MINUTE_US) == (0, 0)


def test_rate_tokens_limit_and_admit_if_room(backend):
    rate = backend.rate_windows("tpm", requests_per_minute=None, tokens_per_minute=100)
    assert rate.admit_if_room("k", T0, 60) is True
    assert rate.admit_if_room("k", T0 + 1, 60) is True  # 60 < 100 when it was checked
    assert rate.admit_if_room("k", T0 + 2, 1) is False  # 120 >= 100
    assert rate.usage("k", T0 + 2) == (2, 120)
    assert rate.admit_if_room("k", T0 + MINUTE_US, 1) is True
    assert rate.usage("k", T0 + MINUTE_US) == (2, 61)  # T0 is out, T0 + 1 still in


# -- the same random history, both backends -----------------------------------------------------


def replay_random_history(backend, seed: int) -> list:
    """Random operations on one cache, one budget and one rate limit; every answer, in order."""
    rng = random.Random(seed)
    cache = backend.response_cache("exact", ttl_us=30 * SECOND, max_entries=5)
    budget = backend.budget_windows("budget", limit_usd=0.05)
    rate = backend.rate_windows("rate", requests_per_minute=4, tokens_per_minute=900)
    answers = []
    now = T0
    for i in range(400):
        now += rng.randrange(0, 8 * SECOND)
        key = f"k{rng.randrange(9)}"
        op = rng.randrange(5)
        if op == 0:
            answers.append(cache.lookup(key, now))
        elif op == 1:
            answers.append(cache.store(key, now + rng.randrange(3 * SECOND), f"r{i}"))
        elif op == 2:
            answers.append(budget.charge(f"t{rng.randrange(2)}\x1f{now // (60 * SECOND)}", rng.random() / 100))
        elif op == 3:
            answers.append(rate.admit_if_room(key[:2], now, rng.randrange(400)))
        else:
            answers.append((rate.usage(key[:2], now), budget.spent_in(f"t0\x1f{now // (60 * SECOND)}")))
    return answers


def test_redis_answers_exactly_as_memory_on_a_random_history(redis_server):
    for seed in range(3):
        redis_server.client().flushdb()
        assert replay_random_history(RedisBackend(redis_server.url), seed) == replay_random_history(
            MemoryBackend(), seed
        )


# -- shared between processes (here: between connections) --------------------------------------


def test_two_proxies_share_one_set_of_windows(redis_server):
    first, second = RedisBackend(redis_server.url), RedisBackend(redis_server.url)
    first.budget_windows("b", 1.0).charge("team", 0.6)
    assert second.budget_windows("b", 1.0).charge("team", 0.6) is True
    first.response_cache("exact", SECOND, 10).store("k", T0, "r1", body=b"{}")
    assert second.response_cache("exact", SECOND, 10).lookup("k", T0) == ("hit", (T0, T0 + SECOND, "r1"))
    assert second.response_cache("exact", SECOND, 10).body("k") == b"{}"


def test_admit_if_room_holds_the_limit_under_concurrency(redis_server):
    """Eight threads on four connections race for 50 slots: exactly 50 are admitted."""
    backends = [RedisBackend(redis_server.url) for _ in range(4)]
    admitted = []

    def worker(backend):
        rate = backend.rate_windows("global", requests_per_minute=50, tokens_per_minute=None)
        admitted.extend(rate.admit_if_room("all", T0, 1) for _ in range(20))

    threads = [threading.Thread(target=worker, args=(backends[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(admitted) == 160 and admitted.count(True) == 50


def test_cache_bodies_and_byte_cap(redis_server):
    cache = RedisBackend(redis_server.url).response_cache("exact", 10 * SECOND, max_entries=100, max_bytes=250)
    for i in range(5):
        cache.store(f"k{i}", T0, f"r{i}", body=bytes([i]) * 100)
    # 500 bytes offered, 250 allowed: the two most recent entries stay.
    assert [cache.lookup(f"k{i}", T0)[0] for i in range(5)] == ["miss_evicted"] * 3 + ["hit"] * 2
    assert cache.body("k4") == b"\x04" * 100 and cache.body("k0") is None
    assert int(redis_server.client().get("llm-shadow:cache:exact:bytes")) == 200


# -- the --state value --------------------------------------------------------------------------


def test_state_value_and_environment(monkeypatch):
    monkeypatch.delenv("LLM_SHADOW_STATE", raising=False)
    assert isinstance(open_backend(None), MemoryBackend)
    monkeypatch.setenv("LLM_SHADOW_STATE", "redis://127.0.0.1:1/2")
    backend = open_backend(None)
    assert isinstance(backend, RedisBackend) and backend.status()["url"] == "redis://127.0.0.1:1/2"
    assert isinstance(open_backend("memory"), MemoryBackend)
    with pytest.raises(BadStateURL, match="expected 'memory' or redis://"):
        open_backend("postgres://x")


# -- Redis down or slow: fail-open --------------------------------------------------------------


def test_hung_redis_falls_back_and_state_resumes(redis_server):
    """A Redis that stops answering: every call still answers (from local state, counted); the
    spend charged meanwhile reaches Redis when it answers again."""
    backend = RedisBackend(redis_server.url)
    budget = backend.budget_windows("b", limit_usd=0.5)
    cache = backend.response_cache("exact", 10 * SECOND, 10)
    assert budget.charge("team", 0.3) is False
    redis_server.pause()
    try:
        assert budget.charge("team", 0.3) is True  # times out; counted from the 0.3 last seen in Redis
        assert budget.charge("team", 0.1) is False  # Redis not even tried: down for a second
        assert budget.spent_in("team") == 0.3 + 0.3 + 0.1
        assert cache.store("k", T0, "r1", body=b"x") is True
        assert cache.lookup("k", T0) == ("hit", (T0, T0 + 10 * SECOND, "r1"))
        assert cache.body("k") == b"x"
        assert backend.problems()["shared_state_outage"] == 1
        assert backend.problems()["shared_state_fallback"] >= 5
        assert backend.status()["up"] is False and "Timeout" in backend.status()["last_error"]
    finally:
        redis_server.resume()

    # The charge that timed out reached Redis when it woke up; when this process is back it
    # hands over both local charges, and the numbered one is not added twice.
    def back() -> bool:
        budget.spent_in("team")  # a call tries Redis again once the second has passed
        return backend.status()["up"]

    assert wait_for(back, timeout=10)
    other = RedisBackend(redis_server.url).budget_windows("b", limit_usd=0.5)
    assert other.spent_in("team") == 0.3 + 0.3 + 0.1
    assert backend.problems()["shared_state_outage"] == 1


def test_killed_redis_falls_back_then_shares_again(redis_server):
    backend = RedisBackend(redis_server.url)
    rate = backend.rate_windows("r", requests_per_minute=100, tokens_per_minute=None)
    assert rate.admit_if_room("k", T0, 1)
    redis_server.stop()
    assert rate.admit_if_room("k", T0 + 1, 1)  # local window
    assert backend.problems()["shared_state_fallback"] >= 1
    redis_server.start()  # same port, empty (no persistence)
    assert wait_for(lambda: rate.admit_if_room("k", T0 + 2, 1) and backend.status()["up"], timeout=10)
    assert RedisBackend(redis_server.url).rate_windows("r", 100, None).usage("k", T0 + 3)[0] >= 1
