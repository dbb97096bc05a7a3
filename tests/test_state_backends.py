"""The state interface (analysis.simulate.state.StateBackend): the same cases for every backend.

A new backend adds itself to BACKENDS; each case then runs against it too, so the windows mean
the same thing wherever they are kept. The Redis backend runs against a real redis-server of
the test's own (tests/redis_server.py).
"""

import pytest

from analysis.shared_state.backend import RedisBackend
from analysis.simulate.state import MINUTE_US, MemoryBackend, ResponseStore, StoredResponse

BACKENDS = {
    "memory": lambda request: MemoryBackend(),
    "redis": lambda request: RedisBackend(request.getfixturevalue("redis_server").url),
}

SECOND = 1_000_000
T0 = 1_790_000_000 * SECOND  # a realistic epoch time in microseconds (51 bits)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    return BACKENDS[request.param](request)


def test_cache_entry_usable_after_arrival_until_ttl(backend):
    cache = backend.response_cache("exact", ttl_us=100, max_entries=10)
    assert cache.lookup("k", 0) == ("miss", None)
    assert cache.store("k", 50, "req-1")
    assert cache.lookup("k", 10)[0] == "miss_in_flight"
    status, entry = cache.lookup("k", 60)
    assert status == "hit" and entry[2] == "req-1"
    assert cache.lookup("k", 150)[0] == "miss_expired"


def test_cache_keeps_the_usable_entry_and_evicts_least_recent(backend):
    cache = backend.response_cache("exact", ttl_us=1000, max_entries=2)
    assert cache.store("a", 0, "r1")
    assert not cache.store("a", 10, "r2")  # a usable answer is already there
    cache.store("b", 0, "r3")
    cache.lookup("a", 20)  # a becomes the most recent
    cache.store("c", 0, "r4")
    assert cache.lookup("b", 30) == ("miss_evicted", None)
    assert cache.lookup("a", 30)[1][2] == "r1"


def test_budget_charge_says_which_call_reached_the_limit(backend):
    budget = backend.budget_windows("team-budget", 1.0)
    assert budget.limit_usd == 1.0
    assert budget.spent_in("team-a|1") == 0.0
    assert not budget.charge("team-a|1", 0.6)
    assert budget.charge("team-a|1", 0.5)
    assert not budget.charge("team-a|1", 0.1)  # already over: not the one that reached it
    assert budget.spent_in("team-a|1") == pytest.approx(1.2)
    assert budget.spent_in("team-b|1") == 0.0


def test_rate_window_slides_over_one_minute(backend):
    rate = backend.rate_windows("rpm", requests_per_minute=2, tokens_per_minute=None)
    rate.admit("k", 0, 10)
    rate.admit("k", 1, 10)
    assert rate.full("k", 2)
    assert rate.usage("k", 2) == (2, 20)
    assert rate.wait_us("k", 2) == MINUTE_US - 2  # until the first leaves
    assert not rate.full("k", MINUTE_US + 1)  # both have left the window
    assert rate.wait_us("k", MINUTE_US + 1) == 0
    assert not rate.full("other", 2)


def test_rate_window_counts_tokens(backend):
    rate = backend.rate_windows("tpm", requests_per_minute=None, tokens_per_minute=100)
    rate.admit("k", 0, 60)
    assert not rate.full("k", 1)
    rate.admit("k", 1, 40)
    assert rate.full("k", 2)


def stored(source_id: str, size: int) -> StoredResponse:
    return StoredResponse(source_id, 200, ((b"content-type", b"application/json"),), (b"x" * size,), 0.01)


def test_response_store_keeps_bytes_within_the_cap(backend):
    store = backend.response_store("exact", max_bytes=3000)
    header = len(b"content-type") + len(b"application/json")
    assert store.put(stored("r1", 1000), expires_at=100)
    assert store.put(stored("r2", 1000), expires_at=100)
    assert store.get("r1", 0).chunks == (b"x" * 1000,)  # r1 becomes the most recent
    assert store.put(stored("r3", 1000 - header), expires_at=100)  # r2 leaves
    assert store.get("r2", 0) is None
    assert store.get("r1", 0) is not None and store.get("r3", 0) is not None
    assert not store.put(stored("big", 5000), expires_at=100)
    assert store.get("r1", 100) is None  # expired


