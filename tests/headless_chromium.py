"""Headless Chromium driven over the DevTools protocol, for opening the report like a reader would.

`HeadlessChromium` starts Debian's `chromium` with remote debugging on a free port and talks to
it over a websocket. `open_page(url)` loads a page in a fresh tab and records what the browser
itself reports while it does: console errors, uncaught exceptions, log entries (failed loads,
security errors) and every URL the page requested. The test then asks the page questions with
`evaluate` and takes screenshots with `screenshot`.
"""

import base64
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.sync.client import ClientConnection, connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


class DevToolsError(Exception):
    """Chromium did not start, or answered a DevTools command with an error."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requested_urls: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.console_errors + self.exceptions + self.log_errors

    def record(self, event: dict) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.log_errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            self.requested_urls.append(params["request"]["url"])


class Page:
    def __init__(self, browser: "HeadlessChromium", session: str):
        self.browser, self.session, self.log = browser, session, PageLog()

    def call(self, method: str, **params) -> dict:
        return self.browser.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"evaluating {expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30.0):
        """Evaluate `expression` until it is truthy (returned) or the timeout passes (last value)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            self.browser.pump(0.1)

    def screenshot(self, clip: dict | None = None, scale: float = 1.0) -> bytes:
        """A PNG of the whole page (or of `clip`: x, y, width, height in CSS pixels)."""
        if clip is None:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        result = self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip | {"scale": scale}
        )
        return base64.b64decode(result["data"])


class HeadlessChromium:
    def __init__(self, executable: str, width: int = 1280, height: int = 900):
        self.width, self.height = width, height
        # Chromium's helper processes may still be writing the profile as it is removed.
        self._profile = tempfile.TemporaryDirectory(prefix="llm-shadow-chromium-", ignore_cleanup_errors=True)
        self._stderr_path = Path(self._profile.name) / "chromium.log"
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self._pages: dict[str, Page] = {}
        with open(self._stderr_path, "wb") as stderr:
            self._process = subprocess.Popen(
                [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}/profile", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            # Entered as a context manager, as websockets 16 wants; close() exits it.
            self._ws = connect(self._browser_endpoint(), max_size=None, open_timeout=10).__enter__()
        except (DevToolsError, OSError, TimeoutError):
            self.close()
            raise

    def _browser_endpoint(self, timeout: float = 30.0) -> str:
        active_port = Path(self._profile.name) / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DevToolsError(
                    f"chromium exited ({self._process.returncode}): "
                    f"{self._stderr_path.read_text(errors='replace')[-2000:]}"
                )
            lines = active_port.read_text().split("\n") if active_port.exists() else []
            if len(lines) >= 2 and lines[1].strip():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            time.sleep(0.05)
        raise DevToolsError("chromium did not open its DevTools port within 30 s")

    def _dispatch(self, message: dict) -> None:
        page = self._pages.get(message.get("sessionId"))
        if page is not None and "method" in message:
            page.log.record(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        request_id = self._next_id
        message = {"id": request_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"no answer to {method} within {timeout} s")
            answer = json.loads(self._ws.recv(timeout=remaining))
            if answer.get("id") == request_id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self._dispatch(answer)

    def pump(self, seconds: float) -> None:
        """Read events for `seconds` (so the page log stays current while waiting)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._dispatch(json.loads(self._ws.recv(timeout=remaining)))
            except TimeoutError:
                return

    def open_page(self, url: str, timeout: float = 30.0) -> Page:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = self._pages[session] = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.call("Page.navigate", url=url)
        if not page.wait_until("document.readyState === 'complete'", timeout):
            raise DevToolsError(f"{url} did not finish loading within {timeout} s")
        return page

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._profile.cleanup()

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
