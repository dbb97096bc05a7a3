"""The recorder's worker in a child process, so that parsing, pricing and writing never hold
the proxy process's interpreter lock; and the proxy process's ownership of the status file.

`SinkProcess` has the interface of `RecordSink` that the recorder uses (`submit`, `start`,
`close`, `instance`). `submit` only puts the capture on a multiprocessing queue (a feeder
thread pickles it: references to bytes, cheap); the child runs an ordinary `RecordSink`, which
sends its counts (recorded, spooled, problems) back over a pipe after every flush.

The proxy process owns `<data>/status/<instance>.json` (see `analysis.recording.status`): a
thread of its own (never the event loop) reads the worker's counts, adds what only the proxy
sees (`queue_full`, `worker_died`, ...) and the counts of the workers that came before, and
rewrites the file every flush interval. That thread also watches the worker: when it dies, the
proxy counts `worker_died` and starts a new one at once, under the same instance name, whose
counts add to the dead one's (what the dead worker had not flushed is lost, as in any crash).

The child ignores Ctrl-C (the proxy stops it with a sentinel after its own shutdown, so nothing
queued is lost) and exits by itself, after a last flush, when the proxy process disappears.
"""

import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from analysis.recording import metrics
from analysis.recording.capture import Capture
from analysis.recording.settings import RecorderSettings
from analysis.recording.sink import Problems, RecordSink
from analysis.recording.status import StatusFile, add_counts
from analysis.store.datadir import new_instance_name

log = logging.getLogger("llm_shadow")

_STOP = "stop"
_PARENT_CHECK_SECONDS = 1.0
_RESTART_SECONDS = 1.0  # a worker that dies at once is started again at most this often
_NO_COUNTS: dict[str, Any] = {"recorded": 0, "spooled": 0, "problems": {}}


