"""The simulator's state classes kept in Redis: one set of windows for every proxy.

`RedisResponseCache`, `RedisResponseStore`, `RedisBudgetWindows` and `RedisRateWindows` have the
methods of analysis.simulate.state's `ResponseCache`, `ResponseStore`, `BudgetWindows` and
`RateWindows` and mean the same
(that module defines each window; tests/test_shared_state.py runs the same cases against both).
Each method is one Lua script, so a read and the update that depends on it are one atomic step
however many proxies call at once. Arithmetic follows the memory classes: budget spend is added
in Lua in double precision and stored with 17 significant digits, so the sum after N charges is
bit for bit the sum in Python; times are integer microseconds passed by the caller (the clock
rule in analysis.shared_state).

When Redis is down or slow each method runs on a local instance of the memory class instead
(`RedisLink.run`). The local budget starts from the last spend this process read from Redis, and
charges made while Redis was away are added to Redis when it returns, so no spend is lost;
rate windows and cache entries made meanwhile stay local.

Redis layout under `<prefix>` (default `llm-shadow`):
    <prefix>:cache:<name>:entry     hash  key -> "available_at expires_at source_id"
    <prefix>:cache:<name>:lru       zset  key -> use counter (lowest: least recently used)
    <prefix>:cache:<name>:evictions zset  keys pushed out by LRU and not stored again since -> the
                                          order they left in (the last max_entries; older forgotten)
    <prefix>:cache:<name>:seq       counter for the LRU order
    <prefix>:store:<name>:body      hash  source id -> encoded StoredResponse (with its expiry)
    <prefix>:store:<name>:size      hash  source id -> bytes; :lru, :seq as above; :bytes the total
    <prefix>:budget:<name>:<key>    string, USD spent in that window (expires after `ttl_s`)
    <prefix>:rate:<name>:<key>      zset  "<ts>:<tokens>:<n>" -> ts; :tokens the token sum
"""

import json

from analysis.shared_state.redis_link import RedisLink
from analysis.simulate.state import (
    MINUTE_US,
    BudgetWindows,
    CacheEntry,
    RateWindows,
    ResponseCache,
    ResponseStore,
    StoredResponse,
)

DEFAULT_PREFIX = "llm-shadow"

_LOOKUP = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then
  if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {'miss_evicted'} end
  return {'miss'}
end
local a, x = string.match(e, '^(%S+) (%S+) ')
local now = tonumber(ARGV[2])
if now < tonumber(a) then return {'miss_in_flight', e} end
if now >= tonumber(x) then return {'miss_expired', e} end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
return {'hit', e}
"""

# ARGV: key, available_at, expires_at, source_id, max_entries
_STORE = """
local key = ARGV[1]
local cur = redis.call('HGET', KEYS[1], key)
local avail = tonumber(ARGV[2])
if cur then
  local a, x = string.match(cur, '^(%S+) (%S+) ')
  if tonumber(a) <= avail and avail < tonumber(x) then return 0 end
else
  redis.call('ZREM', KEYS[3], key)
end
redis.call('HSET', KEYS[1], key, ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), key)
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[5]) do
  local old = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('HDEL', KEYS[1], old)
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), old)
  if redis.call('ZCARD', KEYS[3]) > tonumber(ARGV[5]) then redis.call('ZPOPMIN', KEYS[3]) end