def test_response_store_size_accounting():
    store = ResponseStore(max_bytes=10_000)
    store.put(stored("a", 100), 10)
    store.put(stored("a", 200), 10)  # replaces, not adds
    assert store.size == stored("a", 200).size
    store.discard("a")
    assert store.size == 0


def test_state_is_kept_per_policy_name_across_a_reload(backend):
    budget = backend.budget_windows("team-budget", 1.0)
    budget.charge("t|1", 0.7)
    again = backend.budget_windows("team-budget", 2.0)  # the policy file was edited and reloaded
    assert again.limit_usd == 2.0
    assert again.spent_in("t|1") == pytest.approx(0.7)
    assert backend.budget_windows("other", 1.0).spent_in("t|1") == 0.0


def test_cache_at_epoch_times_with_separators_and_unicode(backend):
    cache = backend.response_cache("exact", ttl_us=SECOND, max_entries=10)
    key = "\x1eteam é\x1fsha256:abc def"
    assert cache.store(key, T0, "source with spaces")
    assert cache.lookup(key, T0 + SECOND - 1) == ("hit", (T0, T0 + SECOND, "source with spaces"))
    assert cache.lookup(key, T0 + SECOND)[0] == "miss_expired"


def test_cache_stored_again_after_eviction(backend):
    cache = backend.response_cache("exact", ttl_us=100 * SECOND, max_entries=1)
    cache.store("a", T0, "1")
    cache.store("b", T0, "2")
    assert cache.lookup("a", T0) == ("miss_evicted", None)
    cache.store("a", T0 + 1, "3")
    assert cache.lookup("a", T0 + 1)[0] == "hit"
    assert cache.lookup("b", T0 + 1) == ("miss_evicted", None)


def test_cache_remembers_as_many_evicted_keys_as_entries_oldest_forgotten_first(backend):
    """A proxy that runs for months keeps a bounded set of evicted keys: `miss_evicted` is told
    for the last `max_entries` keys pushed out, an older one is a plain `miss` again."""
    cache = backend.response_cache("exact", ttl_us=100 * SECOND, max_entries=2)
    for i in range(7):
        cache.store(f"k{i}", T0, f"r{i}")  # k5 and k6 stay; k0 .. k4 are pushed out in order
    assert [cache.lookup(f"k{i}", T0 + 1)[0] for i in range(7)] == [
        *["miss"] * 3,
        *["miss_evicted"] * 2,
        *["hit"] * 2,
    ]


def test_budget_sum_is_the_python_sum_bit_for_bit(backend):
    budget = backend.budget_windows("team-daily", limit_usd=1.0)
    trips = [budget.charge("support\x1f20000", 0.1) for _ in range(12)]
    expected = 0.0
    for _ in range(12):
        expected += 0.1
    assert budget.spent_in("support\x1f20000") == expected
    assert trips.index(True) == 10 and trips.count(True) == 1  # ten times 0.1 is 0.9999999999999999


def test_rate_event_leaves_after_exactly_a_minute(backend):
    rate = backend.rate_windows("rpm", requests_per_minute=2, tokens_per_minute=None)
    rate.admit("team", T0, 10)
    rate.admit("team", T0 + SECOND, 20)
    assert rate.usage("team", T0 + MINUTE_US - 1) == (2, 30)
    assert rate.usage("team", T0 + MINUTE_US) == (1, 20)


def test_rate_admit_if_room(backend):
    rate = backend.rate_windows("tpm", requests_per_minute=None, tokens_per_minute=100)
    assert rate.admit_if_room("k", T0, 60)
    assert rate.admit_if_room("k", T0 + 1, 60)  # 60 < 100 when it was checked
    assert not rate.admit_if_room("k", T0 + 2, 1)  # 120 >= 100: nothing admitted
    assert rate.usage("k", T0 + 2) == (2, 120)
    assert rate.admit_if_room("k", T0 + MINUTE_US, 1)
    assert rate.usage("k", T0 + MINUTE_US) == (2, 61)  # T0 is out, T0 + 1 still in


