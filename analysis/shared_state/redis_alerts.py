"""A budget's alert markers and per-window spend breakdown in Redis (analysis.simulate.state's
`BudgetAlerts`, shared by every proxy).

"Fires once" must hold however many proxies charge the same budget: `claim` is one
`SET marker 1 NX EX ttl`, so exactly one process gets True per (scope value, window, share),
even when several cross the share at the same moment. The spend by model and feature an alert
reports is a hash per window, added to with HINCRBYFLOAT. Both expire with the budget's own
spend (`ttl_s`).

When Redis is down or slow, the local `BudgetAlerts` answers instead (`RedisLink.run`): the
alert still fires, but another proxy cut off from Redis at the same time may fire it too.

Layout under `<prefix>`:
    <prefix>:alert:<name>:<key>:<share>    string, set once when the alert fired
    <prefix>:alertspend:<name>:<key>       hash  "model<US>gpt-4o" / "feature<US>chat" -> USD
"""

from analysis.shared_state.redis_link import RedisLink
from analysis.simulate.facts import KEY_SEPARATOR
from analysis.simulate.state import BudgetAlerts, top_spenders


class RedisBudgetAlerts:
    """`BudgetAlerts` in Redis."""

    def __init__(self, link: RedisLink, name: str, ttl_s: int = 40 * 86_400, prefix: str = "llm-shadow"):
        self.link, self.ttl_s = link, ttl_s
        self.markers = f"{prefix}:alert:{name}:"
        self.spends = f"{prefix}:alertspend:{name}:"
        self.fallback = BudgetAlerts()

    def claim(self, key: str, share: float) -> bool:
        def shared() -> bool:
            return bool(self.link.client.set(f"{self.markers}{key}:{share!r}", 1, nx=True, ex=self.ttl_s))

        return self.link.run(shared, lambda: self.fallback.claim(key, share))

    def add(self, key: str, model: str | None, feature: str | None, usd: float) -> None:
        def shared() -> None:
            pipe = self.link.client.pipeline(transaction=True)
            pipe.hincrbyfloat(self.spends + key, f"model{KEY_SEPARATOR}{model or ''}", usd)
            pipe.hincrbyfloat(self.spends + key, f"feature{KEY_SEPARATOR}{feature or ''}", usd)
            pipe.expire(self.spends + key, self.ttl_s)
            pipe.execute()

        self.link.run(shared, lambda: self.fallback.add(key, model, feature, usd))

    def top(self, key: str, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        def shared() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
            raw = self.link.client.hgetall(self.spends + key)
            spend = {}
            for field, value in raw.items():
                kind, _, name = field.decode().partition(KEY_SEPARATOR)
                spend[(kind, name)] = float(value)
            return top_spenders(spend, n)

        return self.link.run(shared, lambda: self.fallback.top(key, n))
