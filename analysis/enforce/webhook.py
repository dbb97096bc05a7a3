"""Sending alerts to webhooks from a background thread: never on a client's path.

The proxy's event loop only queues an alert (`WebhookSender.submit`, a non-blocking put); one
daemon thread POSTs them in order with a short timeout. Fail-open and counted: a webhook that
refuses, times out or cannot be reached costs the alert (`failed`), a full queue drops it
(`dropped`), and the counts go to the status file, which `llm-shadow stats` reads. No retry:
a late duplicate warning is worse than a missing one that the log and `stats` show.
"""

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections import Counter

log = logging.getLogger("llm_shadow")

SEND_TIMEOUT_S = 5.0
MAX_PENDING = 1000


class WebhookSender:
    def __init__(self, timeout_s: float = SEND_TIMEOUT_S, max_pending: int = MAX_PENDING):
        self.timeout_s = timeout_s
        self.counts: Counter[str] = Counter()  # sent, failed, dropped
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="llm-shadow-alerts", daemon=True)
        self._thread.start()

    def submit(self, url: str, payload: dict) -> None:
        """Queue `payload` for a POST to `url`; never blocks."""
        try:
            self._queue.put_nowait((url, json.dumps(payload).encode()))
        except queue.Full:
            self.counts["dropped"] += 1

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, body = item
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"content-type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.counts["sent"] += 1
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.counts["failed"] += 1
                if self.counts["failed"] == 1:
                    log.warning("llm-shadow: a budget alert could not be sent: %s", e)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (waiting at most `timeout_s`), then stop."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
