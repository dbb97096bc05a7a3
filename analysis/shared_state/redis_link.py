"""The connection to Redis, and what happens when Redis is down or slow: fail-open, counted.

Every call to Redis goes through `RedisLink.run(operation, fallback)`. A call that fails or takes
longer than the time budget (`timeout_s`, default 50 ms) runs `fallback` instead: the same
operation on the calling process's own state (the simulator's classes). The link then stays down
for `retry_s` (default 1 s), so a dead Redis costs one timeout per second, not one per request;
the next call after that tries Redis again, and state is shared again as soon as it answers
(after the budget charges made meanwhile are handed to it).

`fallbacks` counts the operations served by local state, `outages` the times Redis was lost;
the recorder puts both into its status file, where `llm-shadow stats` shows them.
"""

import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 0.05
DEFAULT_RETRY_S = 1.0


class RedisLink:
    """One Redis connection pool, with its health."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, retry_s: float = DEFAULT_RETRY_S):
        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=0
        )
        self.retry_s = retry_s
        self.down_until = 0.0
        self.fallbacks = 0
        self.outages = 0
        self.last_error: str | None = None
        self.on_recovery: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._down = False
        # Budget charges are numbered per process, so one that timed out but reached Redis all
        # the same is not added twice when the local copy is handed over (RedisBudgetWindows).
        self.process_id = uuid.uuid4().hex
        self.charge_lock = threading.Lock()
        self.charges = 0

    @property
    def display_url(self) -> str:
        """The URL without a password, for logs and status files."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @property
    def up(self) -> bool:
        return not self._down

    def run(self, operation: Callable[[], T], fallback: Callable[[], T]) -> T:
        """`operation()` against Redis, or `fallback()` when Redis is down, failing or slow."""
        if self._down:
            if time.monotonic() < self.down_until:
                self.fallbacks += 1
                return fallback()
            try:
                self._recover()
            except redis.RedisError as e:
                return self._failed(e, fallback)
        try:
            return operation()
        except redis.RedisError as e:
            return self._failed(e, fallback)

    def _failed(self, error: redis.RedisError, fallback: Callable[[], T]) -> T:
        with self._lock:
            if not self._down:
                self.outages += 1
            self._down = True
            self.down_until = time.monotonic() + self.retry_s
            self.last_error = f"{type(error).__name__}: {error}"
            self.fallbacks += 1
        return fallback()

    def _recover(self) -> None:
        """Probe Redis, then hand it what was kept locally meanwhile (before any new call, so
        numbered budget charges reach it in order); raises RedisError while it is still away."""
        self.client.ping()
        for hook in self.on_recovery:
            hook()
        self._down = False

    def status(self) -> dict:
        return {
            "backend": "redis",
            "url": self.display_url,
            "up": self.up,
            "fallbacks": self.fallbacks,
            "outages": self.outages,
            "last_error": self.last_error,
        }
