"""Keeping the proxy's start-up objects out of the garbage collector's full passes.

Once the proxy runs it holds a few hundred thousand objects that live as long as it does:
mitmproxy's own, the price tables, the policy, the parsers' modules. CPython's full collections
(generation 2) walk every one of them, and they come more often the more of each call's objects
outlive a younger collection: in a loaded proxy that walk took a tenth of the CPU a call costs
(docs/benchmarks.md). `gc.freeze()` moves what is alive at start into a permanent generation
that collections skip. Those objects are still freed by reference counting; what calls and
reloads make later is collected as before.
"""

import gc


class FreezeStartup:
    """Added after the addons that load at start (the recorder, the enforcer's policy)."""

    def running(self) -> None:
        gc.collect()  # the start-up's own garbage is collected first, not kept forever
        gc.freeze()
