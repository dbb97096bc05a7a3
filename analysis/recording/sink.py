"""The recorder's worker: takes finished exchanges, accounts them, writes them in batches.

`RecordSink.submit()` is what the proxy's event loop calls: it only puts the capture on a
queue. One worker thread turns it into an Exchange (`analysis.recording.capture`), parses and
prices (`analysis.recording.accounting`), collects the rows, and every `flush_interval` seconds
(see `analysis.recording.settings`) writes them as one segment
(`analysis.store.datadir.SegmentWriter`), so a crash loses at most that interval. When a write
fails (disk full, directory gone, permissions), the rows stay in a bounded spool and are
written when the store recovers; only rows beyond `spool_limit` are dropped, and those are
counted.

With `otlp_endpoint` set, the worker also hands every accounted call to an OpenTelemetry
exporter (`analysis.recording.otel`), whose own threads send it; a collector that is down or
slow costs no call, only counted problems (`otlp_export_failed`, `otlp_dropped`).

Nothing here raises into the caller. Every problem is counted by kind and logged once per kind
(`Problems`). The counts go to the status file of the instance (`<data>/status/<instance>.json`,
see `analysis.recording.status`) every flush interval: written by the sink itself, or, when the
sink runs in a worker process, handed to `report_status`, and the proxy process writes the file.
"""

import logging
import os
import queue
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb

from analysis.pricing.check import Pricing
from analysis.recording.accounting import account
from analysis.recording.capture import Capture, to_exchange
from analysis.recording.metrics import RecorderMetrics
from analysis.recording.settings import RecorderSettings
from analysis.recording.status import StatusFile
from analysis.store.clean import clean_row
from analysis.store.datadir import SegmentWriter, Store, unwritable_reason
from analysis.store.schema import CONTENTS, DECISIONS, REQUESTS

if TYPE_CHECKING:
    from analysis.recording.otel import OtlpExporter

log = logging.getLogger("llm_shadow")


class Problems:
    """Counts problems by kind; logs the first of each kind, and a summary on request."""

    def __init__(self, logger: logging.Logger = log):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._log = logger
        self.metrics: RecorderMetrics | None = None  # also counted there, for Prometheus (analysis.recording.metrics)

    def add(self, kind: str, detail: str = "", n: int = 1, logged: bool = True) -> None:
        """Count `n` problems of `kind`; log the first of the kind unless `logged` is False (the
        caller said it already)."""
        with self._lock:
            first = kind not in self.counts
            self.counts[kind] += n
        if self.metrics is not None:
            try:
                self.metrics.problem(kind, n)
            except Exception:  # a metric is a convenience; the problem is counted above
                pass
        if first and logged:
            self._log.warning(
                "llm-shadow: %s%s (logged once; counted in the status file)", kind, f": {detail}" if detail else ""
            )

    def summary(self) -> str:
        with self._lock:
            return ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def count_quietly(self, kind: str, detail: str = "") -> None:
        """`add` for a caller that has said it already (`StatusFile` prints its own line)."""
        self.add(kind, detail, logged=False)


_STOP = object()
_OS_ERROR = re.compile(r"([^:]+) \(os error \d+\)")  # what polars makes of an OSError
OTLP_TIMEOUT_SECONDS = 5.0  # one send to the collector, retries included; then it counts as failed


