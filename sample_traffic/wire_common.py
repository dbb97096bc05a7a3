"""What the three wire modules share: the rendered exchange, provider prompt caches, timing and
failure helpers, and the headers every SDK sends.

A wire module's `render(call, rng, caches)` returns a `WireExchange`: the request and response
exactly as they cross the network, plus when each part happened (seconds after the request
started). flows.py turns it into a mitmproxy flow.
"""

import json
import random
from dataclasses import dataclass, field
from email.utils import formatdate

from sample_traffic.calls import Call
from sample_traffic.tokens import Timing

# How a streamed response is cut: the flow's error, as mitmproxy words it.
UPSTREAM_CUT = (
    "HTTP/1 protocol error: peer closed connection without sending complete message body (incomplete chunked read)"
)
CLIENT_GONE = "Client disconnected."

STREAM_DELTA_TOKENS = (4, 12)  # tokens per streamed delta (real streams send ~1; see README)


@dataclass
class WireExchange:
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes  # as the application reads it (before content-encoding)
    server_ip: str
    headers_at: float  # seconds after the request started: response headers received
    ended_at: float | None  # last byte received; None when the response never completed
    error: str | None = None  # mitmproxy's flow error, when the exchange broke
    error_at: float | None = None
    gzip: bool = False  # the response is sent with content-encoding: gzip


@dataclass
class PromptCaches:
    """Provider prompt caches: when each (scope) prefix was last written or read."""

    last_used: dict[tuple, float] = field(default_factory=dict)

    def hit(self, scope: tuple, at: float, ttl_s: float) -> bool:
        seen = self.last_used.get(scope)
        return seen is not None and at - seen <= ttl_s

    def touch(self, scope: tuple, at: float) -> None:
        self.last_used[scope] = at


def http_date(at: float) -> str:
    return formatdate(at, usegmt=True)


def compact_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def pretty_json(obj) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


def sdk_request_headers(
    call: Call, host: str, auth: tuple[str, str], extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The headers an SDK sends that matter here (content-length is added when the flow is built).

    Real SDKs send a few more (connection, x-stainless-os, x-stainless-arch, ...); they are left
    out to keep the flow file small."""
    key = call.key
    headers = [
        ("host", host),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", key.user_agent),
    ]
    if key.provider in ("openai", "anthropic"):
        headers.append(("x-stainless-retry-count", str(call.retry_count)))
    headers.append(auth)
    headers += extra
    headers += list(call.shadow_headers.items())
    return headers


def stream_groups(rng: random.Random, pieces: list[str]) -> list[str]:
    """Token strings joined into stream deltas of a few tokens each."""
    groups, i = [], 0
    while i < len(pieces):
        n = rng.randint(*STREAM_DELTA_TOKENS)
        groups.append("".join(pieces[i : i + n]))
        i += n
    return groups


def cut_point(rng: random.Random, n_events: int) -> int:
    """How many events of a stream arrive before it is cut (at least one, never all)."""
    return max(1, min(n_events - 1, int(n_events * rng.uniform(0.2, 0.8))))


def stream_timing(timing: Timing, fraction: float) -> float:
    """Seconds after start at which `fraction` of the streamed output has arrived."""
    return round(timing.ttft_s + (timing.total_s - timing.ttft_s) * fraction, 4)


def failure_timing(rng: random.Random, fault: str) -> Timing:
    """Error responses come back fast, except 5xx that time out at the edge."""
    if fault == "server_error" and rng.random() < 0.3:
        t = rng.uniform(20, 60)
    else:
        t = rng.uniform(0.04, 0.35)
    return Timing(round(t, 4), round(t + 0.0005, 4))