end
return 1
"""

# Response bytes. KEYS: bodies hash, sizes hash, lru zset, seq, total bytes.
# ARGV: source id, encoded response, max bytes, size (StoredResponse.size: the cap counts what
# the memory store counts). Returns the number of entries evicted, -1 when
# the response alone exceeds the cap.
_PUT = """
local id, value, cap, size = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if size > cap then return -1 end
local old = tonumber(redis.call('HGET', KEYS[2], id) or '0')
redis.call('HSET', KEYS[1], id, value)
redis.call('HSET', KEYS[2], id, size)
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), id)
local total = redis.call('INCRBY', KEYS[5], size - old)
local evicted = 0
while total > cap do
  local gone = redis.call('ZPOPMIN', KEYS[3])[1]
  total = redis.call('INCRBY', KEYS[5], -tonumber(redis.call('HGET', KEYS[2], gone)))
  redis.call('HDEL', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
  evicted = evicted + 1
end
return evicted
"""

# ARGV: source id, touch (1: a use, the entry becomes the most recent)
_GET = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value and ARGV[2] == '1' then redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1]) end
return value
"""

_DISCARD = """
local size = redis.call('HGET', KEYS[2], ARGV[1])
if not size then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('INCRBY', KEYS[5], -tonumber(size))
return 1
"""

# KEYS: spend, this process's last applied charge number; ARGV: usd, limit, ttl, charge number.
# A charge whose number is not above the last applied one was applied already: it timed out
# here but reached Redis, and its local copy is being handed over (or the reverse).
_CHARGE = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[4]) <= last then return {0, redis.call('GET', KEYS[1]) or '0'} end
redis.call('SET', KEYS[2], ARGV[4], 'EX', 86400)
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = before + tonumber(ARGV[1])
local stored = string.format('%.17g', after)
redis.call('SET', KEYS[1], stored, 'EX', ARGV[3])
local limit = tonumber(ARGV[2])
if before < limit and limit <= after then return {1, stored} end
return {0, stored}
"""

# Drop events at or before the horizon (as the memory class pops them), then answer.
_PRUNE = """
local horizon = tonumber(ARGV[1]) - tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon)
if #gone > 0 then
  local sum = 0
  for _, member in ipairs(gone) do sum = sum + tonumber(string.match(member, '^[^:]+:(%d+):')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
  redis.call('DECRBY', KEYS[2], sum)
end
"""

_USAGE = (
    _PRUNE
    + """
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
)

# ARGV: now, window, tokens, requests limit (-1: none), tokens limit (-1: none), check (1/0)
_ADMIT = (
    _PRUNE
    + """
if ARGV[6] == '1' then
  local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
  if rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm then return 0 end
  if tpm >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return 0 end
end
local n = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1] .. ':' .. ARGV[3] .. ':' .. n)
redis.call('INCRBY', KEYS[2], ARGV[3])
local ttl = math.floor(tonumber(ARGV[2]) / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""
)

# ARGV: now, window, admitted_at, tokens. The request admitted at that time gets the tokens
# (its member rewritten), the sum with them; nothing when it has left the window.
_ADD_TOKENS = (
    _PRUNE
    + """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[3], 'LIMIT', 0, 1)[1]
if not found then return 0 end
local held, n = string.match(found, '^[^:]+:(%d+):(.*)$')
local after = math.max(0, tonumber(held) + tonumber(ARGV[4]))
redis.call('ZREM', KEYS[1], found)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[3] .. ':' .. after .. ':' .. n)
redis.call('INCRBY', KEYS[2], after - tonumber(held))
return 1
"""
)


def _entry(raw: bytes) -> CacheEntry:
    available, expires, source = raw.decode().split(" ", 2)
    return int(available), int(expires), source


class RedisResponseCache:
    """`ResponseCache` in Redis."""

    def __init__(self, link: RedisLink, name: str, ttl_us: int, max_entries: int, prefix: str = DEFAULT_PREFIX):
        self.link, self.ttl_us, self.max_entries = link, ttl_us, max_entries
        base = f"{prefix}:cache:{name}"
        self.keys = [f"{base}:{part}" for part in ("entry", "lru", "evictions", "seq")]
        self.fallback = ResponseCache(ttl_us, max_entries)
        self._lookup = link.client.register_script(_LOOKUP)
        self._store = link.client.register_script(_STORE)

    def lookup(self, key: str, now: int) -> tuple[str, CacheEntry | None]:
        def shared() -> tuple[str, CacheEntry | None]:
            found = self._lookup(keys=self.keys, args=[key, now])
            return found[0].decode(), (_entry(found[1]) if len(found) > 1 else None)

        return self.link.run(shared, lambda: self.fallback.lookup(key, now))

    def store(self, key: str, available_at: int, source_id: str) -> bool:
        def shared() -> bool:
            args = [key, available_at, available_at + self.ttl_us, source_id, self.max_entries]
            return bool(self._store(keys=self.keys, args=args))

        return self.link.run(shared, lambda: self.fallback.store(key, available_at, source_id))


def encode_response(response: StoredResponse, expires_at: int) -> bytes:
    """A stored response as one Redis value: a JSON line (fields, header bytes as latin-1,
    chunk lengths), then the chunks' bytes as they are."""
    head = {
        "source_id": response.source_id,
        "status": response.status,
        "cost_usd": response.cost_usd,
        "expires_at": expires_at,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.headers],
        "chunks": [len(c) for c in response.chunks],
    }
    return json.dumps(head).encode() + b"\n" + b"".join(response.chunks)


