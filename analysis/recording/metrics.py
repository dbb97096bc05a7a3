"""Prometheus metrics of a recording proxy (`llm-shadow proxy --metrics-port N`).

A call's tokens, cost and outcome are known only once the worker process has parsed and priced
it, and the proxy's own bookkeeping (a call dropped because the queue is full, a worker that
died) happens in the proxy process. Both count with prometheus_client in multiprocess mode:
each process writes its values to memory-mapped files in one directory the proxy makes
(`PROMETHEUS_MULTIPROC_DIR`, set before prometheus_client is first imported), and the proxy's
/metrics server, a thread of its own, adds them up when Prometheus scrapes. Nothing here runs on
the proxy's event loop, and a counter that fails is a problem counted, never a failed call.
"""

import os
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
DROPPED_KINDS = ("queue_full", "spool_overflow")  # Problems kinds that are calls not recorded


def enable(directory: str | None = None) -> str:
    """Turn multiprocess counting on in this process (and the processes it starts); return the
    directory. Must run before prometheus_client is imported."""
    directory = directory or tempfile.mkdtemp(prefix="llm-shadow-metrics-")
    os.environ[ENV] = directory
    return directory


def serve(port: int, host: str, directory: str) -> None:
    """Serve /metrics on host:port from a thread, summing every process's values."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    start_http_server(port, addr=host, registry=registry)


def worker_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class RecorderMetrics:
    """The recorder's counters; `observe(row)` and `decided(rows)` for every accounted call and
    its policy decisions (in the worker),
    `problem(kind, n)` for every counted problem (in whichever process counted it)."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        by_call = ["provider", "model", "team"]
        self.calls = Counter("llm_shadow_calls", "LLM API calls recorded.", [*by_call, "outcome"])
        self.tokens = Counter("llm_shadow_tokens", "Tokens of the recorded calls.", [*by_call, "direction"])
        self.cost = Counter("llm_shadow_cost_usd", "Cost of the recorded calls, USD.", by_call)
        self.latency = Histogram(
            "llm_shadow_latency_seconds", "Request start to last byte.", ["provider", "model"], buckets=SECONDS_BUCKETS
        )
        self.ttft = Histogram(
            "llm_shadow_ttft_seconds",
            "Time to first token of streamed answers.",
            ["provider", "model"],
            buckets=SECONDS_BUCKETS,
        )
        self.spooled = Gauge(
            "llm_shadow_spooled_rows", "Recorded calls waiting for the store.", multiprocess_mode="livesum"
        )
        self.dropped = Counter("llm_shadow_dropped_rows", "Calls not recorded (queue full, spool overflow).")
        self.restarts = Counter("llm_shadow_worker_restarts", "Worker processes that died and were replaced.")
        self.problems = Counter("llm_shadow_problems", "Problems counted, by kind (as in the status file).", ["kind"])
        self.decisions = Counter(
            "llm_shadow_decisions",
            "Policy decisions in shadow mode (would have) and enforce mode (did), as in the decisions relation.",
            ["mode", "policy", "kind", "action"],
        )

    def observe(self, row: dict) -> None:
        provider, model, team = row["provider"] or "", row["model"] or "", row["team"] or ""
        self.calls.labels(provider, model, team, row["outcome"] or "").inc()
        for direction in ("input", "output"):
            if row[f"{direction}_tokens"]:
                self.tokens.labels(provider, model, team, direction).inc(row[f"{direction}_tokens"])
        if row["cost_usd"]:
            self.cost.labels(provider, model, team).inc(row["cost_usd"])
        if row["latency_ms"] is not None:
            self.latency.labels(provider, model).observe(row["latency_ms"] / 1000)
        if row["stream"] and row["ttft_ms"] is not None:
            self.ttft.labels(provider, model).observe(row["ttft_ms"] / 1000)

    def decided(self, decisions) -> None:
        """Count a call's decision rows (dicts with the `decisions` columns)."""
        for d in decisions:
            self.decisions.labels(*(d.get(k) or "" for k in ("mode", "policy", "kind", "action"))).inc()

    def problem(self, kind: str, n: int) -> None:
        self.problems.labels(kind).inc(n)
        if kind in DROPPED_KINDS:
            self.dropped.inc(n)
        elif kind == "worker_died":
            self.restarts.inc(n)
