"""The llm-shadow recorder: a mitmproxy addon that records every LLM API call it sees.

Load it with `mitmdump -s addons/recorder.py` or through `llm-shadow proxy`.

The pass-through promise: in observe mode the client receives exactly what the upstream sent
(status, headers, body bytes) and the upstream receives exactly what the client sent. Streamed
responses (SSE and the like, see `is_streamed`) are forwarded chunk by chunk: each chunk is
handed on to the client the moment it arrives, and a copy is kept with its arrival time
(`_Tap`), so time-to-first-token is the upstream's, not ours. The event loop does nothing else
per chunk; plain JSON answers are relayed as bare mitmdump relays them. When the call ends, the
recorder copies references (`analysis.recording.capture.Capture`) to a worker process
(`analysis.recording.worker_process`) that decodes, parses, prices and writes it. A failure of ours (a
parse error, an unknown shape, a full disk, an unwritable store) never breaks or slows a call:
it is counted, logged once per kind, and the rows wait in a bounded spool.

Calls that are not LLM API calls (see `analysis.parsers.detect`) pass untouched and unrecorded.
A call enforce mode sends through its fallback relay (addons.fallback) is recorded by the relay,
attempt by attempt; the recorder records it only if it ended before the relay did.
"""

import importlib.util
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

if importlib.util.find_spec("analysis") is None:  # `mitmdump -s addons/recorder.py`, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import ctx, exceptions, http

from addons.hosts import pretty_host
from analysis.parsers.detect import Target, detect
from analysis.pricing.check import Pricing
from analysis.pricing.files import PriceFileError
from analysis.recording import metrics
from analysis.recording.capture import (
    FLOW_ANSWERED_BY,
    FLOW_CAPTURE,
    FLOW_DECISIONS,
    FLOW_ERROR_DECISIONS,
    FLOW_ID,
    FLOW_IDENTITY,
    FLOW_RELAYED,
    Capture,
)
from analysis.recording.settings import DEFAULT_MAX_BODY, DEFAULT_QUEUE_LIMIT, DEFAULT_SPOOL_LIMIT, RecorderSettings
from analysis.recording.sink import Problems, RecordSink
from analysis.recording.worker_process import SinkProcess
from analysis.store import DEFAULT_DATA_DIR, StoreError
from analysis.store.clean import printable
from analysis.store.datadir import Store

log = logging.getLogger("llm_shadow")

# Option `shadow_NAME` is the setting `RecorderSettings.NAME` (see analysis.recording.settings).
RECORDER_OPTIONS = {
    "shadow_data",
    "shadow_content",
    "shadow_flush_interval",
    "shadow_flush_ms",  # compatibility: shadow_flush_interval in milliseconds, as documented before
    "shadow_team_header",
    "shadow_feature_header",
    "shadow_user_header",
    "shadow_spool_limit",
    "shadow_queue_limit",
    "shadow_max_body",
    "shadow_log_calls",
    "shadow_metrics_port",
    "shadow_otlp_endpoint",
    "shadow_otlp_content",
}

IMPORT_KEY = "llm_shadow_import_key"  # flow.metadata entry set by the importer (addons.importer)


def options_from_settings(settings: RecorderSettings) -> dict[str, Any]:
    """The addon options that give `settings`, typed, for `Options.update` (no --set strings)."""
    options: dict[str, Any] = {f"shadow_{f.name}": getattr(settings, f.name) for f in fields(settings)}
    options["shadow_data"] = os.fspath(settings.data)
    options["shadow_flush_interval"] = repr(settings.flush_interval)  # a str option: --set takes it
    return options


def settings_from_options(options: Any) -> RecorderSettings:
    """The recorder's settings from its mitmproxy options; OptionsError naming a bad one."""
    o = options
    try:
        flush_interval = float(o.shadow_flush_interval)
    except ValueError as e:
        raise exceptions.OptionsError(
            f"shadow_flush_interval: {o.shadow_flush_interval!r} is not a number of seconds"
        ) from e
    if o.shadow_flush_ms is not None:
        flush_interval = o.shadow_flush_ms / 1000
    try:
        return RecorderSettings(
            data=Path(o.shadow_data),
            content=o.shadow_content,
            flush_interval=flush_interval,
            team_header=o.shadow_team_header,
            feature_header=o.shadow_feature_header,
            user_header=o.shadow_user_header,
            spool_limit=o.shadow_spool_limit,
            queue_limit=o.shadow_queue_limit,
            max_body=o.shadow_max_body,
            log_calls=o.shadow_log_calls,
            metrics_port=o.shadow_metrics_port,
            otlp_endpoint=o.shadow_otlp_endpoint,
            otlp_content=o.shadow_otlp_content,
        )
    except ValueError as e:
        raise exceptions.OptionsError(f"shadow_{e}") from e


