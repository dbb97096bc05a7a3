"""A cacheable chat call as `LivePolicy.decide` sees it (analysis.enforce.request_record), for the
tests that drive LivePolicy directly, without a proxy."""

from datetime import UTC, datetime
from typing import Any

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