def decode_response(value: bytes) -> tuple[int, StoredResponse]:
    line, _, body = value.partition(b"\n")
    head = json.loads(line)
    chunks, offset = [], 0
    for length in head["chunks"]:
        chunks.append(body[offset : offset + length])
        offset += length
    headers = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"])
    response = StoredResponse(head["source_id"], head["status"], headers, tuple(chunks), head["cost_usd"])
    return head["expires_at"], response


class RedisResponseStore:
    """`ResponseStore` in Redis: the bytes of stored responses, LRU within `max_bytes` (counted
    as the memory store counts them), each valid until its `expires_at` by the caller's clock."""

    def __init__(self, link: RedisLink, name: str, max_bytes: int, prefix: str = DEFAULT_PREFIX):
        self.link, self.max_bytes = link, max_bytes
        base = f"{prefix}:store:{name}"
        self.keys = [f"{base}:{part}" for part in ("body", "size", "lru", "seq", "bytes")]
        self.fallback = ResponseStore(max_bytes)
        self.evicted = 0  # entries this process's puts pushed out of Redis by the byte cap
        client = link.client
        self._put, self._get, self._discard = (client.register_script(s) for s in (_PUT, _GET, _DISCARD))

    @property
    def size(self) -> int:
        return self.link.run(lambda: int(self.link.client.get(self.keys[4]) or 0), lambda: self.fallback.size)

    def put(self, response: StoredResponse, expires_at: int) -> bool:
        def shared() -> bool:
            evicted = self._put(
                keys=self.keys,
                args=[response.source_id, encode_response(response, expires_at), self.max_bytes, response.size],
            )
            if evicted < 0:
                return False
            self.evicted += evicted
            return True

        return self.link.run(shared, lambda: self.fallback.put(response, expires_at))

    def get(self, source_id: str, now: int) -> StoredResponse | None:
        def shared() -> StoredResponse | None:
            value = self._get(keys=self.keys, args=[source_id, 1])
            if value is None:
                return None
            expires_at, response = decode_response(value)
            if now >= expires_at:
                self._discard(keys=self.keys, args=[source_id])
                return None
            return response

        return self.link.run(shared, lambda: self.fallback.get(source_id, now))

    def discard(self, source_id: str) -> None:
        self.link.run(lambda: self._discard(keys=self.keys, args=[source_id]), lambda: self.fallback.discard(source_id))


class _SpentView:
    """`BudgetWindows.spent` read through to Redis (`spent.get(key, 0.0)`)."""

    def __init__(self, owner: "RedisBudgetWindows"):
        self.owner = owner

    def get(self, key: str, default: float = 0.0) -> float:
        spent = self.owner.spent_in(key)
        return spent if spent else default


class RedisBudgetWindows:
    """`BudgetWindows` in Redis: spend per (scope value, window) for one budget."""

    def __init__(self, link: RedisLink, name: str, limit_usd: float, ttl_s: int = 40 * 86_400, prefix=DEFAULT_PREFIX):
        self.link, self.limit_usd, self.ttl_s = link, limit_usd, ttl_s
        self.prefix = f"{prefix}:budget:{name}:"
        self.fallback = BudgetWindows(limit_usd)  # last spend seen in Redis, plus charges made while it was away
        self.pending: list[tuple[int, str, float]] = []  # (number, key, usd) Redis has not seen yet
        self.applied_prefix = f"{prefix}:charges:"
        self.spent = _SpentView(self)
        self._charge = link.client.register_script(_CHARGE)
        link.on_recovery.append(self.flush)

    def spent_in(self, key: str) -> float:
        def shared() -> float:
            raw = self.link.client.get(self.prefix + key)
            value = float(raw) if raw is not None else 0.0
            self.fallback.spent[key] = value
            return value

        return self.link.run(shared, lambda: self.fallback.spent_in(key))

    def charge(self, key: str, usd: float) -> bool:
        link = self.link
        with link.charge_lock:  # numbered and sent in order, one at a time
            link.charges += 1
            number = link.charges

            def shared() -> bool:
                tripped, after = self._send(key, usd, number)
                self.fallback.spent[key] = float(after)
                return bool(tripped)

            def local() -> bool:
                self.pending.append((number, key, usd))
                return self.fallback.charge(key, usd)

            return link.run(shared, local)

    def _send(self, key: str, usd: float, number: int) -> list:
        keys = [self.prefix + key, f"{self.applied_prefix}{self.link.process_id}"]
        return self._charge(keys=keys, args=[repr(float(usd)), repr(self.limit_usd), self.ttl_s, number])

    def flush(self) -> None:
        """Hand Redis the charges made while it was away, in order (called when it answers
        again); a charge that had reached it all the same is skipped by its number."""
        while self.pending:
            number, key, usd = self.pending[0]
            self._send(key, usd, number)
            self.pending.pop(0)


