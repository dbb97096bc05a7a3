"""The --state option: where a proxy keeps what its policies remember.

`open_backend("memory")` keeps state in the process, in the simulator's classes
(analysis.simulate.state.MemoryBackend); `open_backend("redis://HOST:PORT/DB")` in Redis,
shared by every proxy that names the same database (analysis.shared_state.redis_state). Both
implement analysis.simulate.state.StateBackend, so the code that decides never knows which it has.
"""

import os
from typing import TYPE_CHECKING

from analysis.shared_state.redis_alerts import RedisBudgetAlerts
from analysis.shared_state.redis_link import RedisLink
from analysis.shared_state.redis_state import (
    DEFAULT_PREFIX,
    RedisBudgetWindows,
    RedisRateWindows,
    RedisResponseCache,
    RedisResponseStore,
)
from analysis.simulate.state import MemoryBackend, StateBackend

if TYPE_CHECKING:  # numpy and polars load only when a policy has a semantic cache
    from analysis.shared_state.redis_semantic import RedisSemanticIndex
    from analysis.simulate.embedders import Embedder

STATE_ENV = "LLM_SHADOW_STATE"


class BadStateURL(ValueError):
    """The --state value is neither `memory` nor a redis:// URL."""


class RedisBackend:
    """State in one Redis database, shared by every proxy that uses it."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX):
        self.url, self.prefix = url, prefix
        self.link = RedisLink(url)

    def response_cache(self, name: str, ttl_us: int, max_entries: int) -> RedisResponseCache:
        return RedisResponseCache(self.link, name, ttl_us, max_entries, prefix=self.prefix)

    def response_store(self, name: str, max_bytes: int) -> RedisResponseStore:
        return RedisResponseStore(self.link, name, max_bytes, prefix=self.prefix)

    def budget_windows(self, name: str, limit_usd: float) -> RedisBudgetWindows:
        return RedisBudgetWindows(self.link, name, limit_usd, prefix=self.prefix)

    def budget_alerts(self, name: str) -> RedisBudgetAlerts:
        return RedisBudgetAlerts(self.link, name, prefix=self.prefix)

    def rate_windows(
        self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None
    ) -> RedisRateWindows:
        return RedisRateWindows(self.link, name, requests_per_minute, tokens_per_minute, prefix=self.prefix)

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
    ) -> "RedisSemanticIndex":
        from analysis.shared_state.redis_semantic import RedisSemanticIndex

        return RedisSemanticIndex(
            self.link,
            name,
            embedder,
            ttl_us=ttl_us,
            max_entries=max_entries,
            bits=bits,
            tables=tables,
            bucket_size=bucket_size,
            prefix=self.prefix,
        )


def state_url(value: str | None) -> str:
    """The --state value, else $LLM_SHADOW_STATE, else memory."""
    return value or os.environ.get(STATE_ENV) or "memory"


def open_backend(value: str | None) -> StateBackend:
    """The backend a --state value names; BadStateURL (a one-line message) when it names none."""
    url = state_url(value)
    if url == "memory":
        return MemoryBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            return RedisBackend(url)
        except ValueError as e:
            raise BadStateURL(f"--state {url}: {e}") from None
    raise BadStateURL(f"--state: expected 'memory' or redis://HOST:PORT/DB, got {url!r}")


def state_status(backend: StateBackend) -> dict:
    """What the status file says about shared state."""
    if isinstance(backend, RedisBackend):
        return backend.link.status()
    return {"backend": "memory"}


def state_problems(backend: StateBackend) -> dict[str, int]:
    """The status file's problem counts for shared state (shown by `llm-shadow stats`):
    operations served by local state because Redis was down or slow, and how often it was lost."""
    if not isinstance(backend, RedisBackend):
        return {}
    link, found = backend.link, {}
    if link.fallbacks:
        found["shared_state_fallback"] = link.fallbacks
    if link.outages:
        found["shared_state_outage"] = link.outages
    return found
