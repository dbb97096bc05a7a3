"""OpenTelemetry export of recorded calls: one span per call, named and attributed by the
OpenTelemetry GenAI semantic conventions, and the GenAI client metrics.

A span is `{gen_ai.operation.name} {gen_ai.request.model}` (e.g. `chat gpt-4o-mini`), of kind
CLIENT, from the request's start to its last byte, with the conventions' attributes
(`gen_ai.operation.name`, `gen_ai.provider.name` and its older name `gen_ai.system`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`,
`gen_ai.usage.output_tokens`, `server.address`, `error.type` for a call that failed) and
llm-shadow's own under `llm_shadow.`: the call's id, cost, cost source, team, feature, user,
key id, outcome. (`gen_ai.response.finish_reasons` is not sent: the recorder does not keep the
finish reason yet.) Prompt and answer text are never sent.
The metrics are the conventions' histograms `gen_ai.client.token.usage` (by
`gen_ai.token.type` input/output) and `gen_ai.client.operation.duration` (seconds).

Built from a `requests` row, so what `llm-shadow export otlp` sends (recorded calls, a backfill)
is what a live export from the recorder's worker process would send; that live export is not
wired yet. Sending is the OpenTelemetry SDK's batch processor, on its own thread; spans the
collector did not take are counted (`spans.failed`) and reported.
"""

from datetime import datetime

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

OPERATIONS = {  # our endpoint -> gen_ai.operation.name
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "generate_content": "generate_content",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "embed_content": "embeddings",
}
PROVIDERS = {  # our provider -> gen_ai.provider.name (well-known values of the conventions)
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
}
EXTRAS = ("cost_usd", "cost_source", "team", "feature", "user", "key_id", "outcome")


def operation(row: dict) -> str:
    return OPERATIONS.get(row["endpoint"] or "", row["endpoint"] or "unknown")


def span_name(row: dict) -> str:
    model = row["model_requested"] or row["model"]
    return f"{operation(row)} {model}" if model else operation(row)


def span_attributes(row: dict) -> dict:
    """The span's attributes for one `requests` row (None values left out)."""
    provider = PROVIDERS.get(row["provider"] or "", row["provider"])
    attributes = {
        "gen_ai.operation.name": operation(row),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": row["model_requested"],
        "gen_ai.response.model": row["model"],
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "server.address": row["host"],
        "http.response.status_code": row["status"],
        "llm_shadow.call_id": row["id"],
    }
    if row["outcome"] not in (None, "ok"):
        attributes["error.type"] = row["outcome"]
    for name in EXTRAS:
        attributes[f"llm_shadow.{name}"] = row[name]
    return {k: v for k, v in attributes.items() if v is not None}


def _nanoseconds(ts: datetime) -> int:
    return int(ts.timestamp() * 1e9)


class OtlpExporter:
    """Sends spans and GenAI metrics for rows to an OTLP/HTTP endpoint (`http://host:4318`, the
    collector's base URL: `/v1/traces` and `/v1/metrics` are added, as the SDK does for
    OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self, endpoint: str, service_name: str = "llm-shadow"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = endpoint.rstrip("/")
        resource = Resource.create({"service.name": service_name})
        self._tracers = TracerProvider(resource=resource)
        self.spans = _CountingExporter(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        self._tracers.add_span_processor(BatchSpanProcessor(self.spans))
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        self._meters = MeterProvider(resource=resource, metric_readers=[reader])
        self.tracer = self._tracers.get_tracer("llm-shadow")
        meter = self._meters.get_meter("llm-shadow")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used."
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration."
        )

    def export(self, row: dict) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start = _nanoseconds(row["ts"])
        end = start + int((row["latency_ms"] or 0) * 1e6)
        attributes = span_attributes(row)
        span = self.tracer.start_span(span_name(row), kind=SpanKind.CLIENT, start_time=start, attributes=attributes)
        if "error.type" in attributes:
            span.set_status(Status(StatusCode.ERROR, row.get("error") or attributes["error.type"]))
        span.end(end_time=end)
        common = {k: attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "server.address")}
        for key in ("gen_ai.request.model", "gen_ai.response.model", "error.type"):
            if key in attributes:
                common[key] = attributes[key]
        for token_type, column in (("input", "input_tokens"), ("output", "output_tokens")):
            if row[column] is not None:
                self.token_usage.record(row[column], {**common, "gen_ai.token.type": token_type})
        if row["latency_ms"] is not None:
            self.duration.record(row["latency_ms"] / 1000, common)

    def close(self) -> None:
        """Send what is waiting, then stop."""
        self._tracers.shutdown()
        self._meters.shutdown()


class _CountingExporter(SpanExporter):
    """Wraps the OTLP span exporter to count what was sent and what failed (the batch processor
    only logs a failure; `llm-shadow export otlp` reports it)."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = 0
        self.failed = 0

    def export(self, spans):
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK's exporter logs and returns FAILURE; count anything else too
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.sent += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
