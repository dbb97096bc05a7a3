"""What policies remember between requests: cached responses, budget spend, recent traffic.

This module is the single definition of what each window means. Each class holds the state of
one policy and answers one question per request in O(1) amortised time, so the same objects
serve the simulator (a million requests in a loop) and enforce mode (one request at a time).
Times are integer microseconds since the epoch.

The state is reached through one interface (`StateBackend` and the three protocols it hands
out: `CacheState`, `BudgetState`, `RateState`, plus `ResponseStore` for the bytes enforce mode
replays and the semantic cache's `SemanticIndex`, defined in analysis.simulate.semantic), so
another backend (Redis, shared by several proxies) can hold the same windows. The
memory backend (`MemoryBackend`) is these classes; a backend must pass the same tests
(tests/test_state_backends.py).

- `ResponseCache`: an LRU of stored responses with a TTL. An entry becomes usable when its
  response has arrived (request start + latency), so a duplicate sent while the first is still
  in flight is a miss, as it would be in production; it expires `ttl` after that.
- `BudgetWindows`: spend per (scope value, calendar window). A request is stopped when the
  spend already in its window has reached the limit: enforce mode cannot know a request's cost
  before the answer arrives, so neither does the simulator. The request whose charge reaches
  the limit is remembered as the one that tripped it.
- `BudgetAlerts`: which of a budget's alerts (`alert_at`) have fired, one marker per scope
  value, window and share (claimed at most once, atomically in the Redis backend), and the
  window's spend by model and feature that an alert reports.
- `RateWindows`: a sliding 60-second window of admitted requests and their tokens per scope
  value. A request is throttled when the window already holds `requests_per_minute` requests
  or `tokens_per_minute` tokens. A request's tokens (input + output) count from its admission;
  enforce mode learns them when the call ends and adds them then (`add_tokens`).
"""

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from analysis.simulate.embedders import Embedder
    from analysis.simulate.semantic import SemanticIndex

MINUTE_US = 60_000_000


# A stored response: (available_at, expires_at, source_id) -- when its answer had arrived, when
# it expires, the request whose response it is. A plain tuple: a million are made per run.
CacheEntry = tuple[int, int, str]


class ResponseCache:
    """LRU of responses keyed by any hashable key, each entry valid for `ttl_us`.

    Bounded, so a proxy can keep one for months: at most `max_entries` entries, and at most as
    many keys remembered as evicted (to tell `miss_evicted` from `miss`; the oldest are
    forgotten first). `on_evict(source_id)` is told of each entry the LRU pushes out (enforce
    mode drops its stored bytes), and `forget(key)` evicts an entry whose bytes are gone."""

    def __init__(self, ttl_us: int, max_entries: int):
        self.ttl_us = ttl_us
        self.max_entries = max_entries
        self.entries: OrderedDict[object, CacheEntry] = OrderedDict()
        self.evicted: OrderedDict[object, None] = OrderedDict()  # pushed out and not stored again since
        self.on_evict: Callable[[str], None] | None = None

    def lookup(self, key: object, now: int) -> tuple[str, CacheEntry | None]:
        """("hit", entry) or (why it missed, entry or None): miss, miss_in_flight,
        miss_expired (stored, TTL passed), miss_evicted (stored, pushed out by LRU)."""
        entry = self.entries.get(key)
        if entry is None:
            return ("miss_evicted" if key in self.evicted else "miss"), None
        if now < entry[0]:
            return "miss_in_flight", entry
        if now >= entry[1]:
            return "miss_expired", entry
        self.entries.move_to_end(key)
        return "hit", entry

    def store(self, key: object, available_at: int, source_id: str) -> bool:
        """Keep the response of `source_id`, unless a usable one arrives no later; True when
        stored."""
        entries = self.entries
        current = entries.get(key)
        if current is not None:
            if current[0] <= available_at < current[1]:
                return False
            entries.move_to_end(key)
        else:
            self.evicted.pop(key, None)
        entries[key] = (available_at, available_at + self.ttl_us, source_id)
        if len(entries) > self.max_entries:
            old_key, old = entries.popitem(last=False)
            self._evicted(old_key, old[2])
        return True

    def forget(self, key: object) -> None:
        """Evict `key`'s entry now (enforce mode: its answer's bytes left the ResponseStore)."""
        entry = self.entries.pop(key, None)
        if entry is not None:
            self._evicted(key, entry[2])

    def _evicted(self, key: object, source_id: str) -> None:
        self.evicted[key] = None
        if len(self.evicted) > self.max_entries:
            self.evicted.popitem(last=False)
        if self.on_evict is not None:
            self.on_evict(source_id)


class BudgetWindows:
    """Spend per (scope value, window) for one budget."""

    def __init__(self, limit_usd: float):
        self.limit_usd = limit_usd
        self.spent: dict[str, float] = {}  # state_key(scope value, window) -> USD

    def spent_in(self, key: str) -> float:
        return self.spent.get(key, 0.0)

    def charge(self, key: str, usd: float) -> bool:
        """Add `usd`; True when this charge is the one that reaches the limit."""
        before = self.spent.get(key, 0.0)
        after = before + usd
        self.spent[key] = after
        return before < self.limit_usd <= after


