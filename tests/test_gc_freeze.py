"""The proxy keeps what it loaded at start out of the garbage collector's full passes
(addons.gc_freeze): objects alive when it starts running are frozen, and objects made later
(each call's) are collected as before."""

import gc
import weakref

from addons.gc_freeze import FreezeStartup


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_objects_alive_at_start_are_frozen_and_later_ones_still_collected():
    at_start = _Node()
    before = gc.get_freeze_count()  # the interpreter freezes a few of its own at start
    try:
        FreezeStartup().running()
        assert gc.get_freeze_count() > before
        frozen = weakref.ref(at_start)
        del at_start
        later = _Node()
        made_later = weakref.ref(later)
        del later
        gc.collect()
        assert frozen() is not None  # frozen: a full collection no longer walks it
        assert made_later() is None  # a call's garbage is collected as before
    finally:
        gc.unfreeze()
    gc.collect()
    assert frozen() is None