class SinkProcess:
    def __init__(self, settings: RecorderSettings, *, problems: Problems | None = None, metrics_dir: str | None = None):
        self.settings = settings
        self.metrics_dir = metrics_dir  # Prometheus counts go there (see analysis.recording.metrics)
        self.problems = problems or Problems()  # counted in this process: queue_full, worker_died, ...
        self.instance = new_instance_name()
        self.workers_started = 0
        self._started_at = 0.0  # time.monotonic() of the running worker's start
        self._context = multiprocessing.get_context("spawn")
        self._queue: Any = None  # a multiprocessing Queue once started
        self._process: Any = None  # the child process once started
        self._reports: Any = None  # the read end of the pipe the child sends its counts on
        self._worker: dict[str, Any] = dict(_NO_COUNTS)  # the running worker's last counts
        self._earlier: dict[str, Any] = {"recorded": 0, "problems": {}}  # the workers that ended, added up
        self._lock = threading.Lock()  # the worker, its queue and the counts
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._status_file = StatusFile(settings.data / "status" / f"{self.instance}.json", self.problems.count_quietly)

    @property
    def recorded(self) -> int:
        with self._lock:
            return self._earlier["recorded"] + self._worker["recorded"]

    def start(self) -> "SinkProcess":
        with self._lock:
            self._queue = self._new_queue()
            self._start_worker()
        self._watcher = threading.Thread(target=self._watch, name="llm-shadow-status", daemon=True)
        self._watcher.start()
        return self

    def _new_queue(self) -> Any:
        return self._context.Queue(maxsize=self.settings.queue_limit)  # 0: no limit

    def _start_worker(self) -> None:
        """A new worker reading the current queue, and its pipe (call with the lock held)."""
        reports, child_end = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_child_main,
            args=(self._queue, child_end, self.settings, self.instance, os.getpid(), self.metrics_dir),
            name="llm-shadow-sink",
            daemon=True,
        )
        self._process.start()
        child_end.close()  # the child holds it: its end closes when the child ends
        self._reports = reports
        self._worker = dict(_NO_COUNTS)
        self.workers_started += 1
        self._started_at = time.monotonic()

    def submit(self, capture: Capture) -> None:
        with self._lock:
            calls = self._queue
        try:
            calls.put_nowait(capture)
        except queue.Full:
            self.problems.add("queue_full", f"more than {self.settings.queue_limit} calls waiting; call dropped")
        except (ValueError, OSError, AssertionError):  # the queue of a worker that just died
            self.problems.add("worker_restarting", "the worker died and is being started again; call dropped")

    # --- the status thread

    def _watch(self) -> None:
        interval = self.settings.flush_interval
        next_write = time.monotonic()
        while not self._closing.is_set():
            try:
                with self._lock:
                    reports, sentinel = self._reports, self._process.sentinel
                ready = multiprocessing.connection.wait(
                    [reports, sentinel], timeout=max(0.0, next_write - time.monotonic())
                )
                if reports in ready:
                    self._receive(reports)
                if sentinel in ready and not self._closing.is_set():
                    self._replace_dead_worker(sentinel)
                if ready or time.monotonic() >= next_write:  # new counts are written at once
                    self.write_status()
                    next_write = time.monotonic() + interval
            except Exception as e:  # a bug here must not end the thread: count it, go on
                self.problems.add(f"status_thread_error:{type(e).__name__}", str(e))
                time.sleep(interval)

    def _receive(self, reports) -> None:
        """Take the worker's counts waiting on its pipe (the last one wins: they are totals)."""
        try:
            while reports.poll():
                counts = reports.recv()
                with self._lock:
                    if reports is self._reports:
                        self._worker = counts
        except (EOFError, OSError):
            pass  # the worker ended: its sentinel says so

    def _replace_dead_worker(self, sentinel) -> None:
        with self._lock:
            if self._process is None or self._process.sentinel != sentinel or self._closing.is_set():
                return
            pid = self._process.pid
            self._end_worker()
            # Calls made from now on wait in a new queue for the new worker, also while a worker
            # that died at once is given time before the next one starts.
            self._queue = self._new_queue()
            wait = self._started_at + _RESTART_SECONDS - time.monotonic()
        self.problems.add("worker_died", f"worker {pid} ended; started a new one; calls it had not written are lost")
        if self.metrics_dir:
            metrics.worker_gone(pid)
        if wait > 0:  # it died at start (a broken data directory): do not spin
            time.sleep(wait)
        with self._lock:
            if not self._closing.is_set():
                self._start_worker()

    def _end_worker(self) -> None:
        """Fold the ended worker's last counts into the earlier ones (call with the lock held)."""
        try:
            while self._reports.poll():
                self._worker = self._reports.recv()
        except (EOFError, OSError):
            pass
        self._earlier["recorded"] += self._worker["recorded"]
        add_counts(self._earlier["problems"], self._worker["problems"])
        self._worker = dict(_NO_COUNTS)
        self._reports.close()
        self._queue.cancel_join_thread()  # nobody reads this queue any more
        self._queue.close()

    def status(self, stopped: bool = False) -> dict:
        with self._lock:
            problems = dict(self._earlier["problems"])
            add_counts(problems, self._worker["problems"])
            recorded = self._earlier["recorded"] + self._worker["recorded"]
            spooled = self._worker["spooled"]
            worker_pid = self._process.pid if self._process is not None else None
        add_counts(problems, self.problems.snapshot())
        return {
            "instance": self.instance,
            "pid": os.getpid(),
            "worker_pid": worker_pid,
            "workers_started": self.workers_started,
            "updated": time.time(),
            "interval": self.settings.flush_interval,
            "stopped": stopped,
            "recorded": recorded,
            "spooled": spooled,
            "problems": problems,
        }

    def write_status(self, stopped: bool = False) -> None:
        self._status_file.write(self.status(stopped))

    # --- stopping

    def close(self, timeout: float = 30.0) -> None:
        if self._process is None:
            return
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout)
        with self._lock:
            process = self._process
        if not _ended(process):
            waiting = self._waiting()
            print(f"llm-shadow: stopping: flushing {waiting:,} rows…", file=sys.stderr, flush=True)
            self._queue.put(_STOP)
            process.join(timeout)
            if not _ended(process):
                self.problems.add("worker_stop_timeout", f"worker still busy after {timeout} s; stopped")
                process.terminate()
                process.join(5)
        with self._lock:
            self._end_worker()
            self._process = None
        self.write_status(stopped=True)

    def _waiting(self) -> int:
        """Calls not yet written: queued for the worker, and in its spool."""
        try:
            queued = self._queue.qsize()
        except NotImplementedError:  # platforms without sem_getvalue
            queued = 0
        with self._lock:
            return queued + self._worker["spooled"]


def _ended(process) -> bool:
    # The process sentinel becomes readable when the child ends, whoever reaps it (is_alive
    # relies on waitpid, and another part of the proxy process may have reaped the child).
    return bool(multiprocessing.connection.wait([process.sentinel], timeout=0))


def _child_main(
    calls, reports, settings: RecorderSettings, instance: str, parent_pid: int, metrics_dir: str | None = None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from analysis.pricing.check import Pricing
    from analysis.store.datadir import Store

    recorder_metrics = None
    if metrics_dir:  # before prometheus_client is imported (see analysis.recording.metrics)
        metrics.enable(metrics_dir)
        recorder_metrics = metrics.RecorderMetrics()
    store = Store(settings.data)
    sink = RecordSink(
        store,
        Pricing.load(store.data_dir),
        settings,
        instance=instance,
        metrics=recorder_metrics,
        report_status=reports.send,
    ).start()
    try:
        while True:
            try:
                item = calls.get(timeout=_PARENT_CHECK_SECONDS)
            except queue.Empty:
                if os.getppid() != parent_pid:  # the proxy is gone
                    return
                continue
            if item == _STOP:
                return
            sink.submit(item)
    finally:
        sink.close()
        reports.close()
        # Everything is written and closed: skip the interpreter's teardown (a second or more
        # with polars and DuckDB loaded), which only made the proxy slow to stop.
        sys.stderr.flush()
        os._exit(0)
