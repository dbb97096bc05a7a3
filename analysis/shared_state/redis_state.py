"""The simulator's state classes kept in Redis: one set of windows for every proxy.

`RedisResponseCache`, `RedisBudgetWindows` and `RedisRateWindows` have the methods of
analysis.simulate.state's `ResponseCache`, `BudgetWindows` and `RateWindows` and mean the same
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
    <prefix>:cache:<name>:evicted   set   keys pushed out by LRU and not stored again since
    <prefix>:cache:<name>:seq       counter for the LRU order
    <prefix>:cache:<name>:size      hash  key -> body bytes; :bytes the total
    <prefix>:cache:<name>:body:<key> string, the stored response bytes (expire with the entry)
    <prefix>:budget:<name>:<key>    string, USD spent in that window (expires after `ttl_s`)
    <prefix>:rate:<name>:<key>      zset  "<ts>:<tokens>:<n>" -> ts; :tokens the token sum
"""

from analysis.shared_state.redis_link import RedisLink
from analysis.simulate.state import MINUTE_US, BudgetWindows, CacheEntry, RateWindows, ResponseCache

DEFAULT_PREFIX = "llm-shadow"

_LOOKUP = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then
  if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'miss_evicted'} end
  return {'miss'}
end
local a, x = string.match(e, '^(%S+) (%S+) ')
local now = tonumber(ARGV[2])
if now < tonumber(a) then return {'miss_in_flight', e} end
if now >= tonumber(x) then return {'miss_expired', e} end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
return {'hit', e}
"""

# ARGV: key, available_at, expires_at, source_id, max_entries, max_bytes (0: none), body or '',
# has_body (1/0), body key prefix, body ttl ms
_STORE = """
local key = ARGV[1]
local cur = redis.call('HGET', KEYS[1], key)
local avail = tonumber(ARGV[2])
if cur then
  local a, x = string.match(cur, '^(%S+) (%S+) ')
  if tonumber(a) <= avail and avail < tonumber(x) then return 0 end
else
  redis.call('SREM', KEYS[3], key)
end
redis.call('HSET', KEYS[1], key, ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), key)
local old_size = tonumber(redis.call('HGET', KEYS[5], key) or '0')
if ARGV[8] == '1' then
  redis.call('SET', ARGV[9] .. key, ARGV[7], 'PX', ARGV[10])
  redis.call('HSET', KEYS[5], key, #ARGV[7])
  redis.call('INCRBY', KEYS[6], #ARGV[7] - old_size)
elseif old_size > 0 then
  redis.call('DEL', ARGV[9] .. key)
  redis.call('HDEL', KEYS[5], key)
  redis.call('INCRBY', KEYS[6], -old_size)
end
local max_entries = tonumber(ARGV[5])
local max_bytes = tonumber(ARGV[6])
while redis.call('ZCARD', KEYS[2]) > max_entries
    or (max_bytes > 0 and tonumber(redis.call('GET', KEYS[6]) or '0') > max_bytes and redis.call('ZCARD', KEYS[2]) > 1) do
  local old = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('HDEL', KEYS[1], old)
  redis.call('SADD', KEYS[3], old)
  local size = tonumber(redis.call('HGET', KEYS[5], old) or '0')
  if size > 0 then
    redis.call('DEL', ARGV[9] .. old)
    redis.call('HDEL', KEYS[5], old)
    redis.call('INCRBY', KEYS[6], -size)
  end
end
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


def _entry(raw: bytes) -> CacheEntry:
    available, expires, source = raw.decode().split(" ", 2)
    return int(available), int(expires), source


class RedisResponseCache:
    """`ResponseCache` in Redis, with the response bytes beside each entry and an optional byte
    cap (`max_bytes`: least recently used entries go first, as for `max_entries`)."""

    def __init__(
        self, link: RedisLink, name: str, ttl_us: int, max_entries: int, max_bytes: int = 0, prefix=DEFAULT_PREFIX
    ):
        self.link, self.ttl_us, self.max_entries, self.max_bytes = link, ttl_us, max_entries, max_bytes
        base = f"{prefix}:cache:{name}"
        self.keys = [f"{base}:{part}" for part in ("entry", "lru", "evicted", "seq", "size", "bytes")]
        self.body_prefix = f"{base}:body:"
        self.fallback = ResponseCache(ttl_us, max_entries)
        self.local_bodies: dict[object, bytes] = {}
        client = link.client
        self._lookup = client.register_script(_LOOKUP)
        self._store = client.register_script(_STORE)

    def lookup(self, key: str, now: int) -> tuple[str, CacheEntry | None]:
        def shared() -> tuple[str, CacheEntry | None]:
            found = self._lookup(keys=self.keys[:4], args=[key, now])
            status = found[0].decode()
            return status, (_entry(found[1]) if len(found) > 1 else None)

        return self.link.run(shared, lambda: self.fallback.lookup(key, now))

    def store(self, key: str, available_at: int, source_id: str, body: bytes | None = None) -> bool:
        expires = available_at + self.ttl_us

        def shared() -> bool:
            ttl_ms = max(1, (expires - available_at) // 1000 + 60_000)  # a minute past expiry: clocks differ
            args = [key, available_at, expires, source_id, self.max_entries, self.max_bytes]
            args += [body or b"", 0 if body is None else 1, self.body_prefix, ttl_ms]
            return bool(self._store(keys=self.keys, args=args))

        def local() -> bool:
            stored = self.fallback.store(key, available_at, source_id)
            if stored and body is not None:
                self.local_bodies[key] = body
            for gone in set(self.local_bodies) - self.fallback.entries.keys():
                del self.local_bodies[gone]
            return stored

        return self.link.run(shared, local)

    def body(self, key: str) -> bytes | None:
        """The response bytes stored with `key`'s entry (None: none, or expired)."""
        return self.link.run(lambda: self.link.client.get(self.body_prefix + key), lambda: self.local_bodies.get(key))


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

    def admit_if_room(self, key: object, now: int, tokens: int) -> bool:
        """`full` then `admit` as one atomic step: False (and nothing admitted) when full. With
        several proxies, this is what keeps the global rate: no two can take the last slot."""
        return self._run_admit(key, now, tokens, check=True)