class BudgetAlerts:
    """One budget's alert markers and, per window, its spend by model and by feature.

    `claim(key, share)` is True the first time only: an alert fires once per (scope value,
    window) key and share of the limit, whichever process or request gets there first."""

    def __init__(self) -> None:
        self.fired: set[tuple[str, float]] = set()
        self.spend: dict[str, dict[tuple[str, str], float]] = {}  # key -> (model|feature, value) -> USD

    def claim(self, key: str, share: float) -> bool:
        marker = (key, share)
        if marker in self.fired:
            return False
        self.fired.add(marker)
        return True

    def add(self, key: str, model: str | None, feature: str | None, usd: float) -> None:
        spend = self.spend.setdefault(key, {})
        for part in (("model", model or ""), ("feature", feature or "")):
            spend[part] = spend.get(part, 0.0) + usd

    def top(self, key: str, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The `n` models and the `n` features that spent most in the window `key`."""
        return top_spenders(self.spend.get(key, {}), n)


def top_spenders(
    spend: dict[tuple[str, str], float], n: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(models, features) by spend, most first, then by name; each at most `n`."""

    def ranked(kind: str) -> list[tuple[str, float]]:
        rows = [(value, usd) for (k, value), usd in spend.items() if k == kind]
        return sorted(rows, key=lambda r: (-r[1], r[0]))[:n]

    return ranked("model"), ranked("feature")


class RateWindows:
    """Sliding one-minute windows of admitted requests per scope value for one rate limit."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.windows: dict[object, list] = {}  # scope value -> [deque[(ts, tokens)], token sum]

    def _window(self, key: object, now: int) -> list:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = [deque(), 0]
        events = window[0]
        horizon = now - MINUTE_US
        while events and events[0][0] <= horizon:
            window[1] -= events.popleft()[1]
        return window

    def usage(self, key: object, now: int) -> tuple[int, int]:
        """(requests, tokens) admitted in the minute before `now`."""
        window = self._window(key, now)
        return len(window[0]), window[1]

    def full(self, key: object, now: int) -> bool:
        return self._full(self._window(key, now))

    def _full(self, window: list) -> bool:
        if self.requests_per_minute is not None and len(window[0]) >= self.requests_per_minute:
            return True
        return self.tokens_per_minute is not None and window[1] >= self.tokens_per_minute

    def admit(self, key: object, now: int, tokens: int) -> None:
        window = self._window(key, now)
        window[0].append((now, tokens))
        window[1] += tokens

    def add_tokens(self, key: object, admitted_at: int, tokens: int, now: int) -> None:
        """Add `tokens` to the request admitted at `admitted_at` (enforce mode: a call's tokens
        are known when it ends; they count from its admission, as in the simulator, and leave
        the window with it). Nothing when it has left the window already."""
        window = self._window(key, now)
        events = window[0]
        for i in range(len(events) - 1, -1, -1):
            at, held = events[i]
            if at == admitted_at:
                added = max(tokens, -held)  # a window never holds fewer than 0 tokens of a request
                events[i] = (at, held + added)
                window[1] += added
                return

    def wait_us(self, key: object, now: int) -> int:
        """How long until the oldest request in the window leaves it (0: the window is empty);
        enforce mode's Retry-After."""
        events = self._window(key, now)[0]
        return max(0, events[0][0] + MINUTE_US - now) if events else 0

    def admit_if_room(self, key: object, now: int, tokens: int) -> bool:
        """`full`, then `admit` unless full: one step (atomic in the Redis backend, so several
        proxies cannot all take the last slot)."""
        window = self._window(key, now)  # once (the replay loop asks for every request)
        if self._full(window):
            return False
        window[0].append((now, tokens))
        window[1] += tokens
        return True


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An upstream answer kept for enforce mode's exact cache: replayed byte for byte.

    `chunks` are the body as it arrived (one chunk for a JSON answer, the SSE events of a
    stream); `headers` the response header fields. `cost_usd` is what the answer cost (the
    saving of each later hit)."""

    source_id: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]
    cost_usd: float | None = None
    key: object = None  # the cache key it answers (memory backend: evicting the bytes evicts the key)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks) + sum(len(k) + len(v) for k, v in self.headers)


class ResponseStore:
    """The bytes of stored responses by source id: LRU within `max_bytes`, each entry valid
    until its `expires_at` (the cache entry's own expiry, so both age together)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[str, tuple[int, StoredResponse]] = OrderedDict()
        self.evicted = 0  # entries pushed out by the byte cap
        self.on_evict: Callable[[object], None] | None = None  # told the `key` of each of them

    def put(self, response: StoredResponse, expires_at: int) -> bool:
        """Keep `response` until `expires_at`; False when it alone exceeds the cap."""
        size = response.size
        if size > self.max_bytes:
            return False
        self.discard(response.source_id)
        self.entries[response.source_id] = (expires_at, response)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, old) = self.entries.popitem(last=False)
            self.size -= old.size
            self.evicted += 1
            if self.on_evict is not None and old.key is not None:
                self.on_evict(old.key)
        return True

    def get(self, source_id: str, now: int) -> StoredResponse | None:
        found = self.entries.get(source_id)
        if found is None:
            return None
        if now >= found[0]:
            self.discard(source_id)
            return None
        self.entries.move_to_end(source_id)
        return found[1]

    def discard(self, source_id: str) -> None:
        found = self.entries.pop(source_id, None)
        if found is not None:
            self.size -= found[1].size


class CacheState(Protocol):
    """An exact or semantic cache's entries (see ResponseCache for the meaning)."""

    ttl_us: int

    def lookup(self, key: object, now: int) -> tuple[str, CacheEntry | None]: ...

    def store(self, key: object, available_at: int, source_id: str) -> bool: ...


class BudgetState(Protocol):
    """One budget's spend per window (see BudgetWindows)."""

    limit_usd: float

    def spent_in(self, key: str) -> float: ...

    def charge(self, key: str, usd: float) -> bool: ...


class AlertState(Protocol):
    """One budget's alert markers and per-window spend breakdown (see BudgetAlerts)."""

    def claim(self, key: str, share: float) -> bool: ...

    def add(self, key: str, model: str | None, feature: str | None, usd: float) -> None: ...

    def top(self, key: str, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]: ...


class RateState(Protocol):
    """One rate limit's sliding windows (see RateWindows)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None

    def usage(self, key: object, now: int) -> tuple[int, int]: ...

    def full(self, key: object, now: int) -> bool: ...

    def admit(self, key: object, now: int, tokens: int) -> None: ...

    def add_tokens(self, key: object, admitted_at: int, tokens: int, now: int) -> None: ...

    def wait_us(self, key: object, now: int) -> int: ...

    def admit_if_room(self, key: object, now: int, tokens: int) -> bool: ...


class StateBackend(Protocol):
    """Where the policies' state lives. `name` is the policy's name (unique in a policy file),
    so a shared backend can keep each policy's state under its own keys."""

    def response_cache(self, name: str, ttl_us: int, max_entries: int) -> CacheState: ...

    def response_store(self, name: str, max_bytes: int) -> "ResponseStore": ...

    def budget_windows(self, name: str, limit_usd: float) -> BudgetState: ...

    def rate_windows(self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> RateState: ...

    def budget_alerts(self, name: str) -> AlertState: ...

    def semantic_index(
        self,
        name: str,
        embedder: "Embedder",
        *,
        ttl_us: int,
        max_entries: int,
        bits: int,
        tables: int,
        bucket_size: int,
    ) -> "SemanticIndex": ...


_Held = TypeVar("_Held")


class MemoryBackend:
    """State in this process (the simulator's, and one proxy's). Like a shared backend, it
    keeps each policy's state under the policy's name: asked again for the same name (a policy
    reloaded by the proxy), it returns the same windows with the new limits, so spend and
    cached answers survive a reload."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], Any] = {}

    def _keep(self, kind: str, name: str, make: Callable[[], _Held], **settings: object) -> _Held:
        held: _Held | None = self._held.get((kind, name))
        if held is None:
            held = self._held[(kind, name)] = make()
        for attribute, value in settings.items():
            setattr(held, attribute, value)
        return held

    def response_cache(self, name: str, ttl_us: int, max_entries: int) -> ResponseCache:
        return self._keep(
            "cache", name, lambda: ResponseCache(ttl_us, max_entries), ttl_us=ttl_us, max_entries=max_entries
        )

    def response_store(self, name: str, max_bytes: int) -> ResponseStore:
        return self._keep("store", name, lambda: ResponseStore(max_bytes), max_bytes=max_bytes)

    def budget_windows(self, name: str, limit_usd: float) -> BudgetWindows:
        return self._keep("budget", name, lambda: BudgetWindows(limit_usd), limit_usd=limit_usd)

    def budget_alerts(self, name: str) -> BudgetAlerts:
        return self._keep("alerts", name, BudgetAlerts)

    def rate_windows(self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> RateWindows:
        return self._keep(
            "rate",
            name,
            lambda: RateWindows(requests_per_minute, tokens_per_minute),
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )

    def semantic_index(
        self,
        name: str,
        embedder: "Embedder",
        *,
        ttl_us: int,
        max_entries: int,
        bits: int,
        tables: int,
        bucket_size: int,
    ) -> "SemanticIndex":
        """The semantic cache's index (analysis.simulate.semantic); kept across a reload while
        the embedder and the LSH shape stay the same (else its vectors and buckets mean nothing)."""
        from analysis.simulate.semantic import SemanticIndex  # numpy and the embedders: only when used

        shape = (getattr(embedder, "id", type(embedder).__name__), bits, tables, bucket_size)
        return self._keep(
            f"semantic:{shape}",
            name,
            lambda: SemanticIndex(
                embedder, ttl_us=ttl_us, max_entries=max_entries, bits=bits, tables=tables, bucket_size=bucket_size
            ),
            ttl_us=ttl_us,
            max_entries=max_entries,
        )
