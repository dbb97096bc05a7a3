"""OpenTelemetry export: recorded calls arrive at an OTLP/HTTP receiver the test runs, as spans
and GenAI metrics, decoded with opentelemetry-proto and checked name by name."""

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from typer.testing import CliRunner

from addons.importer import record_flows
from analysis.recording.settings import RecorderSettings
from analysis.store.datadir import Store
from cli import app
from sample_traffic.company import DEFAULT_SEED, DayFlows


class Receiver:
    """An OTLP/HTTP receiver on loopback: keeps every POSTed body by path."""

    def __init__(self):
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.bodies[self.path].append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list:
        spans = []
        for body in self.bodies["/v1/traces"]:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    spans += scope.spans
        return spans

    def metrics(self) -> dict[str, list]:
        found = defaultdict(list)
        for body in self.bodies["/v1/metrics"]:
            request = ExportMetricsServiceRequest.FromString(body)
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        found[metric.name].append(metric)
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def attributes(span) -> dict:
    values = {}
    for kv in span.attributes:
        v = kv.value
        values[kv.key] = getattr(v, v.WhichOneof("value"))
    return values


def test_export_otlp_sends_every_recorded_call_as_a_genai_span(receiver, tmp_path):
    data = tmp_path / "data"
    Store(data)
    record_flows(
        DayFlows(DEFAULT_SEED, 0.3), list(range(30)), RecorderSettings(data=data, queue_limit=0)
    )  # a few hundred calls, through the recorder
    rows = {r["id"]: r for r in Store(data).requests_frame().to_dicts()}
    assert len(rows) > 100

    result = CliRunner().invoke(app, ["export", "otlp", "--endpoint", receiver.url, "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert f"Sent {len(rows):,} calls" in result.stdout

    spans = receiver.spans()
    assert len(spans) == len(rows)
    seen_operations, seen_providers = set(), set()
    for span in spans:
        a = attributes(span)
        row = rows[a["llm_shadow.call_id"]]
        assert span.name == f"{a['gen_ai.operation.name']} {row['model_requested'] or row['model']}"
        assert span.kind == span.SPAN_KIND_CLIENT
        assert span.start_time_unix_nano == pytest.approx(row["ts"].timestamp() * 1e9, abs=1e3)
        assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 == pytest.approx(row["latency_ms"], abs=1e-3)
        assert a["gen_ai.request.model"] == row["model_requested"]
        assert a["gen_ai.response.model"] == row["model"]
        assert a.get("gen_ai.usage.input_tokens") == row["input_tokens"]
        assert a.get("gen_ai.usage.output_tokens") == row["output_tokens"]
        assert a["gen_ai.system"] == a["gen_ai.provider.name"]
        assert a["server.address"] == row["host"]
        assert a["llm_shadow.outcome"] == row["outcome"]
        assert a.get("llm_shadow.cost_usd") == row["cost_usd"]
        assert a.get("llm_shadow.team") == row["team"]
        assert a.get("llm_shadow.feature") == row["feature"]
        assert ("error.type" in a) == (row["outcome"] != "ok")
        assert not any("prompt" in k or "completion" in k for k in a)  # no text unless asked for
        seen_operations.add(a["gen_ai.operation.name"])
        seen_providers.add(a["gen_ai.provider.name"])
    assert seen_operations >= {"chat", "embeddings", "generate_content"}
    assert seen_providers == {"openai", "anthropic", "gcp.gemini"}

    metrics = receiver.metrics()
    durations = sum(p.count for m in metrics["gen_ai.client.operation.duration"] for p in m.histogram.data_points)
    assert durations == sum(r["latency_ms"] is not None for r in rows.values())
    token_points = [p for m in metrics["gen_ai.client.token.usage"] for p in m.histogram.data_points]
    by_type = defaultdict(float)
    for point in token_points:
        token_type = next(kv.value.string_value for kv in point.attributes if kv.key == "gen_ai.token.type")
        by_type[token_type] += point.sum
    assert by_type["input"] == sum(r["input_tokens"] or 0 for r in rows.values())
    assert by_type["output"] == sum(r["output_tokens"] or 0 for r in rows.values())


def test_an_unreachable_collector_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    Store(data)
    record_flows(DayFlows(DEFAULT_SEED, 0.05), [0, 1, 2], RecorderSettings(data=data, queue_limit=0))
    result = CliRunner().invoke(app, ["export", "otlp", "--endpoint", "http://127.0.0.1:9", "--data", str(data)])
    assert result.exit_code == 1
    assert "could not send" in result.output
