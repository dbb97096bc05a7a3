"""The recorder's hooks in every order mitmproxy may call them, in milliseconds: mitmproxy's
own test helpers (taddons, tflow) drive the addon, and a collecting sink stands where the
worker would be. The end-to-end promises (pass-through, streaming) stay with the proxy tests.

Every flow ends in exactly one of `response` or `error`, except a flow read from a file, which
may carry both (a stream the client left): then `response` and `error` both come, and the call
must still be recorded once, with the ending the error says.
"""

import json
from pathlib import Path

import pytest
from mitmproxy import flow as mflow
from mitmproxy.http import Headers
from mitmproxy.test import taddons, tflow, tutils

from addons.recorder import Recorder
from analysis.pricing.check import Pricing
from analysis.recording.accounting import account
from analysis.recording.capture import Capture, to_exchange
from analysis.recording.settings import RecorderSettings

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}).encode()
ANSWER = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
    }
).encode()
STREAM = [
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":2,'
    b'"total_tokens":10}}\n\n',
    b"data: [DONE]\n\n",
]


class CollectingSink:
    """Where the worker would be: keeps every capture the recorder submits."""

    instance = "test"
    recorded = 0

    def __init__(self):
        self.captures: list[Capture] = []

    def submit(self, capture: Capture) -> None:
        self.captures.append(capture)

    def close(self) -> None:
        pass


@pytest.fixture
def recorder(tmp_path: Path):
    addon = Recorder(worker_process=False)
    with taddons.context(addon):
        addon.settings = RecorderSettings(data=tmp_path, max_body=1024)
        addon.sink = CollectingSink()
        yield addon


def llm_flow(host: str = "api.openai.com", stream: bool = False) -> mflow.Flow:
    request = tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/chat/completions",
        headers=Headers(host=host, content_type="application/json", authorization="Bearer sk-test"),
        content=BODY,
    )
    return tflow.tflow(req=request)


def respond(f, stream: bool) -> None:
    headers = (
        Headers(content_type="text/event-stream", transfer_encoding="chunked")
        if stream
        else Headers(content_type="application/json", content_length=str(len(ANSWER)))
    )
    f.response = tutils.tresp(headers=headers, content=b"" if stream else ANSWER)
    f.response.timestamp_start = f.request.timestamp_start + 0.05
    f.response.timestamp_end = f.request.timestamp_start + 0.1


def row_of(capture: Capture) -> dict:
    exchange, context = to_exchange(capture, "salt", RecorderSettings(data=Path(".")), "test")
    row, _, _, _ = account(exchange, context, Pricing.load())
    return row


def captures(recorder) -> list[Capture]:
    return recorder.sink.captures


def test_a_buffered_answer_is_one_ok_call(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=False)
    recorder.responseheaders(f)
    assert f.response.stream is False  # plain JSON is relayed as bare mitmdump relays it
    recorder.response(f)
    [capture] = captures(recorder)
    assert capture.outcome == "ok" and capture.status == 200
    assert capture.chunks == [(pytest.approx(0.05), ANSWER)]
    row = row_of(capture)
    assert (row["outcome"], row["input_tokens"], row["output_tokens"]) == ("ok", 8, 2)


def test_a_stream_is_forwarded_chunk_by_chunk_and_recorded_once(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=True)
    recorder.responseheaders(f)
    tap = f.response.stream
    assert callable(tap)
    assert [tap(chunk) for chunk in STREAM] == STREAM  # every chunk handed on unchanged
    assert tap(b"") == b""
    recorder.response(f)
    [capture] = captures(recorder)
    assert [data for _, data in capture.chunks] == STREAM
    row = row_of(capture)
    assert (row["outcome"], row["stream"], row["output_tokens"]) == ("ok", True, 2)


def test_response_then_error_records_the_call_once_with_the_errors_ending(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=True)
    recorder.responseheaders(f)
    f.response.stream(STREAM[0])
    f.error = mflow.Error("Client disconnected.")
    recorder.response(f)  # a flow read from a file carries both: mitmproxy calls both hooks
    recorder.error(f)
    [capture] = captures(recorder)
    assert capture.outcome == "client_disconnected"
    assert capture.error == "Client disconnected."
    assert [data for _, data in capture.chunks] == STREAM[:1]
    assert row_of(capture)["outcome"] == "client_disconnected"


def test_error_before_response_headers_is_a_call_without_a_status(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    f.error = mflow.Error("[Errno 111] Connection refused")
    recorder.error(f)
    [capture] = captures(recorder)
    assert (capture.outcome, capture.status, capture.chunks, capture.response_headers) == (
        "connect_error",
        None,
        [],
        (),
    )
    row = row_of(capture)
    assert (row["outcome"], row["status"], row["cost_source"]) == ("connect_error", None, "none")


def test_a_timeout_before_any_answer_says_timeout(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    f.error = mflow.Error("Connection timed out")
    recorder.error(f)
    assert [c.outcome for c in captures(recorder)] == ["timeout"]


def test_a_stream_cut_by_the_upstream_keeps_what_arrived(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=True)
    recorder.responseheaders(f)
    f.response.stream(STREAM[0])
    f.error = mflow.Error("server closed connection")
    recorder.error(f)
    [capture] = captures(recorder)
    assert capture.outcome == "upstream_cut"
    assert [data for _, data in capture.chunks] == STREAM[:1]


def test_error_after_the_response_ended_is_not_a_second_call(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=False)
    recorder.responseheaders(f)
    recorder.response(f)
    f.error = mflow.Error("Client disconnected.")
    recorder.error(f)
    assert [c.outcome for c in captures(recorder)] == ["ok"]


def test_hooks_for_a_flow_never_seen_record_nothing(recorder):
    f = llm_flow()
    respond(f, stream=False)
    recorder.response(f)  # no requestheaders: the recorder was loaded mid-flow
    f.error = mflow.Error("Client disconnected.")
    recorder.error(f)
    assert captures(recorder) == []


def test_a_call_to_another_host_passes_unrecorded(recorder):
    f = llm_flow(host="example.com")
    f.request.path = "/index.html"
    recorder.requestheaders(f)
    respond(f, stream=True)
    recorder.responseheaders(f)
    assert f.response.stream is False  # not tapped: passes as bare mitmdump passes it
    recorder.response(f)
    assert captures(recorder) == []


def test_a_body_over_max_body_is_relayed_whole_and_counted(recorder):
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=True)
    recorder.responseheaders(f)
    big = b"data: " + b"x" * 2000 + b"\n\n"
    assert f.response.stream(STREAM[0]) == STREAM[0]
    assert f.response.stream(big) == big  # beyond the limit: still handed on, not kept
    assert f.response.stream(big) == big
    recorder.response(f)
    [capture] = captures(recorder)
    assert sum(len(data) for _, data in capture.chunks) <= 1024 + len(big)
    assert capture.response_truncated  # counted by the worker, which says so in the row
    assert "response body over" in row_of(capture)["error"]


def test_without_a_sink_nothing_is_kept_for_a_finished_flow(recorder):
    recorder.sink = None  # before `running`, or after `done`
    f = llm_flow()
    recorder.requestheaders(f)
    respond(f, stream=False)
    recorder.response(f)
    assert recorder._targets == {} and recorder._taps == {}
