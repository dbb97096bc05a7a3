"""The semantic cache's stored entries in Redis: a prompt answered through one proxy is found
again, by similarity, through another.

`RedisSemanticIndex` is analysis.simulate.semantic's `SemanticIndex` (same LSH tables, same
rules: an entry is usable from its answer's arrival until `ttl_us` later, at most `max_entries`
entries, least recently used out first, each bucket keeping its `bucket_size` latest prompts)
with the stored entries kept in Redis instead of in numpy arrays: for each (partition, prompt)
its validity window, the request whose answer it is, and the prompt's vector, so a process that
never saw the prompt can compare against it without embedding it. Each process still embeds its
own prompts (`register`, off the event loop in the proxy) and keeps their vectors locally.

Partitions and prompts are named by digests of their content, so every process gives the same
prompt in the same partition the same slot and the same buckets. A lookup is one Lua script that
returns the usable candidates of the prompt's buckets with their vectors; the similarity is
computed here, with numpy, as the memory index does (ties go to the slot stored first). A store
is one Lua script (the check, the LRU and the buckets in one atomic step).

When Redis is down or slow (analysis.shared_state.redis_link) the index is served from this
process's own memory index; entries stored meanwhile stay local, as the exact cache's do.

Redis layout under `<prefix>:semantic:<name>:<settings digest>` (the digest names the embedder
and the LSH shape, so a policy that changes them starts a new index instead of comparing
vectors of another kind):
    :entry            hash  slot -> "available_at expires_at created source_id"
    :vector           hash  slot -> float32 bytes of the prompt's vector
    :lru              zset  slot -> use counter (lowest: least recently used)
    :seq              counter for the LRU order and the creation order
    :bucket:<p>:<t>:<s>  list of slots, latest stored last (expires a day after the TTL)
"""

import hashlib
import json

import numpy as np

from analysis.shared_state.redis_link import RedisLink
from analysis.simulate.embedders import Embedder
from analysis.simulate.semantic import SemanticIndex
from analysis.simulate.state import CacheEntry

BUCKET_GRACE_MS = 86_400_000  # a bucket outlives its latest entry's TTL by a day

# KEYS: entry hash, vector hash, buckets... ARGV: now (µs).
# Returns [slot, entry, vector, ...] for every usable candidate.
_NEAREST = """
local now = tonumber(ARGV[1])
local seen, out = {}, {}
for i = 3, #KEYS do
  for _, slot in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
    if not seen[slot] then
      seen[slot] = true
      local e = redis.call('HGET', KEYS[1], slot)
      if e then
        local a, x = string.match(e, '^(%S+) (%S+) ')
        if tonumber(a) <= now and now < tonumber(x) then
          local v = redis.call('HGET', KEYS[2], slot)
          if v then
            out[#out + 1] = slot
            out[#out + 1] = e
            out[#out + 1] = v
          end
        end
      end
    end
  end
end
return out
"""

# KEYS: entry hash, lru zset, seq. ARGV: slot.
_USE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
end
return 1
"""

# KEYS: entry hash, vector hash, lru zset, seq, buckets...
# ARGV: slot, available_at, expires_at, source_id, max_entries, bucket_size, vector, bucket ttl ms
_STORE = """
local slot = ARGV[1]
local avail = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[1], slot)
local created
if cur then
  local a, x, c = string.match(cur, '^(%S+) (%S+) (%S+) ')
  if tonumber(a) <= avail and avail < tonumber(x) then return 0 end
  created = c
else
  created = tostring(redis.call('INCR', KEYS[4]))
  redis.call('HSET', KEYS[2], slot, ARGV[7])
end
redis.call('HSET', KEYS[1], slot, ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. created .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), slot)
while redis.call('ZCARD', KEYS[3]) > tonumber(ARGV[5]) do
  local old = redis.call('ZPOPMIN', KEYS[3])[1]
  redis.call('HDEL', KEYS[1], old)
  redis.call('HDEL', KEYS[2], old)
end
for i = 5, #KEYS do
  redis.call('LREM', KEYS[i], 0, slot)
  redis.call('RPUSH', KEYS[i], slot)
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[6]), -1)
  redis.call('PEXPIRE', KEYS[i], ARGV[8])
