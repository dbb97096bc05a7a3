"""The semantic cache's memory: stored prompts as vectors, found again by similarity.

A request may be answered with the stored response of the nearest earlier prompt whose cosine
similarity reaches the threshold, within the same partition: the same scope value, the same
requested model, the same system prompt (a long shared system prompt would otherwise make
every pair of requests look alike, and a different one changes the answer) and the same form,
streamed or not (enforce mode replays the stored answer's bytes as they came).

Finding that prompt among a million must not compare against all of them. The index uses
random-hyperplane LSH: `lsh_tables` tables, each hashing a vector to `lsh_bits` sign bits;
prompts that agree on all bits of any table share a bucket. Near-duplicates agree with high
probability (at cosine 0.9 and the defaults, 10 bits and 16 tables, about 98%; at 0.95,
99.8%), unrelated prompts rarely. Each bucket keeps the `bucket_size` prompts stored most recently, so the work per
request is bounded whatever the traffic. The candidates are then compared exactly (a dot
product) and only those whose response is still in the cache (TTL, LRU) count. This is an
approximate search: a true neighbour can be missed, never invented; docs/simulator.md gives
its measured recall.

Texts are registered once (`register`) and get a row in a float32 matrix; the batch simulator
registers all of them in one embedder call, enforce mode one at a time, with the same result.
Bucket hashes are computed one vector at a time in float64, so they never depend on the batch.
Candidates are checked and compared with numpy, so a lookup costs tens of microseconds even
when its buckets are full.
"""

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from analysis.simulate.embedders import Embedder

if TYPE_CHECKING:  # state.py hands out SemanticIndex (StateBackend.semantic_index)
    from analysis.simulate.state import CacheEntry

LSH_SEED = 20240229


