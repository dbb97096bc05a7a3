"""`HookIndex` (addons.hook_dispatch) calls exactly the hooks mitmproxy's own dispatch calls, in
the same order, while addons come and go: driven with mitmproxy's test master (taddons)."""

import asyncio

from mitmproxy import exceptions
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from addons.hook_dispatch import HookIndex, index_hooks


class Hooked:
    def __init__(self, name: str, calls: list[str], halt: bool = False):
        self.name, self.calls, self.halt = name, calls, halt

    def request(self, flow):
        self.calls.append(self.name)
        if self.halt:
            raise exceptions.AddonHalt


class Silent:
    """No hook for the event."""

    def __init__(self, name: str):
        self.name = name


class Parent:
    """An addon with children that change (as mitmproxy's script loader has)."""

    def __init__(self):
        self.name = "parent"
        self.addons: list = []


def request(manager) -> None:
    asyncio.run(manager.trigger_event(HttpRequestHook(tflow.tflow())))


def test_hooks_are_called_in_order_as_the_chain_changes():
    calls: list[str] = []
    with taddons.context() as tctx:
        manager = tctx.master.addons
        first, parent = Hooked("first", calls), Parent()
        manager.add(first, Silent("silent"), parent)
        index_hooks(manager)
        assert isinstance(manager, HookIndex)
        request(manager)
        assert calls == ["first"]

        parent.addons.append(Hooked("child", calls))  # a script loaded later: no chain change
        manager.add(Hooked("last", calls))
        calls.clear()
        request(manager)
        assert calls == ["first", "child", "last"]

        manager.remove(first)
        calls.clear()
        request(manager)
        assert calls == ["child", "last"]


def test_addon_halt_stops_the_event():
    calls: list[str] = []
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.add(Hooked("halts", calls, halt=True), Hooked("never", calls))
        index_hooks(manager)
        request(manager)
        assert calls == ["halts"]