end
return 1
"""


def digest(text: str, size: int = 16) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


class RedisSemanticIndex(SemanticIndex):
    """A SemanticIndex whose stored entries live in Redis, shared by every proxy using it."""

    def __init__(
        self,
        link: RedisLink,
        name: str,
        embedder: Embedder,
        *,
        ttl_us: int,
        max_entries: int,
        bits: int,
        tables: int,
        bucket_size: int,
        prefix: str,
    ):
        super().__init__(
            embedder, ttl_us=ttl_us, max_entries=max_entries, bits=bits, tables=tables, bucket_size=bucket_size
        )
        self.link = link
        shape = digest(f"{getattr(embedder, 'id', type(embedder).__name__)}|{bits}|{tables}", 6)
        self.base = f"{prefix}:semantic:{name}:{shape}"
        self.keys = [f"{self.base}:{part}" for part in ("entry", "vector", "lru", "seq")]
        self._text_digests: dict[int, str] = {}
        client = link.client
        self._nearest, self._use, self._store = (client.register_script(s) for s in (_NEAREST, _USE, _STORE))

    def partition(self, key: tuple) -> int:
        """A partition's number from its content (62 bits), the same in every process."""
        pid = self.partitions.get(key)
        if pid is None:
            text = json.dumps(list(key), ensure_ascii=False, default=str)
            pid = self.partitions[key] = int(digest(text, 8), 16) >> 2
        return pid

    def _slot(self, pid: int, row: int) -> str:
        found = self._text_digests.get(row)
        if found is None:
            found = self._text_digests[row] = digest(self.texts[row])
        return f"{pid:x}:{found}"

    def _redis_buckets(self, pid: int, row: int) -> list[str]:
        return [f"{self.base}:bucket:{pid:x}:{t}:{s}" for t, s in enumerate(self._signature(row))]

    # -- the SemanticIndex methods the replay loop calls ----------------------------------------
    def nearest(self, pid: int, row: int, now: int) -> tuple[float, int, CacheEntry] | None:
        return self.link.run(
            lambda: self._nearest_in_redis(pid, row, now), lambda: SemanticIndex.nearest(self, pid, row, now)
        )

    def use(self, pid: int, slot) -> None:
        if isinstance(slot, str):  # found in Redis
            self.link.run(lambda: self._use(keys=[self.keys[0], *self.keys[2:]], args=[slot]), lambda: None)
        else:  # found locally while Redis was away
            SemanticIndex.use(self, pid, slot)

    def store(self, pid: int, row: int, available_at: int, source_id: str) -> bool:
        def shared() -> bool:
            self._store_in_redis(pid, row, available_at, source_id)
            return True  # the script may keep an earlier answer: its bytes are then kept needlessly, within the cap

        return self.link.run(shared, lambda: SemanticIndex.store(self, pid, row, available_at, source_id))

    # -- Redis -----------------------------------------------------------------------------------
    def _nearest_in_redis(self, pid: int, row: int, now: int):
        found = self._nearest(keys=[self.keys[0], self.keys[1], *self._redis_buckets(pid, row)], args=[now])
        if not found:
            return None
        candidates = []
        for i in range(0, len(found), 3):
            available, expires, created, source = found[i + 1].decode().split(" ", 3)
            candidates.append((int(created), found[i].decode(), (int(available), int(expires), source), found[i + 2]))
        candidates.sort(key=lambda c: c[0])  # ties go to the slot stored first, as in memory
        vectors = np.frombuffer(b"".join(c[3] for c in candidates), dtype=np.float32)
        similarities = vectors.reshape(len(candidates), -1) @ self.matrix[row]
        best = int(np.argmax(similarities))
        return float(similarities[best]), candidates[best][1], candidates[best][2]

    def _store_in_redis(self, pid: int, row: int, available_at: int, source_id: str) -> None:
        args = [
            self._slot(pid, row),
            available_at,
            available_at + self.ttl_us,
            source_id,
            self.max_entries,
            self.bucket_size,
            np.ascontiguousarray(self.matrix[row], dtype=np.float32).tobytes(),
            self.ttl_us // 1000 + BUCKET_GRACE_MS,
        ]
        self._store(keys=[*self.keys, *self._redis_buckets(pid, row)], args=args)