class RecordSink:
    def __init__(
        self,
        store: Store,
        prices: Pricing,
        settings: RecorderSettings,
        *,
        salt: str = "",
        instance: str | None = None,
        problems: Problems | None = None,
        metrics: RecorderMetrics | None = None,
        report_status: Callable[[dict], None] | None = None,
    ):
        self.store = store
        self.prices = prices
        self.settings = settings
        self.salt = salt or store.salt()
        self.problems = problems or Problems()
        self.metrics = metrics
        if metrics is not None and self.problems.metrics is None:
            self.problems.metrics = metrics
        self.writer = SegmentWriter(store, instance)
        self.recorded = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._requests: deque[dict] = deque()  # rows as accounting.account returns them
        self._contents: deque[dict] = deque()
        self._decisions: deque[dict] = deque()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._report_status = report_status
        self._status_file = StatusFile(store.data_dir / "status" / f"{self.instance}.json", self.problems.count_quietly)
        self._usage_keys: set[str] | None = None
        self._otlp: OtlpExporter | None = None

    @property
    def instance(self) -> str:
        return self.writer.instance

    @property
    def spooled(self) -> int:
        return len(self._requests)

    # --- called from the proxy's event loop: cheap, never raises

    def submit(self, capture: Capture) -> None:
        limit = self.settings.queue_limit
        with self._pending_lock:
            dropped = bool(limit) and self._pending >= limit
            if not dropped:
                self._pending += 1
        if dropped:
            self.problems.add("queue_full", f"more than {limit} calls waiting; call dropped")
            return
        self._queue.put(capture)

    # --- lifecycle

    def start(self) -> "RecordSink":
        if self.settings.otlp_endpoint:
            self._start_otlp(self.settings.otlp_endpoint)
        self._thread = threading.Thread(target=self._run, name="llm-shadow-sink", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Process what is queued, flush, and stop the worker."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        if self._otlp is not None:
            dropped = self._otlp.close()
            if dropped:
                self.problems.add("otlp_dropped", "the OpenTelemetry exporter's queue was full; spans dropped", dropped)
            self._otlp = None
            self._write_status(stopped=True)

    def _start_otlp(self, endpoint: str) -> None:
        # The SDK logs every failed send; the sink counts them and logs the first of each kind.
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        try:
            from analysis.recording.otel import OtlpExporter  # only when asked for: the SDK takes time to import

            self._otlp = OtlpExporter(endpoint, on_failure=self._otlp_failed, timeout=OTLP_TIMEOUT_SECONDS)
        except Exception as e:  # a bad endpoint must not stop recording
            self.problems.add(f"otlp_error:{type(e).__name__}", str(e))

    def _otlp_failed(self, what: str, n: int) -> None:
        self.problems.add("otlp_export_failed", f"{what} not taken by {self.settings.otlp_endpoint}", n)

    # --- the worker

    def _run(self) -> None:
        interval = self.settings.flush_interval
        next_flush = time.monotonic() + interval
        next_maintain = time.monotonic() + 10 * interval
        while True:
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush()
                self._write_status(stopped=True)
                return
            if item is not None:
                self._account(item)
            now = time.monotonic()
            if now >= next_flush:
                self._flush()
                self._write_status()
                next_flush = now + interval
                if now >= next_maintain:
                    self._maintain()
                    next_maintain = now + 10 * interval

    def _account(self, capture: Capture) -> None:
        try:
            exchange, context = to_exchange(capture, self.salt, self.settings, self.instance)
            row, content, failure, problems = account(
                exchange,
                context,
                self.prices,
                self.settings.content or self.settings.otlp_content,
                self._usage_keys_seen(),
                self.settings.max_body,
            )
        except Exception as e:  # a bug of ours must not stop the worker; the call is counted
            self.problems.add(f"account_error:{type(e).__name__}", str(e))
            return
        finally:
            with self._pending_lock:
                self._pending -= 1
        if failure is not None:
            self.problems.add(f"parse_error:{capture.target.wire_format}", str(failure))
        for kind, detail in problems:
            self.problems.add(kind, detail)
        self._requests.append(row)
        if content is not None and self.settings.content:
            self._contents.append(content)
        # Decision rows carry text from the policy and the request (a rule name, a reason): the
        # same cleaning as the call's own rows, so one of them cannot fail a segment. A row dated
        # None is about the call itself, decided when its request started: the call's own `ts`.
        for decided in capture.decisions:
            decision = clean_row(dict(decided), DECISIONS)
            if decision["ts"] is None:
                decision["ts"] = row["ts"]
            self._decisions.append(decision)
        if self.metrics is not None:
            self._observe(row, capture.decisions)
        if self._otlp is not None:
            try:
                self._otlp.export(row, content if self.settings.otlp_content else None)
            except Exception as e:  # an export is a copy: count the problem, keep the call
                self.problems.add(f"otlp_error:{type(e).__name__}", str(e))

    def _observe(self, row: dict, decisions=()) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics.observe(row)
            self.metrics.decided(decisions)
            self.metrics.spooled.set(len(self._requests))
        except Exception as e:  # a metric is a convenience: count the problem, keep the call
            self.problems.add(f"metrics_error:{type(e).__name__}", str(e))

    def _usage_keys_seen(self) -> set[str]:
        """Usage keys already recorded with tokens, read from the store once (see account)."""
        if self._usage_keys is None:
            self._usage_keys = set()
            try:
                self._usage_keys.update(self.store.recorded_usage_keys())
            except (duckdb.Error, OSError) as e:
                self.problems.add("usage_keys_unreadable", f"{e}; repeated batch usage may be counted twice")
        return self._usage_keys

    def _flush(self) -> None:
        if not self._requests and not self._contents and not self._decisions:
            return
        requests, contents, decisions = list(self._requests), list(self._contents), list(self._decisions)
        try:
            self.writer.write(requests, contents, decisions)
        except OSError as e:
            self.problems.add("store_write_failed", f"{e.strerror or e}; keeping rows in the spool")
            self._trim_spool()
            return
        except Exception as e:  # a row polars or Parquet cannot take: set it aside, write the rest
            if m := _OS_ERROR.search(str(e)):  # polars's way of saying the disk is full (or gone)
                self.problems.add("store_write_failed", f"{m[1].strip()}; keeping rows in the spool")
                self._trim_spool()
                return
            if self._quarantine_unwritable():
                self._flush()
                return
            self.problems.add(f"store_write_failed:{type(e).__name__}", str(e))
            self._trim_spool()
            return
        self.recorded += len(requests)
        self._requests.clear()
        self._contents.clear()
        self._decisions.clear()
        if self.metrics is not None:
            self.metrics.spooled.set(0)

    def _quarantine_unwritable(self) -> int:
        """Move the rows that cannot be written even alone to `<data>/quarantine/`, with the
        reason; return how many calls were moved (0: the batch failed for another reason)."""
        bad_ids: dict[str, str] = {}
        for relation, rows, columns in (
            ("requests", self._requests, REQUESTS),
            ("contents", self._contents, CONTENTS),
            ("decisions", self._decisions, DECISIONS),
        ):
            for row in rows:
                if (reason := unwritable_reason(row, columns)) is not None:
                    bad_ids.setdefault(row["id"], reason)
                    try:
                        self.store.quarantine(self.instance, relation, row, reason)
                    except OSError as e:
                        self.problems.add("quarantine_failed", f"{e.strerror or e}; the row is dropped")
        if not bad_ids:
            return 0
        self.problems.add(
            "row_quarantined", f"a row could not be written ({next(iter(bad_ids.values()))})", len(bad_ids)
        )
        self._requests = deque(r for r in self._requests if r["id"] not in bad_ids)
        self._contents = deque(r for r in self._contents if r["id"] not in bad_ids)
        self._decisions = deque(r for r in self._decisions if r["id"] not in bad_ids)
        return len(bad_ids)

    def _trim_spool(self) -> None:
        limit = self.settings.spool_limit
        overflow = len(self._requests) - limit
        if overflow > 0:
            self.problems.add("spool_overflow", f"spool holds {limit} rows; oldest dropped", overflow)
            for _ in range(overflow):
                dropped = self._requests.popleft()
                if self._contents and self._contents[0]["id"] == dropped["id"]:
                    self._contents.popleft()
        while len(self._contents) > limit:
            self._contents.popleft()
        while len(self._decisions) > self.settings.spool_limit:
            self._decisions.popleft()

    def _maintain(self) -> None:
        try:
            self.writer.maintain()
        except Exception as e:
            self.problems.add(f"store_maintain_failed:{type(e).__name__}", str(e))

    def status(self) -> dict:
        """What this sink counted so far (the worker's part of the status file)."""
        return {"recorded": self.recorded, "spooled": self.spooled, "problems": self.problems.snapshot()}

    def _write_status(self, stopped: bool = False) -> None:
        """Report the counts (every flush interval, changed or not: a file that stops being
        rewritten tells that the recorder is gone)."""
        status = self.status()
        if self._report_status is not None:
            try:
                self._report_status(status)
            except Exception as e:  # the proxy process is gone, or stopping: the flush above stands
                self.problems.add(f"status_report_failed:{type(e).__name__}", str(e))
            return
        self._status_file.write(
            {
                "instance": self.instance,
                "pid": os.getpid(),
                "updated": time.time(),
                "interval": self.settings.flush_interval,
                "stopped": stopped,
                **status,
            }
        )
