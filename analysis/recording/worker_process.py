"""The recorder's worker in a child process, so that parsing, pricing and writing never hold
the proxy process's interpreter lock.

`SinkProcess` has the interface of `RecordSink` that the recorder uses (`submit`, `start`,
`close`, `instance`). `submit` only puts the capture on a multiprocessing queue (a feeder
thread pickles it: references to bytes, cheap); the child runs an ordinary `RecordSink` and
writes the same status file. The child ignores Ctrl-C (the proxy stops it with a sentinel after
its own shutdown, so nothing queued is lost) and exits by itself, after a last flush, when the
proxy process disappears. When the child dies, the proxy counts it, starts a new one at the next
call, and goes on: what the dead child had not flushed is lost, as in any crash.
"""

import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
from typing import Any

from analysis.recording import metrics
from analysis.recording.capture import Capture
from analysis.recording.settings import RecorderSettings
from analysis.recording.sink import Problems, RecordSink
from analysis.store.datadir import new_instance_name

log = logging.getLogger("llm_shadow")

_STOP = "stop"
_PARENT_CHECK_SECONDS = 1.0


class SinkProcess:
    def __init__(self, settings: RecorderSettings, *, problems: Problems | None = None, metrics_dir: str | None = None):
        self.settings = settings
        self.metrics_dir = metrics_dir  # Prometheus counts go there (see analysis.recording.metrics)
        self.problems = problems or Problems()
        self.instance = new_instance_name()
        self.recorded = 0  # counted by the child; see the status file
        self._context = multiprocessing.get_context("spawn")
        self._queue: Any = None  # a multiprocessing Queue once started
        self._process: Any = None  # the child process once started

    def start(self) -> "SinkProcess":
        self._queue = self._context.Queue(maxsize=self.settings.queue_limit)  # 0: no limit
        self._process = self._context.Process(
            target=_child_main,
            args=(self._queue, self.settings, self.instance, os.getpid(), self.metrics_dir),
            name="llm-shadow-sink",
            daemon=True,
        )
        self._process.start()
        return self

    def _worker_ended(self) -> bool:
        # The process sentinel becomes readable when the child ends, whoever reaps it (is_alive
        # relies on waitpid, and another part of the proxy process may have reaped the child).
        return bool(multiprocessing.connection.wait([self._process.sentinel], timeout=0))

    def submit(self, capture: Capture) -> None:
        if self._worker_ended():
            self.problems.add("worker_died", "starting a new one; calls it had not written are lost")
            if self.metrics_dir:
                metrics.worker_gone(self._process.pid)
            self._queue.cancel_join_thread()  # nobody reads the old queue any more
            self._queue.close()
            self.start()
        try:
            self._queue.put_nowait(capture)
        except queue.Full:
            self.problems.add("queue_full", f"more than {self.settings.queue_limit} calls waiting; call dropped")

    def close(self, timeout: float = 30.0) -> None:
        if self._process is None:
            return
        if not self._worker_ended():
            self._queue.put(_STOP)
            self._process.join(timeout)
            if not self._worker_ended():
                self.problems.add("worker_stop_timeout", f"worker still busy after {timeout} s; stopped")
                self._process.terminate()
                self._process.join(5)
        self._queue.close()
        self._process = None


def _child_main(
    calls, settings: RecorderSettings, instance: str, parent_pid: int, metrics_dir: str | None = None
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
        store, Pricing.load(store.data_dir), settings, instance=instance, metrics=recorder_metrics
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
        if sink.problems.counts:
            log.warning("llm-shadow: problems while recording: %s", sink.problems.summary())
