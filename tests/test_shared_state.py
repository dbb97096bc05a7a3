"""Shared state in Redis beyond the common cases (tests/test_state_backends.py): the same random
history as in memory, several connections at once, and Redis down or hung (fail-open)."""

import random
import threading

import pytest

from analysis.shared_state.backend import BadStateURL, RedisBackend, open_backend, state_problems, state_status
from analysis.simulate.state import MemoryBackend, StoredResponse
from tests.conftest import wait_for

SECOND = 1_000_000
T0 = 1_790_000_000 * SECOND  # a realistic epoch time in microseconds (needs 51 bits)


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
    first.response_cache("exact", SECOND, 10).store("k", T0, "r1")
    first.response_store("exact", 1000).put(StoredResponse("r1", 200, (), (b"{}",)), T0 + SECOND)
    assert second.response_cache("exact", SECOND, 10).lookup("k", T0) == ("hit", (T0, T0 + SECOND, "r1"))
    assert second.response_store("exact", 1000).get("r1", T0).chunks == (b"{}",)


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


# -- the --state value --------------------------------------------------------------------------


def test_state_value_and_environment(monkeypatch):
    monkeypatch.delenv("LLM_SHADOW_STATE", raising=False)
    assert isinstance(open_backend(None), MemoryBackend)
    monkeypatch.setenv("LLM_SHADOW_STATE", "redis://127.0.0.1:1/2")
    backend = open_backend(None)
    assert isinstance(backend, RedisBackend) and state_status(backend)["url"] == "redis://127.0.0.1:1/2"
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
    store = backend.response_store("exact", 1000)
    assert budget.charge("team", 0.3) is False
    redis_server.pause()
    try:
        assert budget.charge("team", 0.3) is True  # times out; counted from the 0.3 last seen in Redis
        assert budget.charge("team", 0.1) is False  # Redis not even tried: down for a second
        assert budget.spent_in("team") == 0.3 + 0.3 + 0.1
        assert cache.store("k", T0, "r1") is True
        assert cache.lookup("k", T0) == ("hit", (T0, T0 + 10 * SECOND, "r1"))
        assert store.put(StoredResponse("r1", 200, (), (b"x",)), T0 + SECOND)
        assert store.get("r1", T0).chunks == (b"x",)
        assert state_problems(backend)["shared_state_outage"] == 1
        assert state_problems(backend)["shared_state_fallback"] >= 6
        assert not state_status(backend)["up"] and "Timeout" in state_status(backend)["last_error"]
    finally:
        redis_server.resume()

    # The charge that timed out reached Redis when it woke up; when this process is back it
    # hands over both local charges, and the numbered one is not added twice.
    def back() -> bool:
        budget.spent_in("team")  # a call tries Redis again once the second has passed
        return state_status(backend)["up"]

    assert wait_for(back, timeout=10)
    other = RedisBackend(redis_server.url).budget_windows("b", limit_usd=0.5)
    assert other.spent_in("team") == 0.3 + 0.3 + 0.1
    assert state_problems(backend)["shared_state_outage"] == 1


def test_killed_redis_falls_back_then_shares_again(redis_server):
    backend = RedisBackend(redis_server.url)
    rate = backend.rate_windows("r", requests_per_minute=100, tokens_per_minute=None)
    assert rate.admit_if_room("k", T0, 1)
    redis_server.stop()
    assert rate.admit_if_room("k", T0 + 1, 1)  # local window
    assert state_problems(backend)["shared_state_fallback"] >= 1
    redis_server.start()  # same port, empty (no persistence)
    assert wait_for(lambda: rate.admit_if_room("k", T0 + 2, 1) and state_status(backend)["up"], timeout=10)
    assert RedisBackend(redis_server.url).rate_windows("r", 100, None).usage("k", T0 + 3)[0] >= 1


# -- the semantic cache's index ----------------------------------------------------------------


def semantic_history(backend, seed: int) -> list:
    """Random stores and look-ups of prompts made of a few words (near and far pairs)."""
    from analysis.simulate.embedders import HashingEmbedder

    rng = random.Random(seed)
    index = backend.semantic_index(
        "semantic", HashingEmbedder(), ttl_us=40 * SECOND, max_entries=6, bits=6, tables=4, bucket_size=3
    )
    words = "cancel card credit block lost stolen limit raise pin change address statement".split()
    answers = []
    now = T0
    for i in range(300):
        now += rng.randrange(0, 4 * SECOND)
        pid = index.partition((f"team-{rng.randrange(2)}", "gpt-4o-mini", ""))
        row = index.register(" ".join(rng.sample(words, 4)))
        if rng.randrange(2):
            index.store(pid, row, now + rng.randrange(2 * SECOND), f"r{i}")
            answers.append("stored")
        else:
            found = index.nearest(pid, row, now)
            if found is not None:
                index.use(pid, found[1])
                found = (round(found[0], 5), found[2])
            answers.append(found)
    return answers


def test_semantic_index_in_redis_answers_as_in_memory(redis_server):
    # 2 s, not the 50 ms default: on a loaded machine a slow answer would be served locally.
    url = redis_server.url + "?socket_timeout=2"
    for seed in range(3):
        redis_server.client().flushdb()
        redis = semantic_history(RedisBackend(url), seed)
        assert redis == semantic_history(MemoryBackend(), seed)
        assert sum(a is not None and a != "stored" for a in redis) > 20  # the history does find prompts


def test_semantic_entry_stored_by_one_proxy_is_found_by_another(redis_server):
    from analysis.simulate.embedders import HashingEmbedder

    def index(backend):
        return backend.semantic_index(
            "semantic", HashingEmbedder(), ttl_us=SECOND, max_entries=10, bits=10, tables=16, bucket_size=8
        )

    url = redis_server.url + "?socket_timeout=2"
    first, second = index(RedisBackend(url)), index(RedisBackend(url))
    first.store(first.partition(("", "m", "")), first.register("how do I cancel my credit card"), T0, "r1")
    pid = second.partition(("", "m", ""))
    found = second.nearest(pid, second.register("how can I cancel my credit card"), T0 + 1)
    assert found is not None and found[2][2] == "r1" and found[0] > 0.8
    assert second.nearest(second.partition(("", "other-model", "")), second.register("x"), T0 + 1) is None
