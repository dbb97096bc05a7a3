"""The --state option: where a proxy keeps what its policies remember.

`open_backend("memory")` keeps state in the process, in the simulator's classes
(analysis.simulate.state); `open_backend("redis://HOST:PORT/DB")` in Redis, shared by every
proxy that names the same database (analysis.shared_state.redis_state). Both hand out objects
with the same methods, so the code that decides never knows which it has.
"""

import os

from analysis.shared_state.redis_link import RedisLink
from analysis.shared_state.redis_state import RedisBudgetWindows, RedisRateWindows, RedisResponseCache
from analysis.simulate.state import BudgetWindows, RateWindows, ResponseCache

STATE_ENV = "LLM_SHADOW_STATE"


class BadStateURL(ValueError):
    """The --state value is neither `memory` nor a redis:// URL."""


class MemoryBackend:
    """State in this process only (the default: one proxy)."""

    url = "memory"

    def response_cache(self, name: str, ttl_us: int, max_entries: int) -> ResponseCache:
        return ResponseCache(ttl_us, max_entries)

    def budget_windows(self, name: str, limit_usd: float) -> BudgetWindows:
        return BudgetWindows(limit_usd)

    def rate_windows(self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> RateWindows:
        return RateWindows(requests_per_minute, tokens_per_minute)

    def status(self) -> dict:
        return {"backend": "memory"}

    def problems(self) -> dict[str, int]:
        return {}


class RedisBackend:
    """State in one Redis database, shared by every proxy that uses it."""

    def __init__(self, url: str, prefix: str = "llm-shadow"):
        self.url, self.prefix = url, prefix
        self.link = RedisLink(url)

    def response_cache(self, name: str, ttl_us: int, max_entries: int, max_bytes: int = 0) -> RedisResponseCache:
        return RedisResponseCache(self.link, name, ttl_us, max_entries, max_bytes, prefix=self.prefix)

    def budget_windows(self, name: str, limit_usd: float) -> RedisBudgetWindows:
        return RedisBudgetWindows(self.link, name, limit_usd, prefix=self.prefix)

    def rate_windows(
        self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None
    ) -> RedisRateWindows:
        return RedisRateWindows(self.link, name, requests_per_minute, tokens_per_minute, prefix=self.prefix)

    def status(self) -> dict:
        return self.link.status()

    def problems(self) -> dict[str, int]:
        """What the status file counts as problems (shown by `llm-shadow stats`)."""
        found = {}
        if self.link.fallbacks:
            found["shared_state_fallback"] = self.link.fallbacks
        if self.link.outages:
            found["shared_state_outage"] = self.link.outages
        return found


StateBackend = MemoryBackend | RedisBackend


def state_url(value: str | None) -> str:
    """The --state value, else $LLM_SHADOW_STATE, else memory."""
    return value or os.environ.get(STATE_ENV) or "memory"


def open_backend(value: str | None) -> StateBackend:
    url = state_url(value)
    if url == "memory":
        return MemoryBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            return RedisBackend(url)
        except ValueError as e:
            raise BadStateURL(f"--state {url}: {e}") from None
    raise BadStateURL(f"--state: expected 'memory' or redis://HOST:PORT/DB, got {url!r}")
