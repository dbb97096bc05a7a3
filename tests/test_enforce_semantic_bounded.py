"""The semantic cache in enforce mode keeps bounded state: its index holds at most the policy's
`max_entries` answers, their bytes stay within the byte cap, and an index entry leaves with its
bytes (the LRU of entries drops the bytes, the byte cap drops the entry), so a hit always has
bytes to answer with.

Driven through `LivePolicy` (decide, then settle, as addons.enforcer does for each call) with
the memory backend and the offline `hashing` embedder; the proxy end to end is
tests/test_enforce_semantic.py.
"""

import numpy as np

from analysis.enforce.live import LivePolicy
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import parse_policy
from analysis.simulate.state import MemoryBackend
from tests.enforce_support import T0, chat_record

POLICY = """
[cache.semantic]
name = "semantic"
threshold = 0.99
embedder = "hashing"
max_entries = {max_entries}
"""
ANSWER = (b'{"choices": [{"message": {"content": "' + b"x" * 900 + b'"}}]}',)
HEADERS = ((b"content-type", b"application/json"),)
ONE_ANSWER = len(ANSWER[0]) + len(b"content-type") + len(b"application/json")


def live_policy(max_entries: int, cache_bytes: int = 1 << 30) -> LivePolicy:
    policy = parse_policy(POLICY.format(max_entries=max_entries))
    return LivePolicy(policy, "enforce", PriceTable.load(), cache_bytes=cache_bytes)


def call(live: LivePolicy, n: int, prompt: str, at: float):
    """One cacheable call for `prompt`, decided and (when it went upstream) settled."""
    record = chat_record(n, prompt, at, prompt_text=prompt)
    verdict = live.decide(record, "openai_chat")
    if verdict.action == "pass":
        live.settle(verdict, True, 0.001, at + 0.5, 200, HEADERS, ANSWER)
    return verdict


def live_sources(live: LivePolicy) -> set[str]:
    index = live.state.semantic
    return {index.source[slot] for slot in index.lru if index.expires[slot] >= 0}


def test_distinct_prompts_leave_bounded_state():
    live = live_policy(max_entries=20)
    for n in range(300):
        call(live, n, f"question number {n % 90} about cards", T0 + n)
    index, store = live.state.semantic, live.semantic_responses
    assert len(index.lru) == 20
    assert int(np.count_nonzero(index.expires[: len(index.source)] >= 0)) == 20
    assert set(store.entries) == live_sources(live)  # bytes leave with their entries


def test_a_hit_is_answered_with_the_stored_bytes():
    live = live_policy(max_entries=10)
    call(live, 0, "how do I cancel my credit card", T0)
    hit = call(live, 1, "how do I cancel my credit card", T0 + 1)
    assert hit.action == "answer" and hit.answered_by == "semantic_cache"
    assert hit.answer.chunks == ANSWER and hit.answer.source_id == "r0"
    assert hit.header == "semantic_cache=hit; policy=semantic"
    [row] = hit.rows
    assert (row["action"], row["matched_id"], row["saving_usd"]) == ("hit", "r0", 0.001)


def test_an_answer_pushed_out_by_the_byte_cap_is_a_miss_and_stored_again():
    live = live_policy(max_entries=100, cache_bytes=2 * ONE_ANSWER)
    call(live, 0, "alpha prompt", T0)
    assert call(live, 1, "alpha prompt", T0 + 1).action == "answer"
    call(live, 2, "beta prompt", T0 + 2)
    call(live, 3, "gamma prompt", T0 + 3)  # the byte cap pushes alpha's answer out, and its entry with it
    assert "r0" not in live_sources(live)
    again = call(live, 4, "alpha prompt", T0 + 4)
    assert again.action == "pass" and again.decision.semantic_cache == "miss"
    assert live.counts["semantic_cache_bytes_missing"] == 0  # never a hit without bytes
    assert call(live, 5, "alpha prompt", T0 + 5).answer.source_id == "r4"  # stored again by call 4
    assert live.semantic_responses.size <= 2 * ONE_ANSWER


def test_shadow_mode_keeps_no_bytes():
    policy = parse_policy(POLICY.format(max_entries=10))
    live = LivePolicy(policy, "shadow", PriceTable.load())
    call(live, 0, "how do I cancel my credit card", T0)
    verdict = call(live, 1, "how do I cancel my credit card", T0 + 1)
    assert verdict.decision.semantic_cache == "hit" and verdict.action == "pass"
    assert live.semantic_responses is None


def test_a_hit_without_stored_bytes_goes_upstream_and_says_so():
    """Entries stored while the cache only decided (shadow mode) have no bytes: in enforce mode
    on the same state such a hit is sent upstream, counted, and its row claims no saving; its
    answer replaces the entry, so the next call is answered."""
    backend = MemoryBackend()
    policy = parse_policy(POLICY.format(max_entries=10))
    call(LivePolicy(policy, "shadow", PriceTable.load(), backend), 0, "how do I cancel my credit card", T0)
    live = LivePolicy(policy, "enforce", PriceTable.load(), backend)
    verdict = call(live, 1, "how do I cancel my credit card", T0 + 1)
    assert verdict.decision.semantic_cache == "hit" and verdict.action == "pass" and verdict.really_sent
    assert live.counts["semantic_cache_bytes_missing"] == 1
    [row] = verdict.rows
    assert row["action"] == "hit" and row["saving_usd"] is None
    assert row["reason"].endswith("no stored answer to replay: sent upstream")
    again = call(live, 2, "how do I cancel my credit card", T0 + 2)  # call 1's answer took the entry's place
    assert again.action == "answer" and again.answer.source_id == "r1"