class SemanticIndex:
    """Vectors of registered texts, LSH buckets of stored ones, and their response cache.

    A stored response lives in a slot (one per partition and text): numpy arrays give each
    slot's text row and validity window, so the candidates of a lookup are checked and
    compared in a few array operations, whatever their number. `lru` orders the live slots
    for eviction (max_entries)."""

    def __init__(self, embedder: Embedder, *, ttl_us: int, max_entries: int, bits: int, tables: int, bucket_size: int):
        self.embedder = embedder
        self.ttl_us, self.max_entries = ttl_us, max_entries
        self.bits, self.tables, self.bucket_size = bits, tables, bucket_size
        self.partitions: dict[tuple, int] = {}
        self.text_rows: dict[str, int] = {}
        self.texts: list[str] = []
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.planes: np.ndarray | None = None
        self.powers = (1 << np.arange(bits, dtype=np.int64)).astype(np.int64)
        self._signatures: dict[int, list[int]] = {}
        self.buckets: dict[int, list[int]] = {}  # bucket key -> slots, most recently stored last
        self.slots: dict[tuple[int, int], int] = {}  # (partition, text row) -> slot
        self.slot_row = np.zeros(0, dtype=np.int64)
        self.available = np.zeros(0, dtype=np.int64)
        self.expires = np.zeros(0, dtype=np.int64)  # -1: evicted
        self.source: list[str] = []
        self.lru: OrderedDict[int, None] = OrderedDict()
        # Told the source id of each stored response that leaves (LRU, or replaced by a newer
        # one): enforce mode drops its bytes (analysis.enforce.live).
        self.on_evict: Callable[[str], None] | None = None

    # -- texts and vectors -------------------------------------------------------------------
    def partition(self, key: tuple) -> int:
        pid = self.partitions.get(key)
        if pid is None:
            pid = self.partitions[key] = len(self.partitions)
        return pid

    def register_many(self, texts: list[str], vectors: np.ndarray | None = None) -> None:
        """Embed and register the texts not yet known, in one embedder call; or register them
        with `vectors` already embedded (one row per text, e.g. in a thread, off the proxy's
        event loop)."""
        first: dict[str, int] = {}  # each unknown text -> its first position in `texts`
        for i, text in enumerate(texts):
            if text not in self.text_rows and text not in first:
                first[text] = i
        fresh = list(first)
        if not fresh:
            return
        vectors = self.embedder.embed(fresh) if vectors is None else vectors[list(first.values())]
        start = len(self.texts)
        if self.matrix.shape[0] == 0:
            self.matrix = np.zeros((0, vectors.shape[1]), dtype=np.float32)
        needed = start + len(fresh)
        if needed > self.matrix.shape[0]:
            grown = np.zeros((max(needed, 2 * self.matrix.shape[0]), vectors.shape[1]), dtype=np.float32)
            grown[:start] = self.matrix[:start]
            self.matrix = grown
        self.matrix[start:needed] = vectors
        for offset, text in enumerate(fresh):
            self.text_rows[text] = start + offset
        self.texts.extend(fresh)

    def register(self, text: str) -> int:
        """The row of `text`, embedding it when new."""
        row = self.text_rows.get(text)
        if row is None:
            self.register_many([text])
            row = self.text_rows[text]
        return row

    def _signature(self, row: int) -> list[int]:
        """The bucket number of `row` in each table (float64, one vector at a time, so it
        never depends on the batch)."""
        found = self._signatures.get(row)
        if found is None:
            vector = self.matrix[row].astype(np.float64)
            if self.planes is None:
                rng = np.random.default_rng(LSH_SEED)
                self.planes = rng.standard_normal((vector.shape[0], self.tables * self.bits))
            bits = (vector @ self.planes > 0).reshape(self.tables, self.bits)
            found = self._signatures[row] = (bits @ self.powers).tolist()
        return found

    def _bucket_keys(self, pid: int, row: int) -> list[int]:
        base = pid * self.tables
        return [((base + t) << self.bits) | s for t, s in enumerate(self._signature(row))]

    # -- lookup and store --------------------------------------------------------------------
    def nearest(self, pid: int, row: int, now: int) -> "tuple[float, int, CacheEntry] | None":
        """(similarity, slot, entry) of the most similar prompt with a usable stored response
        in partition `pid`, or None when no candidate has one. Ties go to the oldest slot."""
        buckets = self.buckets
        lists = [buckets[k] for k in self._bucket_keys(pid, row) if k in buckets]
        if not lists:
            return None
        slots = np.unique(np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64))
        slots = slots[(self.available[slots] <= now) & (now < self.expires[slots])]
        if not len(slots):
            return None
        similarities = self.matrix[self.slot_row[slots]] @ self.matrix[row]
        best = int(np.argmax(similarities))
        slot = int(slots[best])
        entry = (int(self.available[slot]), int(self.expires[slot]), self.source[slot])
        return float(similarities[best]), slot, entry

    def use(self, pid: int, slot: int) -> None:
        """A stored response was served: it becomes the most recently used."""
        self.lru.move_to_end(slot)

    def _new_slot(self, pid: int, row: int) -> int:
        slot = len(self.source)
        if slot == len(self.slot_row):
            size = max(1024, 2 * slot)
            self.slot_row = np.resize(self.slot_row, size)
            self.available = np.resize(self.available, size)
            self.expires = np.resize(self.expires, size)
        self.slot_row[slot] = row
        self.source.append("")
        self.slots[(pid, row)] = slot
        return slot

    def store(self, pid: int, row: int, available_at: int, source_id: str) -> bool:
        """Keep the response of `source_id` for this prompt, unless a usable one arrives no
        later (the rule of analysis.simulate.state.ResponseCache); True when stored."""
        slot = self.slots.get((pid, row))
        if slot is None:
            slot = self._new_slot(pid, row)
        elif self.available[slot] <= available_at < self.expires[slot]:
            return False
        elif self.on_evict is not None and self.source[slot] != source_id:
            self.on_evict(self.source[slot])  # replaced by a newer answer (the old one expired)
        self.available[slot] = available_at
        self.expires[slot] = available_at + self.ttl_us
        self.source[slot] = source_id
        self.lru[slot] = None
        self.lru.move_to_end(slot)
        if len(self.lru) > self.max_entries:
            evicted, _ = self.lru.popitem(last=False)
            self.expires[evicted] = -1
            if self.on_evict is not None:
                self.on_evict(self.source[evicted])
        for key in self._bucket_keys(pid, row):
            bucket = self.buckets.get(key)
            if bucket is None:
                self.buckets[key] = [slot]
                continue
            if slot in bucket:
                bucket.remove(slot)
            bucket.append(slot)
            if len(bucket) > self.bucket_size:
                del bucket[0]
        return True

    def forget_source(self, source_id: str) -> None:
        """Evict the stored response of `source_id`, wherever it is (enforce mode: a hit on it had
        no bytes to replay, so a later answer takes its place). Scans the slots: a rare path."""
        try:
            slot = self.source.index(source_id)
        except ValueError:
            return
        if self.expires[slot] >= 0:
            self.expires[slot] = -1
            self.lru.pop(slot, None)

    def forget(self, pid: int, row: int, source_id: str) -> None:
        """Evict the response of `source_id` stored for this prompt now (enforce mode: its
        bytes left the ResponseStore); nothing when the slot holds another answer by now."""
        slot = self.slots.get((pid, row))
        if slot is None or self.source[slot] != source_id or self.expires[slot] < 0:
            return
        self.expires[slot] = -1
        self.lru.pop(slot, None)
