"""OpenTelemetry export of recorded calls: one span per call, named and attributed by the
OpenTelemetry GenAI semantic conventions, and the GenAI client metrics.

A span is `{gen_ai.operation.name} {gen_ai.request.model}` (e.g. `chat gpt-4o-mini`), of kind
CLIENT, from the request's start to its last byte, with the conventions' attributes
(`gen_ai.operation.name`, `gen_ai.provider.name` and its older name `gen_ai.system`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`,
`gen_ai.usage.output_tokens`, `gen_ai.response.finish_reasons`, `server.address`, `error.type`
for a call that failed) and llm-shadow's own under `llm_shadow.`: the call's id, cost, cost
source, team, feature, user, key id, outcome. Prompt and answer text are sent only when asked
for (`content`): as the conventions' opt-in `gen_ai.system_instructions`,
`gen_ai.input.messages` and `gen_ai.output.messages` (JSON text), rebuilt from the `contents`
row (the conversation is kept as "role: text" lines, so a message is split where a line starts
with a known role).
The metrics are the conventions' histograms `gen_ai.client.token.usage` (by
`gen_ai.token.type` input/output) and `gen_ai.client.operation.duration` (seconds).

Built from a `requests` row, so what `llm-shadow export otlp` sends (recorded calls, a backfill)
is what the live export sends: the recorder's worker (`analysis.recording.sink`, in the worker
process, never on the proxy's event loop) hands every row it accounts to an `OtlpExporter` when
an endpoint is set. Sending is the OpenTelemetry SDK's batch processor and periodic metric
reader, on their own threads; spans and metric batches the collector did not take are counted
and reported (`on_failure`), as is a span the SDK's queue dropped.
"""

import json
import os
import re
from collections.abc import Callable
from datetime import datetime

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
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


ROLES = ("system", "developer", "user", "assistant", "model", "tool", "function")
_ROLE_LINE = re.compile(rf"^({'|'.join(ROLES)}): ", re.MULTILINE)


def span_attributes(row: dict, content: dict | None = None) -> dict:
    """The span's attributes for one `requests` row (None values left out); with its
    `contents` row as `content`, the prompt and answer text too."""
    provider = PROVIDERS.get(row["provider"] or "", row["provider"])
    reasons = tuple(row["finish_reasons"].split(",")) if row.get("finish_reasons") else None
    attributes = {
        "gen_ai.operation.name": operation(row),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": row["model_requested"],
        "gen_ai.response.model": row["model"],
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.response.finish_reasons": reasons,
        "server.address": row["host"],
        "http.response.status_code": row["status"],
        "llm_shadow.call_id": row["id"],
    }
    if row["outcome"] not in (None, "ok"):
        attributes["error.type"] = row["outcome"]
    for name in EXTRAS:
        attributes[f"llm_shadow.{name}"] = row[name]
    if content is not None:
        attributes.update(content_attributes(content, reasons))
    return {k: v for k, v in attributes.items() if v is not None}


def content_attributes(content: dict, reasons: tuple[str, ...] | None) -> dict:
    """The conventions' opt-in content attributes from a `contents` row, as JSON text."""
    attributes = {}
    if content.get("system_prompt"):
        attributes["gen_ai.system_instructions"] = _json([{"type": "text", "content": content["system_prompt"]}])
    if content.get("prompt_text"):
        attributes["gen_ai.input.messages"] = _json(
            [
                {"role": role, "parts": [{"type": "text", "content": text}]}
                for role, text in messages(content["prompt_text"])
            ]
        )
    if content.get("response_text"):
        output = {"role": "assistant", "parts": [{"type": "text", "content": content["response_text"]}]}
        attributes["gen_ai.output.messages"] = _json([{**output, "finish_reason": reasons[0] if reasons else ""}])
    return attributes