def test_rate_tokens_added_when_a_call_ends_count_from_its_admission(backend):
    rate = backend.rate_windows("tpm", requests_per_minute=None, tokens_per_minute=100)
    rate.admit("k", T0, 0)
    rate.admit("k", T0 + SECOND, 5)
    assert not rate.full("k", T0 + 2 * SECOND)
    rate.add_tokens("k", T0, 120, T0 + 3 * SECOND)  # the first call ended: 120 tokens
    assert rate.usage("k", T0 + 3 * SECOND) == (2, 125)
    assert rate.full("k", T0 + 3 * SECOND)
    rate.add_tokens("k", T0 + SECOND, -10, T0 + 4 * SECOND)  # an estimate corrected: never below 0
    assert rate.usage("k", T0 + 4 * SECOND) == (2, 120)
    assert rate.usage("k", T0 + MINUTE_US) == (1, 0)  # the first left with its tokens
    rate.add_tokens("k", T0, 50, T0 + MINUTE_US)  # it has left: nothing to add to
    assert rate.usage("k", T0 + MINUTE_US) == (1, 0)
    rate.admit("k", T0 + MINUTE_US, 0)
    assert rate.usage("k", T0 + MINUTE_US) == (2, 0)


def test_response_store_replays_every_byte(backend):
    store = backend.response_store("exact", max_bytes=10_000)
    events = (b'data: {"a": 1}\n\n', b"\x00\xff binary \n\n", b"", b"data: [DONE]\n\n")
    response = StoredResponse("r1", 200, ((b"content-type", b"text/event-stream"), (b"x-\xe9", b"\xff")), events, None)
    assert store.put(response, expires_at=T0 + SECOND)
    assert store.get("r1", T0) == response
    assert store.get("r1", T0 + SECOND) is None
    assert store.size == 0


# -- the semantic cache's index (analysis.simulate.semantic) -----------------------------------


def semantic(backend, max_entries: int = 10, ttl_us: int = 100 * SECOND):
    from analysis.simulate.embedders import HashingEmbedder

    return backend.semantic_index(
        "semantic", HashingEmbedder(), ttl_us=ttl_us, max_entries=max_entries, bits=10, tables=16, bucket_size=8
    )


CARD = "how do I cancel my credit card"
CARD_AGAIN = "how can I cancel my credit card"


def test_semantic_entry_found_by_a_similar_prompt_after_arrival_until_ttl(backend):
    index = semantic(backend)
    pid = index.partition(("team-a", "gpt-4o-mini", ""))
    index.store(pid, index.register(CARD), T0 + 50, "req-1")
    query = index.register(CARD_AGAIN)
    assert index.nearest(pid, query, T0 + 10) is None  # its answer has not arrived yet
    similarity, _, entry = index.nearest(pid, query, T0 + 60)
    assert 0.8 < similarity < 1 and entry == (T0 + 50, T0 + 50 + 100 * SECOND, "req-1")
    assert index.nearest(pid, query, T0 + 50 + 100 * SECOND) is None  # expired
    other = index.partition(("team-b", "gpt-4o-mini", ""))
    assert index.nearest(other, query, T0 + 60) is None  # another scope, model or system prompt


def test_semantic_entries_capped_least_recently_used_first(backend):
    index = semantic(backend, max_entries=2)
    pid = index.partition(("", "m", ""))
    prompts = ["cancel my credit card now", "what is the weather in Paris", "translate hello to French"]
    for n, text in enumerate(prompts[:2]):
        index.store(pid, index.register(text), T0, f"r{n}")
    found = index.nearest(pid, index.register(prompts[0]), T0 + 1)
    assert found[2][2] == "r0"
    index.use(pid, found[1])  # r0 becomes the most recent
    index.store(pid, index.register(prompts[2]), T0, "r2")  # pushes r1 out
    for text, kept in zip(prompts, ["r0", None, "r2"], strict=True):
        found = index.nearest(pid, index.register(text), T0 + 1)
        if kept:
            assert found[2][2] == kept and found[0] == pytest.approx(1.0, abs=1e-6)
        else:
            assert found is None or found[2][2] != "r1"  # r1 was pushed out


def test_semantic_store_keeps_the_usable_entry(backend):
    index = semantic(backend)
    pid = index.partition(("", "m", ""))
    row = index.register(CARD)
    index.store(pid, row, T0, "first")
    index.store(pid, row, T0 + 10, "second")  # a usable answer is already there
    assert index.nearest(pid, row, T0 + 20)[2][2] == "first"
    assert index.nearest(pid, row, T0 + 20)[0] == pytest.approx(1.0, abs=1e-6)
