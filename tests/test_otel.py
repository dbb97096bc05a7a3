"""OpenTelemetry export: recorded calls arrive at an OTLP/HTTP receiver the test runs, as spans
and GenAI metrics, decoded with opentelemetry-proto and checked name by name."""

import json
import socket
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from typer.testing import CliRunner

from addons.importer import record_flows
from analysis.recording.settings import RecorderSettings
from analysis.recording.status import read_statuses
from analysis.store.datadir import Store
from cli import app
from sample_traffic.company import DEFAULT_SEED, DayFlows
from tests.conftest import wait_for
from tests.test_import import make_calls
from tests.test_proxy_openai import API_KEY, MESSAGES, records


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


def spans_by_call(receiver: Receiver, n: int, timeout: float = 30) -> dict[str, dict]:
    """Wait until n spans arrived; {call id: attributes}."""
    arrived = wait_for(lambda: receiver.spans() if len(receiver.spans()) >= n else None, timeout)
    assert arrived is not None, f"fewer than {n} spans arrived"
    return {attributes(s)["llm_shadow.call_id"]: {**attributes(s), "_span": s} for s in arrived}


def test_the_proxy_exports_every_call_as_it_records_it(receiver, provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0", "--otlp-endpoint", receiver.url)
    make_calls(proxy.url)
    rows = {r["id"]: r for r in records(data_dir, 5)}
    spans = spans_by_call(receiver, len(rows))  # before the proxy stops: sent while it runs
    assert spans.keys() == rows.keys()
    for call_id, a in spans.items():
        row = rows[call_id]
        assert a["_span"].name == f"{a['gen_ai.operation.name']} {row['model_requested']}"
        assert a["gen_ai.provider.name"] == row["provider"] == "openai_compatible"  # the fake provider's host
        assert a["gen_ai.request.model"] == row["model_requested"]
        assert a["gen_ai.response.model"] == row["model"]
        assert a.get("gen_ai.usage.input_tokens") == row["input_tokens"]
        assert a.get("gen_ai.usage.output_tokens") == row["output_tokens"]
        assert a["server.address"] == row["host"] == "127.0.0.1"
        assert a.get("llm_shadow.cost_usd") == row["cost_usd"]
        assert a.get("llm_shadow.cost_source") == row["cost_source"]
        assert a.get("llm_shadow.team") == row["team"]
        assert a.get("llm_shadow.key_id") == row["key_id"] is not None
        assert a["llm_shadow.outcome"] == row["outcome"]
        reasons = a.get("gen_ai.response.finish_reasons")  # an array value
        assert ([v.string_value for v in reasons.values] if reasons else None) == (
            row["finish_reasons"].split(",") if row["finish_reasons"] else None
        )
        assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_")) for k in a)
    by_kind = {(r["endpoint"], r["outcome"]): r for r in rows.values()}
    assert by_kind[("chat", "ok")]["finish_reasons"] == "stop"
    assert by_kind[("embeddings", "ok")]["finish_reasons"] is None
    assert spans[by_kind[("chat", "rate_limited")]["id"]]["error.type"] == "rate_limited"

    proxy.stop()  # the last metric points are sent when the worker stops
    metrics = receiver.metrics()
    token_points = [p for m in metrics["gen_ai.client.token.usage"] for p in m.histogram.data_points]
    by_type = defaultdict(float)
    for point in token_points:
        token_type = next(kv.value.string_value for kv in point.attributes if kv.key == "gen_ai.token.type")
        by_type[token_type] += point.sum
    assert by_type["input"] == sum(r["input_tokens"] or 0 for r in rows.values())
    assert by_type["output"] == sum(r["output_tokens"] or 0 for r in rows.values())
    durations = sum(p.count for m in metrics["gen_ai.client.operation.duration"] for p in m.histogram.data_points)
    assert durations == len(rows)
    assert read_statuses(data_dir) and not any(s.problems for s in read_statuses(data_dir))


def test_prompt_and_answer_text_only_when_asked_for(receiver, provider, start_proxy, data_dir):
    proxy = start_proxy(
        "--upstream", f"{provider.url}@0", "--otlp-endpoint", receiver.url, "--otlp-content", "--no-content"
    )
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    system = {"role": "system", "content": "Answer in one word."}
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[system, *MESSAGES])
    (span,) = spans_by_call(receiver, 1).values()
    assert json.loads(span["gen_ai.system_instructions"]) == [{"type": "text", "content": "Answer in one word."}]
    assert json.loads(span["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": MESSAGES[0]["content"]}]}
    ]
    assert json.loads(span["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": answer.choices[0].message.content}],
            "finish_reason": "stop",
        }
    ]
    assert Store(data_dir).contents_frame().height == 0  # --no-content: the store keeps no text


def test_a_collector_that_is_down_costs_no_call_and_is_counted(provider, start_proxy, data_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    proxy = start_proxy("--upstream", f"{provider.url}@0", "--otlp-endpoint", closed)
    make_calls(proxy.url)  # every call answered (the 429 is the fake provider's own)
    rows = records(data_dir, 5)
    assert len(rows) == 5
    proxy.stop()
    problems = {k: v for s in read_statuses(data_dir) for k, v in s.problems.items()}
    assert problems.get("otlp_export_failed", 0) >= 5  # the 5 spans, and the metric batches
    result = CliRunner().invoke(app, ["stats", "--data", str(data_dir)])
    assert "otlp_export_failed" in result.output


def test_a_bad_endpoint_is_a_one_line_error(data_dir):
    result = CliRunner().invoke(app, ["proxy", "--otlp-endpoint", "localhost:4318", "--data", str(data_dir)])
    assert result.exit_code != 0
    assert "--otlp-endpoint must be an http:// or https:// URL" in result.output


def test_the_conversation_lines_become_messages_by_role():
    from analysis.recording.otel import messages

    text = "user: two lines\nof question\nassistant: an answer\ntool: 42\nuser: and?"
    assert messages(text) == [
        ("user", "two lines\nof question"),
        ("assistant", "an answer"),
        ("tool", "42"),
        ("user", "and?"),
    ]
