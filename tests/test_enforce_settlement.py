"""Enforce mode settles a call with its outcome, cost_usd and tokens read on the event loop
(analysis.enforce.settlement): they equal what the recorder's `requests` row says for the same
call, on every recorded exchange, whether only the answer is read (the call sent the bytes its
decision read) or the whole call, for a stream cut halfway, and for an answer gzip-encoded
among a provider's many headers."""

import gzip
from pathlib import Path

import pytest

from analysis.enforce.request_record import ParseFailure
from analysis.enforce.settlement import settlement_cost
from analysis.parsers.detect import detect
from analysis.parsers.exchange import Exchange
from analysis.pricing.check import Pricing
from analysis.recording.capture import Capture
from analysis.recording.settings import RecorderSettings
from tests.cassettes import cassette_files, cassette_id, cassette_path, recorded_exchanges
from tests.enforce_support import decided_record, recorded_row

SALT = "settlement"


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing.load(None)


def _fields(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.encode(), value.encode()) for name, value in headers.items())


def _capture(exchange: Exchange, chunks: list[tuple[float, bytes]]) -> Capture:
    target = detect(exchange.host, exchange.path, exchange.request_headers, exchange.method)
    assert target is not None
    query = "&".join(f"{name}={value}" for name, value in exchange.query.items())
    return Capture(
        target=target,
        method=exchange.method,
        host=exchange.host,
        path=exchange.path + (f"?{query}" if query else ""),
        request_headers=_fields(exchange.request_headers),
        request_body=exchange.request_body,
        status=exchange.status,
        response_headers=_fields(exchange.response_headers),
        chunks=chunks,
        started=exchange.started_at,
        ended=exchange.started_at + (exchange.duration or 0.0),
        outcome="ok",
        id="settled",
    )


def _recorded(capture: Capture, pricing: Pricing, settings: RecorderSettings) -> tuple[str, float | None, int]:
    """(outcome, cost_usd, input + output tokens) of the recorder's row for this call."""
    row = recorded_row(capture, pricing, SALT, settings)
    return row["outcome"], row["cost_usd"], (row["input_tokens"] or 0) + (row["output_tokens"] or 0)


def _assert_settled_as_recorded(capture: Capture, pricing: Pricing, settings: RecorderSettings, where: str) -> None:
    try:
        _, side = decided_record(capture, SALT, settings)
    except ParseFailure:
        side = None  # a request enforce mode cannot read passes undecided
    if capture.target.wire_format == "openai_chat":  # its parser reads the request apart
        assert side is not None, where
    expected = _recorded(capture, pricing, settings)
    for given in (side, None):
        cost = settlement_cost(capture, pricing, settings, given)
        assert (cost.outcome, cost.cost_usd, cost.tokens) == expected, where


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_a_settled_call_costs_what_its_row_says(path: Path, pricing: Pricing, tmp_path: Path):
    settings = RecorderSettings(data=tmp_path)
    for recorded in recorded_exchanges(path):
        chunks = recorded.exchange.response_chunks
        variants = [chunks, chunks[: len(chunks) // 2]] if len(chunks) > 1 else [chunks]
        for sent in variants:
            where = f"{cassette_id(path)} #{recorded.position} ({len(sent)} of {len(chunks)} chunks)"
            _assert_settled_as_recorded(_capture(recorded.exchange, sent), pricing, settings, where)


# An OpenAI answer's headers, as mitmproxy holds them (names as sent), around the two that
# reading an answer looks at (capture.ANSWER_HEADERS).
PROVIDER_HEADERS = (
    (b"Date", b"Mon, 30 Nov 2026 03:00:00 GMT"),
    (b"Transfer-Encoding", b"chunked"),
    (b"openai-processing-ms", b"412"),
    (b"x-ratelimit-remaining-tokens", b"149999"),
    (b"Set-Cookie", b"__cf_bm=abc; path=/"),
    (b"x-request-id", b"req_123"),
)


@pytest.mark.parametrize(
    "relative",
    [
        "tests/models/cassettes/test_openai/test_openai_model_without_system_prompt.yaml",  # JSON
        "tests/models/cassettes/test_openai/test_run_stream_sync_streams_real_model.yaml",  # SSE
    ],
)
def test_an_encoded_answer_among_many_headers_is_settled_as_recorded(relative: str, pricing: Pricing, tmp_path: Path):
    recorded = recorded_exchanges(cassette_path(relative))[0].exchange
    capture = _capture(recorded, [])
    body = b"".join(chunk for _, chunk in recorded.response_chunks)
    content_type = recorded.response_headers["content-type"].encode()
    capture.response_headers = (*PROVIDER_HEADERS, (b"Content-Type", content_type), (b"Content-Encoding", b"gzip"))
    encoded = gzip.compress(body)
    capture.chunks = [(0.1, encoded[:40]), (0.2, encoded[40:])]
    _assert_settled_as_recorded(capture, pricing, RecorderSettings(data=tmp_path), relative)
    assert settlement_cost(capture, pricing, RecorderSettings(data=tmp_path)).tokens > 0, "the answer was read"