class RedisRateWindows:
    """`RateWindows` in Redis: sliding one-minute windows of admitted requests and tokens."""

    def __init__(
        self,
        link: RedisLink,
        name: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        prefix=DEFAULT_PREFIX,
    ):
        self.link = link
        self.requests_per_minute, self.tokens_per_minute = requests_per_minute, tokens_per_minute
        self.prefix = f"{prefix}:rate:{name}:"
        self.counter = f"{prefix}:rate:{name}\x1fseq"
        self.fallback = RateWindows(requests_per_minute, tokens_per_minute)
        self._usage = link.client.register_script(_USAGE)
        self._admit = link.client.register_script(_ADMIT)
        self._add_tokens = link.client.register_script(_ADD_TOKENS)

    def _keys(self, key: object) -> list[str]:
        return [f"{self.prefix}{key}", f"{self.prefix}{key}\x1ftokens", self.counter]

    def usage(self, key: object, now: int) -> tuple[int, int]:
        def shared() -> tuple[int, int]:
            requests, tokens = self._usage(keys=self._keys(key)[:2], args=[now, MINUTE_US])
            return int(requests), int(tokens)

        return self.link.run(shared, lambda: self.fallback.usage(key, now))

    def full(self, key: object, now: int) -> bool:
        requests, tokens = self.usage(key, now)
        if self.requests_per_minute is not None and requests >= self.requests_per_minute:
            return True
        return self.tokens_per_minute is not None and tokens >= self.tokens_per_minute

    def _run_admit(self, key: object, now: int, tokens: int, check: bool) -> bool:
        def shared() -> bool:
            limits = [-1 if v is None else v for v in (self.requests_per_minute, self.tokens_per_minute)]
            return bool(self._admit(keys=self._keys(key), args=[now, MINUTE_US, int(tokens), *limits, int(check)]))

        def local() -> bool:
            if check and self.fallback.full(key, now):
                return False
            self.fallback.admit(key, now, tokens)
            return True

        return self.link.run(shared, local)

    def admit(self, key: object, now: int, tokens: int) -> None:
        self._run_admit(key, now, tokens, check=False)

    def add_tokens(self, key: object, admitted_at: int, tokens: int, now: int) -> None:
        def shared() -> None:
            self._add_tokens(keys=self._keys(key)[:2], args=[now, MINUTE_US, admitted_at, int(tokens)])

        self.link.run(shared, lambda: self.fallback.add_tokens(key, admitted_at, tokens, now))

    def wait_us(self, key: object, now: int) -> int:
        """How long until the oldest request in the window leaves it (0: empty)."""

        def shared() -> int:
            window = self._keys(key)[0]
            self._usage(keys=self._keys(key)[:2], args=[now, MINUTE_US])  # prunes what has left
            oldest = self.link.client.zrange(window, 0, 0, withscores=True)
            return max(0, int(oldest[0][1]) + MINUTE_US - now) if oldest else 0

        return self.link.run(shared, lambda: self.fallback.wait_us(key, now))

    def admit_if_room(self, key: object, now: int, tokens: int) -> bool:
        """`full` then `admit` as one atomic step: False (and nothing admitted) when full. With
        several proxies, this is what keeps the global rate: no two can take the last slot."""
        return self._run_admit(key, now, tokens, check=True)