class _Tap:
    """The stream callable: hands every chunk on unchanged and keeps a timed copy."""

    __slots__ = ("started", "chunks", "size", "limit", "truncated", "last_at")

    def __init__(self, started: float, limit: int):
        self.started = started
        self.chunks: list[tuple[float, bytes]] = []
        self.size = 0
        self.limit = limit
        self.truncated = False
        self.last_at = started  # unix time of the last chunk

    def __call__(self, data: bytes) -> bytes:
        if data:
            self.last_at = time.time()
            if self.size < self.limit:
                self.chunks.append((time.time() - self.started, data))
                self.size += len(data)
            else:
                self.truncated = True
        return data


class Recorder:
    """The addon. `worker_process`: account and write in a child process (the proxy's choice,
    keeping that work off the proxy's interpreter lock) or in a thread (imports)."""

    def __init__(self, worker_process: bool = True):
        self.worker_process = worker_process
        self.settings: RecorderSettings | None = None  # set when recording starts
        self.sink: RecordSink | SinkProcess | None = None
        self.recorded = 0  # calls written by sinks already closed
        self.problems = Problems(log)
        self._metrics_dir: str | None = None  # set once /metrics is served (see analysis.recording.metrics)
        self._metrics: metrics.RecorderMetrics | None = None
        self._targets: dict[str, Target] = {}
        self._taps: dict[str, _Tap] = {}

    def load(self, loader):
        loader.add_option(
            "shadow_data",
            str,
            os.environ.get("LLM_SHADOW_DATA", DEFAULT_DATA_DIR),
            "Data directory llm-shadow records into (env LLM_SHADOW_DATA).",
        )
        loader.add_option(
            "shadow_content", bool, True, "Keep request messages and response text in the contents relation."
        )
        loader.add_option(
            "shadow_flush_interval",
            str,
            "1",
            "Seconds between writes of recorded calls (a decimal number); a crash loses at most this much.",
        )
        loader.add_option(
            "shadow_flush_ms",
            int | None,
            None,
            "Compatibility: shadow_flush_interval in milliseconds; when set, it wins.",
        )
        loader.add_option("shadow_team_header", str, "x-shadow-team", "Request header naming the team.")
        loader.add_option("shadow_feature_header", str, "x-shadow-feature", "Request header naming the feature.")
        loader.add_option("shadow_user_header", str, "x-shadow-user", "Request header naming the end user.")
        loader.add_option(
            "shadow_spool_limit",
            int,
            DEFAULT_SPOOL_LIMIT,
            "Recorded calls kept in memory while the store cannot be written.",
        )
        loader.add_option(
            "shadow_queue_limit",
            int,
            DEFAULT_QUEUE_LIMIT,
            "Calls waiting for the recorder's worker before new ones are dropped (counted); 0: no limit.",
        )
        loader.add_option(
            "shadow_log_calls",
            bool,
            False,
            "Print one line per recorded call on stderr (method, host, path without its query, status, outcome).",
        )
        loader.add_option(
            "shadow_max_body",
            int,
            DEFAULT_MAX_BODY,
            "Bytes of a body read for recording, before and after content decoding; the rest passes unread "
            "and the call's row says so.",
        )
        loader.add_option(
            "shadow_metrics_port",
            int,
            0,
            "Serve Prometheus metrics at /metrics on this port of the listen host (0: off).",
        )
        loader.add_option(
            "shadow_otlp_endpoint",
            str,
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            "Send every recorded call as an OpenTelemetry GenAI span and metrics to this OTLP/HTTP collector, "
            "e.g. http://localhost:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT; empty: off).",
        )
        loader.add_option(
            "shadow_otlp_content",
            bool,
            False,
            "Include the prompt and answer text in the OpenTelemetry spans (gen_ai.input.messages, ...).",
        )

    def configure(self, updated):
        # The first configure comes before the command line's options are applied: the store is
        # opened once the proxy runs (`running`), and again when an option changes after that.
        if self.sink is not None and updated & RECORDER_OPTIONS:
            self.start()

    def running(self):
        if self.sink is None:
            try:
                self.start()
            except exceptions.OptionsError as e:
                log.error(str(e))
                ctx.master.shutdown()

    def start(self):
        """Open the data directory and start recording; OptionsError when that cannot be done."""
        settings = settings_from_options(ctx.options)
        try:
            store = Store(settings.data)
            salt = store.salt()
            prices = Pricing.load(store.data_dir)
        except (StoreError, PriceFileError, OSError) as e:
            raise exceptions.OptionsError(f"llm-shadow: {e}") from e
        self._serve_metrics(settings.metrics_port)
        self._close_sink()
        self.settings = settings
        if self.worker_process:
            self.sink = SinkProcess(settings, problems=self.problems, metrics_dir=self._metrics_dir).start()
        else:
            self.sink = RecordSink(
                store, prices, settings, salt=salt, problems=self.problems, metrics=self._metrics
            ).start()
        log.info("llm-shadow: recording into %s (instance %s)", store.data_dir, self.sink.instance)

    def _serve_metrics(self, port: int) -> None:
        """Start the /metrics server once, when asked to (it stays up for the process's life)."""
        if not port or self._metrics_dir is not None:
            return
        directory = metrics.enable()
        host = ctx.options.listen_host or "127.0.0.1"
        try:
            metrics.serve(port, host, directory)
        except OSError as e:
            raise exceptions.OptionsError(f"llm-shadow: cannot serve metrics on {host}:{port}: {e.strerror}") from e
        self._metrics_dir = directory
        self._metrics = metrics.RecorderMetrics()
        self.problems.metrics = self._metrics
        log.info("llm-shadow: Prometheus metrics on http://%s:%d/metrics", host, port)

    def done(self):
        self._close_sink()

    def _close_sink(self):
        if self.sink is not None:
            self.sink.close()
            self.recorded += self.sink.recorded
            if problems := self.sink.status()["problems"]:
                summary = ", ".join(f"{kind}={n}" for kind, n in sorted(problems.items()))
                log.warning("llm-shadow: problems while recording: %s", summary)
            self.sink = None

    # --- hooks

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        # mitmproxy's Headers look names up case-insensitively, as detect expects.
        target = detect(pretty_host(request), request.path, request.headers, request.method)
        if target is not None:
            self._targets[flow.id] = target

    def target_of(self, flow: http.HTTPFlow) -> Target | None:
        """What an LLM call in flight is, as detected when its headers came (None: not one,
        or not seen); enforce mode reads the call as this very target, without detecting again."""
        return self._targets.get(flow.id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if FLOW_RELAYED in flow.metadata:
            return  # the relay keeps the answer's chunks (addons.fallback)
        if response is not None and flow.id in self._targets and is_streamed(flow.request.path, response.headers):
            limit = self.settings.max_body if self.settings is not None else DEFAULT_MAX_BODY
            tap = _Tap(flow.request.timestamp_start, limit)
            self._taps[flow.id] = tap
            response.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        # A flow read from a file may carry both a response and an error (a stream the client
        # left): mitmproxy then calls response and error; the error says how it ended.
        if flow.error:
            self.error(flow)
        else:
            self._finish(flow, "ok")

    def error(self, flow: http.HTTPFlow) -> None:
        request, response = flow.request, flow.response
        tap = self._taps.get(flow.id)
        last_activity = max(
            request.timestamp_end or request.timestamp_start,
            (response.timestamp_start or 0) if response is not None else 0,
            tap.last_at if tap is not None else 0,
        )
        outcome = outcome_for_error(
            flow.error.msg if flow.error else "",
            response_started=response is not None,
            request_complete=request.timestamp_end is not None,
            idle_seconds=ended_at(flow) - last_activity,
            # Only a live call can have timed out just now (an imported one ended long ago).
            idle_timeout=None if IMPORT_KEY in flow.metadata else ctx.options.tcp_timeout,
        )
        self._finish(flow, outcome)

    def _finish(self, flow: http.HTTPFlow, outcome: str) -> None:
        target = self._targets.pop(flow.id, None)
        tap = self._taps.pop(flow.id, None)
        if target is None or self.sink is None or (FLOW_RELAYED in flow.metadata and FLOW_CAPTURE in flow.metadata):
            return  # a call sent through enforce mode's relay was recorded by it
        try:
            capture = self._capture(flow, target, tap, outcome)
        except Exception as e:  # never let our bookkeeping break the proxy
            self.problems.add(f"capture_error:{type(e).__name__}", str(e))
            return
        flow.metadata[FLOW_CAPTURE] = capture  # enforce mode settles the call with it
        self.submit(capture)

    def submit(self, capture: Capture) -> None:
        """Record a call: hand it to the worker (and print its line when asked to). Enforce
        mode's fallback relay records the calls it sends through here too (addons.fallback)."""
        if self.sink is None:
            return
        self.sink.submit(capture)
        if self.settings is not None and self.settings.log_calls:
            print(call_line(capture), file=sys.stderr, flush=True)

    def _capture(self, flow: http.HTTPFlow, target: Target, tap: _Tap | None, outcome: str) -> Capture:
        """Copy references off the flow; all processing happens in the sink's worker."""
        request, response = flow.metadata.get(FLOW_RELAYED) or flow.request, flow.response
        started = request.timestamp_start
        decisions = flow.metadata.get(FLOW_DECISIONS, ())
        if response is None and (late := flow.metadata.get(FLOW_ERROR_DECISIONS)) is not None:
            decisions = (*decisions, *late(None, outcome))  # a watching fallback rule's plan
        if tap is not None and tap.chunks:
            chunks = tap.chunks
        elif response is not None and response.raw_content:
            # Not streamed through us: a buffered JSON answer, or a flow read from a file.
            chunks = [((response.timestamp_start or started) - started, response.raw_content)]
        else:
            chunks = []
        return Capture(
            target=target,
            method=request.method,
            host=pretty_host(request),
            path=request.path,
            request_headers=request.headers.fields,
            request_body=request.raw_content or b"",
            status=response.status_code if response is not None else None,
            response_headers=response.headers.fields if response is not None else (),
            chunks=chunks,
            started=started,
            ended=ended_at(flow),
            outcome=outcome,
            error=flow.error.msg if flow.error else None,
            import_key=flow.metadata.get(IMPORT_KEY),
            identity=flow.metadata.get(FLOW_IDENTITY),
            response_truncated=tap is not None and tap.truncated,
            id=flow.metadata.get(FLOW_ID),
            answered_by=flow.metadata.get(FLOW_ANSWERED_BY),
            decisions=decisions,
        )


def ended_at(flow: http.HTTPFlow) -> float:
    """When a call ended: its response's end, else when it failed (a flow read from a file or
    made by the demo failed long ago, not now), else now."""
    if flow.response is not None and flow.response.timestamp_end:
        return flow.response.timestamp_end
    if flow.error is not None and flow.error.timestamp:
        return flow.error.timestamp
    return time.time()


def call_line(capture: Capture) -> str:
    """The `-v` line for a call: never the query string (Gemini's `?key=`) nor a header."""
    path = capture.path.split("?", 1)[0]
    status = capture.status if capture.status is not None else "-"
    milliseconds = (capture.ended - capture.started) * 1000
    return printable(
        f"llm-shadow: {capture.method} {capture.host}{path} -> {status} {capture.outcome} {milliseconds:.0f} ms"
    )


def is_streamed(path: str, headers) -> bool:
    """Whether a response arrives over time (SSE, a streamed JSON array, or chunked with no
    length): those are forwarded chunk by chunk. A plain JSON answer is complete before it is
    useful to the client, so mitmproxy's default buffering (what bare mitmdump does) serves it.
    """
    return (
        "text/event-stream" in headers.get("content-type", "")
        or ":streamGenerateContent" in path
        or "content-length" not in headers
    )


def outcome_for_error(
    message: str,
    response_started: bool,
    request_complete: bool = True,
    idle_seconds: float = 0.0,
    idle_timeout: float | None = None,
) -> str:
    """How a call that ended in an error ended (see the `outcome` column).

    mitmproxy reports its own inactivity timeout (`tcp_timeout`, `llm-shadow proxy --timeout`)
    as the client disconnecting: a call that had been idle that long is a timeout. A request
    whose body never arrived whole was abandoned by the client, whatever the message."""
    m = message.lower()
    client_gone = "client disconnected" in m or "client closed" in m
    if client_gone and idle_timeout and idle_seconds >= idle_timeout - 0.5:
        return "timeout"
    if client_gone or "cancel" in m or not request_complete:
        return "client_disconnected"
    if "timeout" in m or "timed out" in m:
        return "timeout"
    return "upstream_cut" if response_started else "connect_error"


def __getattr__(name: str) -> list:
    """`addons`, what `mitmdump -s addons/recorder.py` loads: the recorder with shared state,
    wrapped keys and shadow and enforce mode, made when mitmproxy asks for it, so that importing
    the recorder (the importer's helper processes do) does not import all of enforce mode."""
    if name != "addons":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from addons.enforcer import Enforcer
    from addons.shared_state import SharedState
    from addons.wrapped_keys import WrappedKeys

    loaded = globals()["addons"] = [Recorder(), SharedState(), WrappedKeys(), Enforcer()]
    return loaded
