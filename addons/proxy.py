"""Running mitmdump with the recorder built in: what `llm-shadow proxy` starts.

The recorder is added as a regular addon (not loaded as a script), so a bad option or an
unusable data directory stops the proxy at start with mitmproxy's one-line error instead of
leaving a proxy running that records nothing. mitmproxy's per-connection log lines are hidden
unless asked for (`--verbose`); `Banner` says once where the proxy listens.

`SharedState` holds the policy state (--state: memory or Redis) and `WrappedKeys` swaps wrapped
keys for real ones in shadow and enforce mode; `Mirroring` sends a routing rule's `mirror` share
to its target model in shadow mode, off the client's path.

Every mode decrypts only LLM hosts (`TlsPassthrough`: other TLS passes through with its
real certificate), and local capture mode gets `LocalCaptureWatch`, which stops the proxy
with a clear message when the kernel refuses mitmproxy's eBPF redirector.
"""

import sys
from typing import Any

from mitmproxy import ctx
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import run

from addons.enforcer import Enforcer
from addons.hook_dispatch import index_hooks
from addons.local_capture import LocalCaptureWatch
from addons.mirror import Mirroring
from addons.recorder import Recorder
from addons.shared_state import SharedState
from addons.tls_passthrough import TlsPassthrough
from addons.wrapped_keys import WrappedKeys


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
        self.addons.add(
            Recorder(),
            SharedState(),
            WrappedKeys(),
            Enforcer(),
            Mirroring(),
            Banner(),
            TlsPassthrough(),
            LocalCaptureWatch(),
        )
        index_hooks(self.addons)  # events visit only the addons that handle them


def run_proxy(args: list[str], options: dict[str, Any]) -> str | None:
    """Run the proxy with mitmdump's command line `args` and the typed `options` (set directly,
    after the command line) until interrupted; return why it stopped by itself when it did (a
    failed local capture redirector), else None."""
    master = run(ShadowMaster, cmdline.mitmdump, args, extra=lambda _: options)
    watch = master.addons.get("localcapturewatch")
    return watch.failure if watch is not None else None
