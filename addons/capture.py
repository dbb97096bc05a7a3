"""How `llm-shadow proxy` captures: the mitmproxy mode and the addons that go with it.

Three ways to get traffic into the recorder, one function to pick between them:
forward (the default: clients set HTTPS_PROXY or a base_url), transparent (the network
redirects clients' connections with iptables/nftables and the clients know nothing, see
docs/transparent.md), and local (mitmproxy's eBPF redirector captures processes by name on
this machine). All three decrypt only LLM hosts (`TlsPassthrough`); local mode also gets the
watch that turns a redirector failure into a clear error.
"""

from addons.local_capture import LocalCaptureWatch
from addons.tls_passthrough import TlsPassthrough


class CaptureModeError(ValueError):
    """The capture options contradict each other or cannot work on this machine."""


def capture_mode(transparent: bool = False, local: str | None = None) -> str:
    """The mitmproxy mode spec: "regular", "transparent", or "local[:NAMES]"."""
    if transparent and local is not None:
        raise CaptureModeError("--transparent and --local are two different ways to capture; pick one")
    if local is not None:
        return f"local:{local}" if local else "local"
    return "transparent" if transparent else "regular"


def capture_addons(mode: str) -> list:
    """The addons that go with `mode`, besides the recorder."""
    addons: list = [TlsPassthrough()]
    if mode == "local" or mode.startswith("local:"):
        addons.append(LocalCaptureWatch())
    return addons
