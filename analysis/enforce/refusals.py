"""A refusal (budget spent, rate limit full), or a call no upstream answered, in the provider's own error shape.

Clients read errors with their provider's SDK: an OpenAI SDK raises RateLimitError on a 429
whose body is `{"error": {...}}`, Anthropic's on `{"type": "error", "error": {...}}`, the
Gemini SDK on `{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}`. So a refusal is a
429 in the shape of the wire format the client speaks, with our message. `Retry-After` is
given where waiting helps (a rate-limit window frees up within a minute); a spent budget
says `x-should-retry: false` instead, which the OpenAI and Anthropic SDKs honour, so they do
not retry a call that cannot succeed before the window ends.
"""

import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def refusal(wire_format: str, kind: str, message: str, retry_after_seconds: float | None = None) -> Refusal:
    """A 429 for a client speaking `wire_format` (a module of analysis.parsers)."""
    if wire_format.startswith("anthropic"):
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    elif wire_format.startswith("gemini"):
        body = {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}
    else:
        code = "budget_exceeded" if kind == "budget" else "rate_limit_exceeded"
        body = {"error": {"message": message, "type": "rate_limit_exceeded", "param": None, "code": code}}
    headers = [("content-type", "application/json")]
    if retry_after_seconds is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry_after_seconds)))))
    else:
        headers.append(("x-should-retry", "false"))
    return Refusal(429, tuple(headers), json.dumps(body).encode())


def upstream_failure(wire_format: str, status: int, message: str) -> Refusal:
    """A 502 (no connection) or 504 (no answer in time) in the provider's error shape, for a
    call that no upstream answered, fallback attempts included."""
    if wire_format.startswith("anthropic"):
        body: dict = {"type": "error", "error": {"type": "api_error", "message": message}}
    elif wire_format.startswith("gemini"):
        body = {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
    else:
        body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": "upstream_unavailable"}}
    return Refusal(status, (("content-type", "application/json"),), json.dumps(body).encode())
