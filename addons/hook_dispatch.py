"""mitmproxy's event dispatch, without visiting the addons that have no hook for the event.

mitmproxy's `AddonManager.trigger_event` awaits one coroutine per addon of its chain (about
forty: its defaults and ours) for every event, each with a generator over the addon's tree and
an error-catching context, and a call raises about eight events (four lifecycle hooks, each
followed by `update`). Most of those addons have no such hook, and that bookkeeping was about a
third of what the proxy process spends on a call (docs/benchmarks.md). `HookIndex` remembers,
per event name and until the chain changes (`add`, `remove`, `clear`), which addons have the
hook, and visits only those. An addon with children (mitmproxy's script loader, whose scripts come and go)
is visited every time. The order, the calls, the error handling (`safecall`) and `AddonHalt`
are mitmproxy's own.
"""

from mitmproxy import addonmanager, exceptions, hooks


class HookIndex(addonmanager.AddonManager):
    """An AddonManager whose `trigger_event` visits only the addons that may handle the event."""

    _hooked: dict[str, list] | None = None  # per event name; None: the chain changed since

    async def trigger_event(self, event: hooks.Hook) -> None:
        for addon in self._addons_for(event.name):
            try:
                with addonmanager.safecall():
                    await self.invoke_addon(addon, event)
            except exceptions.AddonHalt:
                return

    def _addons_for(self, name: str) -> list:
        if self._hooked is None:
            self._hooked = {}
        hooked = self._hooked.get(name)
        if hooked is None:
            hooked = self._hooked[name] = [a for a in self.chain if _may_handle(a, name)]
        return hooked

    # The chain changes only through these (mitmproxy's own `add`, `remove`, `clear`).
    def add(self, *addons) -> None:
        super().add(*addons)
        self._hooked = None

    def remove(self, addon) -> None:
        super().remove(addon)
        self._hooked = None

    def clear(self) -> None:
        super().clear()
        self._hooked = None


def _may_handle(addon: object, name: str) -> bool:
    """Whether `invoke_addon` could do anything for the event `name`: the addon has an attribute
    of that name (a hook, or something mitmproxy reports as not callable), or children."""
    return getattr(addon, name, None) is not None or hasattr(addon, "addons")


def index_hooks(manager: addonmanager.AddonManager) -> None:
    """Make `manager` (a master's `addons`, with its addons already added) a HookIndex."""
    manager.__class__ = HookIndex
