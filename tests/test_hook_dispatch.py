"""`HookIndex` (addons.hook_dispatch) calls exactly the hooks mitmproxy's own dispatch calls, in
the same order, while addons come and go, and handles their errors as mitmproxy does: driven with
mitmproxy's test master (taddons)."""

import asyncio
import logging
import types

import pytest
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


class Async:
    """A coroutine hook."""

    def __init__(self, calls: list[str]):
        self.name, self.calls = "async", calls

    async def request(self, flow):
        await asyncio.sleep(0)
        self.calls.append(f"async:{flow.request.path}")


class Raises:
    def __init__(self, calls: list[str], error: Exception):
        self.name, self.calls, self.e = f"raises-{type(error).__name__}", calls, error

    def request(self, flow):
        self.calls.append(self.name)
        raise self.e


class NotCallable:
    name = "not-callable"
    request = 5  # mitmproxy logs that it is not callable

    def __repr__(self) -> str:  # the same in both runs' log lines
        return "NotCallable()"


class ModuleNamedLikeTheHook:
    name = "module"
    request = types.ModuleType("request")  # `from x import request`: mitmproxy skips it


async def run_events(indexed: bool, caplog) -> tuple[list[str], list[str]]:
    """The calls and the logged errors of two request events through addons with every kind of
    hook, with mitmproxy's own dispatch or HookIndex (in a running loop: mitmproxy logs through
    the master's)."""
    calls: list[str] = []
    caplog.clear()
    with taddons.context() as tctx:
        manager = tctx.master.addons
        parent = Parent()
        parent.addons.append(Hooked("child", calls))
        manager.add(
            Hooked("first", calls),
            Async(calls),
            Raises(calls, ValueError("boom")),
            NotCallable(),
            ModuleNamedLikeTheHook(),
            parent,
            Silent("silent"),
            Hooked("last", calls),
        )
        if indexed:
            index_hooks(manager)
        for path in ("/a", "/b"):
            flow = tflow.tflow()
            flow.request.path = path
            await manager.trigger_event(HttpRequestHook(flow))
        await asyncio.sleep(0)  # the log lines, handed to the loop
    return calls, [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_same_calls_and_errors_as_mitmproxys_dispatch(caplog):
    """Every kind of hook an addon may have, through mitmproxy's own AddonManager and through
    HookIndex: the same calls in the same order, the same errors logged, the event going on."""

    async def both():  # one loop: mitmproxy's log handler of the first run stays installed
        return await run_events(False, caplog), await run_events(True, caplog)

    plain, hooked = asyncio.run(both())
    assert hooked == plain
    calls, errors = hooked
    assert calls.count("last") == 2 and "async:/b" in calls  # the event went on after each error
    assert any("boom" in e for e in errors) and any("not callable" in e for e in errors)


async def raise_options_error(indexed: bool) -> None:
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.add(Raises([], exceptions.OptionsError("bad option")))
        if indexed:
            index_hooks(manager)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))


@pytest.mark.parametrize("indexed", [False, True])
def test_options_error_goes_up_as_in_mitmproxy(indexed):
    with pytest.raises(exceptions.OptionsError):
        asyncio.run(raise_options_error(indexed))
