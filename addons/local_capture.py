"""Turn a failing local-capture redirector into one clear error, and stop the proxy.

mitmproxy's local capture mode (`--mode local:NAME`) on Linux runs a helper,
mitmproxy-linux-redirector, through sudo; the helper loads an eBPF program into the kernel.
When the kernel refuses (an old kernel, cgroup v1, a container without the privileges, WSL),
the helper prints a Rust error with a backtrace into mitmproxy's log as warnings, exits, and
the proxy keeps running without capturing anything. `analysis.capture_setup.doctor.local_capture_unavailable_reason`
catches the usual causes before starting; this addon catches the rest while running: it
collects the helper's log lines, and when the helper exits it keeps the "Error:" and
"Caused by:" lines, logs them as one error that says what to do instead, sets `failure`, and
shuts the proxy down, so `llm-shadow proxy --local` exits non-zero with that message.
"""

import logging

from mitmproxy import ctx

REDIRECTOR_LOGGER = "mitmproxy.packet_sources.linux"
DOCS = "docs/transparent.md"


def summarize_redirector_output(lines: list[str]) -> str:
    """The error and its causes from the redirector's output, without backtrace or BTF dump."""
    kept: list[str] = []
    in_causes = False
    for line in lines:
        text = line.strip()
        if text.startswith("Error:"):
            kept.append(text.removeprefix("Error:").strip())
            in_causes = False
        elif text == "Caused by:":
            in_causes = True
        elif text.startswith("Stack backtrace"):
            in_causes = False
        elif in_causes and text:
            kept.append(text.split(":", 1)[1].strip() if text[:1].isdigit() and ":" in text else text)
    return ": ".join(kept) if kept else "the redirector exited"


class _RedirectorLog(logging.Handler):
    def __init__(self, watch: "LocalCaptureWatch") -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        self.watch.on_redirector_line(record.getMessage(), record.levelno)


class LocalCaptureWatch:
    """mitmproxy addon: stop with a clear message when the local redirector dies."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self.lines: list[str] = []
        self._handler = _RedirectorLog(self)
        logging.getLogger(REDIRECTOR_LOGGER).addHandler(self._handler)

    def done(self) -> None:
        logging.getLogger(REDIRECTOR_LOGGER).removeHandler(self._handler)

    def on_redirector_line(self, message: str, level: int) -> None:
        self.lines.extend(message.splitlines() or [""])
        del self.lines[:-400]  # the BTF dump alone is a few hundred lines
        exited = "redirector] exited" in message and "during shutdown" not in message
        if level >= logging.ERROR and exited and self.failure is None:
            self.failure = (
                f"local capture failed: {summarize_redirector_output(self.lines)}. "
                f"This kernel or container cannot run mitmproxy's eBPF redirector; use "
                f"--transparent with an iptables/nftables redirect instead (see {DOCS})."
            )
            logging.getLogger(__name__).error(self.failure)
            ctx.master.shutdown()
