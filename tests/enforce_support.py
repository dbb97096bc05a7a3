"""A cacheable chat call as `LivePolicy.decide` sees it (analysis.enforce.request_record), for the
tests that drive LivePolicy directly, without a proxy; and a captured call read as enforce mode
reads it and as the recorder records it, for the tests that compare the two."""

from datetime import UTC, datetime
from typing import Any

from analysis.enforce.request_record import Record, RequestSide, request_record
from analysis.pricing.check import Pricing
from analysis.recording.accounting import account
from analysis.recording.capture import Capture, to_exchange
from analysis.recording.settings import RecorderSettings

T0 = 1_790_000_000.0  # unix seconds


def chat_record(n: int, prompt: str, at: float, **extra: Any) -> dict[str, Any]:
    """Call number `n`, for `prompt` (its hash), made at `at` (unix seconds)."""
    return {
        "id": f"r{n}",
        "ts": datetime.fromtimestamp(at, UTC),
        "provider": "openai",
        "endpoint": "chat",
        "model_requested": "gpt-4o-mini",
        "model": "gpt-4o-mini",
        "prompt_hash": f"sha256:{prompt}",
        "temperature": 0.0,
        "stream": False,
        **extra,
    }


def decided_record(capture: Capture, salt: str, settings: RecorderSettings) -> tuple[Record, RequestSide | None]:
    """`capture`'s request read as enforce mode reads it before sending it (ParseFailure when it cannot)."""
    return request_record(
        "decided",
        capture.target,
        capture.method,
        capture.host,
        capture.path,
        capture.request_headers,
        capture.request_body,
        capture.started,
        salt=salt,
        settings=settings,
        identity=capture.identity,
    )


def recorded_row(capture: Capture, pricing: Pricing, salt: str, settings: RecorderSettings) -> dict[str, Any]:
    """The `requests` row the recorder writes for `capture`."""
    exchange, context = to_exchange(capture, salt, settings, None)
    row, _, _, _ = account(exchange, context, pricing, content=False, max_body=settings.max_body)
    return row
