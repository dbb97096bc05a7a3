"""Enforce mode settles a call with its outcome, cost_usd and tokens read on the event loop
(analysis.enforce.settlement): they equal what the recorder's `requests` row says for the same
call, on every recorded exchange, whether only the answer is read (the call sent the bytes its
decision read) or the whole call, and for a stream cut halfway."""

from pathlib import Path

import pytest

from analysis.enforce.request_record import ParseFailure, request_record
from analysis.enforce.settlement import settlement_cost
from analysis.parsers.detect import detect
from analysis.parsers.exchange import Exchange
from analysis.pricing.check import Pricing
from analysis.recording.accounting import account
from analysis.recording.capture import Capture, to_exchange
from analysis.recording.settings import RecorderSettings
from tests.cassettes import cassette_files, cassette_id, recorded_exchanges

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
    exchange, context = to_exchange(capture, SALT, settings, None)
    row, _, _, _ = account(exchange, context, pricing, content=False, max_body=settings.max_body)
    return row["outcome"], row["cost_usd"], (row["input_tokens"] or 0) + (row["output_tokens"] or 0)


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_a_settled_call_costs_what_its_row_says(path: Path, pricing: Pricing, tmp_path: Path):
    settings = RecorderSettings(data=tmp_path)
    for recorded in recorded_exchanges(path):
        chunks = recorded.exchange.response_chunks
        variants = [chunks, chunks[: len(chunks) // 2]] if len(chunks) > 1 else [chunks]
        for sent in variants:
            capture = _capture(recorded.exchange, sent)
            try:
                _, side = request_record(
                    "settled",
                    capture.target,
                    capture.method,
                    capture.host,
                    capture.path,
                    capture.request_headers,
                    capture.request_body,
                    capture.started,
                    salt=SALT,
                    settings=settings,
                )
            except ParseFailure:
                side = None  # a request enforce mode cannot read passes undecided
            where = f"{cassette_id(path)} #{recorded.position} ({len(sent)} of {len(chunks)} chunks)"
            if capture.target.wire_format == "openai_chat":  # its parser reads the request apart
                assert side is not None, where
            expected = _recorded(capture, pricing, settings)
            for given in (side, None):
                cost = settlement_cost(capture, pricing, settings, SALT, given)
                assert (cost.outcome, cost.cost_usd, cost.tokens) == expected, where
