"""Running mitmdump with the recorder built in: what `llm-shadow proxy` starts.

The recorder is added as a regular addon (not loaded as a script), so a bad option or an
unusable data directory stops the proxy at start with mitmproxy's one-line error instead of
leaving a proxy running that records nothing. mitmproxy's per-connection log lines are hidden
unless asked for (`--verbose`); `Banner` says once where the proxy listens.
"""

import sys

from mitmproxy import ctx
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import run

from addons.recorder import Recorder


class Banner:
    def running(self):
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in proxyserver.servers:
            addrs = ", ".join(f"{host}:{port}" for host, port, *_ in server.listen_addrs)
            print(f"llm-shadow: {server.mode.description} listening at {addrs}", file=sys.stderr, flush=True)
        print(f"llm-shadow: recording into {ctx.options.shadow_data}", file=sys.stderr, flush=True)


class ShadowMaster(DumpMaster):
    def __init__(self, options, **kwargs):
        super().__init__(options, **kwargs)
        self.addons.add(Recorder(), Banner())


def run_proxy(args: list[str]) -> None:
    """Run the proxy with mitmdump's command line `args` until interrupted."""
    run(ShadowMaster, cmdline.mitmdump, args)
