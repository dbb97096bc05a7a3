"""A long-running enforce proxy keeps bounded state: the exact cache's keys, the keys it
remembers as evicted and the stored answers' bytes stay within the policy's `max_entries` and
the byte cap however many distinct calls pass, and a cache entry leaves with its bytes.

Driven through `LivePolicy` (decide, then settle, as addons.enforcer does for each call) with
the memory backend; the proxy end to end is tests/test_enforce.py.
"""

from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import parse_policy
from analysis.simulate.state import MemoryBackend
from tests.enforce_support import T0, chat_record

POLICY = """
[cache.exact]
name = "exact"
ttl = "1h"
max_entries = {max_entries}
"""
ANSWER = (b'{"choices": [{"message": {"content": "' + b"x" * 900 + b'"}}]}',)


def live_policy(max_entries: int, cache_bytes: int = 1 << 30) -> LivePolicy:
    policy = parse_policy(POLICY.format(max_entries=max_entries))
    return LivePolicy(policy, "enforce", PriceTable.load(), cache_bytes=cache_bytes)


def call(live: LivePolicy, n: int, prompt: str, at: float):
    """One cacheable call for `prompt`, decided and (when it went upstream) settled."""
    record = chat_record(n, prompt, at)
    verdict = live.decide(record, "openai_chat")
    if verdict.action == "pass":
        live.settle(verdict, True, 0.001, at + 0.5, 200, ((b"content-type", b"application/json"),), ANSWER)
    return verdict


def test_distinct_calls_leave_bounded_state():
    live = live_policy(max_entries=50)
    for n in range(2000):
        call(live, n, f"prompt-{n % 700}", T0 + n)  # 700 prompts, each seen two or three times
    cache = live.state.exact
    assert len(cache.entries) == 50
    assert len(cache.evicted) <= 50
    assert live.state.exact_seen is None  # the simulator's excluded_duplicate is not kept live
    assert set(live.responses.entries) == {entry[2] for entry in cache.entries.values()}  # bytes leave with keys


def test_an_answer_pushed_out_by_the_byte_cap_is_a_miss_and_stored_again():
    one_answer = len(ANSWER[0]) + len(b"content-type") + len(b"application/json")
    live = live_policy(max_entries=100, cache_bytes=2 * one_answer)
    call(live, 0, "a", T0)
    assert call(live, 1, "a", T0 + 1).action == "answer"
    call(live, 2, "b", T0 + 2)
    call(live, 3, "c", T0 + 3)  # the byte cap pushes a's answer out, and a's entry with it
    assert "sha256:a" not in {key.split("\x1f")[1] for key in live.state.exact.entries}
    again = call(live, 4, "a", T0 + 4)
    assert again.action == "pass" and again.decision.exact_cache == "miss_evicted"
    assert live.counts["exact_cache_bytes_missing"] == 0  # never a hit without bytes
    assert call(live, 5, "a", T0 + 5).action == "answer"  # stored again by call 4
    assert live.responses.size <= 2 * one_answer


def test_evicted_keys_remembered_are_capped():
    live = live_policy(max_entries=3)
    for n in range(40):
        call(live, n, f"p{n}", T0 + n)
    assert len(live.state.exact.evicted) == 3
    assert call(live, 100, "p39", T0 + 100).action == "answer"
    assert call(live, 101, "p36", T0 + 101).decision.exact_cache == "miss_evicted"  # among the last evicted
    assert call(live, 102, "p0", T0 + 102).decision.exact_cache == "miss"  # forgotten long ago


def test_an_entry_stored_while_only_deciding_is_replaced_by_the_next_answer():
    """An exact-cache entry stored in shadow mode has no bytes: in enforce mode on the same state
    the hit goes upstream (its row claims no saving) and its answer takes the entry's place."""
    backend = MemoryBackend()
    policy = parse_policy(POLICY.format(max_entries=10))
    call(LivePolicy(policy, "shadow", PriceTable.load(), backend), 0, "a", T0)
    live = LivePolicy(policy, "enforce", PriceTable.load(), backend)
    unserved = call(live, 1, "a", T0 + 1)
    assert unserved.decision.exact_cache == "hit" and unserved.action == "pass"
    assert unserved.rows[0]["saving_usd"] is None and live.counts["exact_cache_bytes_missing"] == 1
    again = call(live, 2, "a", T0 + 2)
    assert again.action == "answer" and again.answer.source_id == "r1"
