"""mitmproxy's event dispatch, without visiting the addons that have no hook for the event.

mitmproxy's `AddonManager.trigger_event` awaits one coroutine per addon of its chain (about
forty: its defaults and ours) for every event, each with a generator over the addon's tree, an
error-catching context and the event's arguments read again, and a call raises about eight
events (four lifecycle hooks, each followed by `update`). Most of those addons have no such hook:
that bookkeeping was about a third of what the proxy process spends on a call, and what was left
of it after visiting only the addons with the hook, an eighth (docs/benchmarks.md). `HookIndex`
remembers, per event name and until the chain changes (`add`, `remove`, `clear`), which addons
have the hook, visits only those, and calls a plain addon's hook directly with the event's
arguments read once. An addon with children (mitmproxy's script loader, whose scripts come and
go) goes through mitmproxy's `invoke_addon` every time. The order, the calls, the handling of
errors (logged by mitmproxy's `safecall`) and `AddonHalt` are mitmproxy's own:
tests/test_hook_dispatch.py runs the same events through both.
"""

import inspect
import types

from mitmproxy import addonmanager, exceptions, hooks


class HookIndex(addonmanager.AddonManager):
    """An AddonManager whose `trigger_event` visits only the addons that may handle the event."""

    # Per event name, the addons that may handle it, each with whether its hook is called
    # directly (see trigger_event); None: the chain changed since.
    _hooked: dict[str, list[tuple[object, bool]]] | None = None

    async def trigger_event(self, event: hooks.Hook) -> None:
        """mitmproxy's `trigger_event`, with an addon without children whose hook is a callable
        called here directly: its arguments read once per event, not once per addon, and no
        generator over the addon's tree nor context manager per addon (mitmproxy's dispatch was
        an eighth of what the proxy spends on a call, docs/benchmarks.md). An error is handled as
        mitmproxy's `safecall` handles it: logged, and the next addon called."""
        name = event.name
        args = event.args()
        for addon, direct in self._addons_for(name):
            try:
                if direct:
                    result = getattr(addon, name)(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
                else:
                    await self.invoke_addon(addon, event)
            except exceptions.AddonHalt:
                return
            except Exception as e:
                with addonmanager.safecall():  # mitmproxy's own log line (an OptionsError goes on up)
                    raise e

    def _addons_for(self, name: str) -> list[tuple[object, bool]]:
        if self._hooked is None:
            self._hooked = {}
        hooked = self._hooked.get(name)
        if hooked is None:
            hooked = self._hooked[name] = [(a, _is_direct(a, name)) for a in self.chain if _may_handle(a, name)]
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


def _is_direct(addon: object, name: str) -> bool:
    """Whether the hook can be called without mitmproxy's `invoke_addon`: a callable (not a module
    named like the hook, nor something mitmproxy reports as not callable) of an addon without
    children (whose hooks `invoke_addon` finds anew every time)."""
    func = getattr(addon, name, None)
    return callable(func) and not isinstance(func, types.ModuleType) and not hasattr(addon, "addons")


def index_hooks(manager: addonmanager.AddonManager) -> None:
    """Make `manager` (a master's `addons`, with its addons already added) a HookIndex."""
    manager.__class__ = HookIndex