def messages(prompt_text: str) -> list[tuple[str, str]]:
    """(role, text) pairs from the "role: text" lines of `prompt_text`; text before the first
    role line (not made by the parsers) is the user's."""
    starts = list(_ROLE_LINE.finditer(prompt_text))
    pairs = []
    if not starts or starts[0].start() > 0:
        pairs.append(("user", prompt_text[: starts[0].start() - 1 if starts else len(prompt_text)]))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() - 1 if i + 1 < len(starts) else len(prompt_text)  # the newline before the next
        pairs.append((match.group(1), prompt_text[match.end() : max(match.end(), end)]))
    return pairs


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _nanoseconds(ts: datetime) -> int:
    return int(ts.timestamp() * 1e9)


class OtlpExporter:
    """Sends spans and GenAI metrics for rows to an OTLP/HTTP endpoint (`http://host:4318`, the
    collector's base URL: `/v1/traces` and `/v1/metrics` are added, as the SDK does for
    OTEL_EXPORTER_OTLP_ENDPOINT). `on_failure(what, n)` is told of every span or metric batch
    that could not be sent (`what` is "spans" or "metrics"), from the SDK's sending threads.
    `timeout`: seconds one send may take, retries included (None: the SDK's default, 10)."""

    def __init__(
        self,
        endpoint: str,
        service_name: str | None = None,
        on_failure: Callable[[str, int], None] | None = None,
        timeout: float | None = None,
    ):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = endpoint.rstrip("/")
        service_name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "llm-shadow"
        resource = Resource.create({"service.name": service_name})
        self._tracers = TracerProvider(resource=resource)
        self.spans = _CountingExporter(OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout), on_failure)
        self._tracers.add_span_processor(BatchSpanProcessor(self.spans))
        self.metric_batches = _CountingMetricExporter(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout), on_failure
        )
        self._meters = MeterProvider(
            resource=resource, metric_readers=[PeriodicExportingMetricReader(self.metric_batches)]
        )
        self.tracer = self._tracers.get_tracer("llm-shadow")
        meter = self._meters.get_meter("llm-shadow")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used."
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration."
        )
        self.exported = 0  # spans handed to the SDK

    def export(self, row: dict, content: dict | None = None) -> None:
        """One call: its span (with its text when `content`, its `contents` row, is given) and
        its metric points."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start = _nanoseconds(row["ts"])
        end = start + int((row["latency_ms"] or 0) * 1e6)
        attributes = span_attributes(row, content)
        span = self.tracer.start_span(span_name(row), kind=SpanKind.CLIENT, start_time=start, attributes=attributes)
        if "error.type" in attributes:
            span.set_status(Status(StatusCode.ERROR, row.get("error") or attributes["error.type"]))
        span.end(end_time=end)
        self.exported += 1
        common = {k: attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "server.address")}
        for key in ("gen_ai.request.model", "gen_ai.response.model", "error.type"):
            if key in attributes:
                common[key] = attributes[key]
        for token_type, column in (("input", "input_tokens"), ("output", "output_tokens")):
            if row[column] is not None:
                self.token_usage.record(row[column], {**common, "gen_ai.token.type": token_type})
        if row["latency_ms"] is not None:
            self.duration.record(row["latency_ms"] / 1000, common)

    def close(self) -> int:
        """Send what is waiting, then stop; return how many spans were neither sent nor counted
        as failed (dropped by the SDK's full queue)."""
        self._tracers.shutdown()
        self._meters.shutdown()
        return max(0, self.exported - self.spans.sent - self.spans.failed)


class _CountingExporter(SpanExporter):
    """Wraps the OTLP span exporter to count what was sent and what failed (the batch processor
    only logs a failure)."""

    def __init__(self, inner: SpanExporter, on_failure: Callable[[str, int], None] | None = None):
        self.inner = inner
        self.on_failure = on_failure
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
            if self.on_failure is not None:
                self.on_failure("spans", len(spans))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingMetricExporter(MetricExporter):
    """Wraps the OTLP metric exporter to count the metric batches that could not be sent."""

    def __init__(self, inner: MetricExporter, on_failure: Callable[[str, int], None] | None = None):
        super().__init__(inner._preferred_temporality, inner._preferred_aggregation)
        self.inner = inner
        self.on_failure = on_failure
        self.failed = 0

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result != MetricExportResult.SUCCESS:
            self.failed += 1
            if self.on_failure is not None:
                self.on_failure("metrics", 1)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
