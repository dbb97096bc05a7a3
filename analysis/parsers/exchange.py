"""The two values that pass between the recorder and the parsers.

`Exchange` is one HTTP call as the recorder saw it (bytes in, bytes out, timings), with the
secrets already taken out. A parser reads an `Exchange` and returns a `Parsed`: what the call
means (model, tokens, text). Neither knows about mitmproxy, the store or prices.
"""

import json
from dataclasses import dataclass, field
from typing import Literal

UsageSource = Literal["provider", "estimated", "none"]


@dataclass(slots=True)  # built and read on every settled call (enforce mode: on the event loop)
class Exchange:
    provider: str  # "openai", "anthropic", ... (see analysis.parsers.detect)
    endpoint: str  # "chat", "responses", "messages", "generate_content", ...
    wire_format: str  # which parser reads it: a module name in analysis.parsers
    method: str
    host: str
    path: str  # without the query string
    query: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)  # lower-case names, no secrets
    request_body: bytes = b""
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    # The response body, content-decoded, as it arrived: (seconds since request start, bytes).
    # A JSON response is usually one chunk; a stream has one per network read.
    response_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    started_at: float = 0.0  # unix time the request started
    duration: float | None = None  # seconds, request start to last response byte
    outcome: str = "ok"  # set by the recorder from how the call ended (see schema)
    error: str | None = None
    response_over_cap: bool = False  # response_chunks hold only the first part of a longer body

    @property
    def response_body(self) -> bytes:
        chunks = self.response_chunks
        if len(chunks) == 1:  # a JSON answer, usually: its one chunk, not a join of it
            return chunks[0][1]
        return b"".join([chunk for _, chunk in chunks])

    @property
    def is_event_stream(self) -> bool:
        return "text/event-stream" in self.response_headers.get("content-type", "")


# Slots: built, read and copied on every settled call (enforce mode: on the proxy's event loop).
@dataclass(slots=True)
class Usage:
    """Tokens in the one convention llm-shadow uses everywhere (see README, "Accounting").

    input_tokens counts every input token, cached and cache-written ones included;
    output_tokens counts every output token, reasoning included. The other fields are parts.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    # Parts of input_tokens / output_tokens that are audio or image tokens (priced at their own
    # rates where the price table has them). Input audio and image count as not cached.
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    image_input_tokens: int = 0
    image_output_tokens: int = 0
    source: UsageSource = "none"


@dataclass
class Parsed:
    model_requested: str | None = None
    model: str | None = None
    stream: bool = False
    usage: Usage = field(default_factory=Usage)
    provider_cost_usd: float | None = None  # cost the API itself reported (OpenRouter)
    # Tokens the call spent on other models than its own (Anthropic's advisor iterations):
    # (model, usage) pairs, priced at that model's rates and not counted in `usage`.
    other_models: list[tuple[str, Usage]] = field(default_factory=list)
    # Seconds since request start of the chunk carrying the first output token (streams).
    first_token_at: float | None = None
    # A stream reached its terminal event ([DONE], message_stop, response.completed, ...).
    complete: bool = True
    # Why the model stopped, one per choice or candidate, as the provider says it (stop, length,
    # end_turn, tool_use, STOP, MAX_TOKENS, ...): the `finish_reasons` column.
    finish_reasons: list[str] = field(default_factory=list)
    response_text: str = ""
    # Request-side facts.
    system_prompt: str = ""
    prompt_text: str = ""  # messages as "role: text" lines
    # The request reduced to what changes the answer (model, messages, sampling parameters);
    # not user, stream, metadata. analysis.parsers.hashing turns it into prompt_hash.
    canonical_request: dict | None = None
    temperature: float | None = None
    n: int | None = None
    has_tools: bool = False
    has_images: bool = False
    service_tier: str | None = None
    batch: bool = False
    # Names the usage this call reports when other calls can report the same usage again (a
    # finished batch's usage comes back on every poll): "openai-batch:<id>".
    usage_key: str | None = None
    # Attribution the request body carries: keys "team", "feature", "user".
    attribution: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # provider error message, for non-2xx responses
    # Stream events over the size cap, skipped unread (analysis.parsers.sse.MAX_EVENT_CHARS):
    # how many, and their characters (their output is estimated at 4 characters a token).
    skipped_events: int = 0
    skipped_chars: int = 0


# A Parsed with every field at its default, which `new_parsed` copies, and the fields whose
# default is made anew for each (those with a default_factory: tests/test_parsers_edge_cases.py checks).
_BLANK = Parsed()
FRESH_FIELDS = ("usage", "other_models", "finish_reasons", "attribution")


def new_parsed() -> Parsed:
    """`Parsed()`, at less than half its cost: a copy of a blank one's attributes, with new
    objects for those whose default is made anew (`FRESH_FIELDS`). A parser starts from one for
    every request it reads (enforce mode: on the proxy's event loop, before the call is sent),
    and the dataclass's __init__ (26 arguments bound, four defaults made by calls) cost 1.9 us
    of a request's 25 (in-process)."""
    parsed = Parsed.__new__(Parsed)
    facts = _BLANK.__dict__.copy()
    facts["usage"] = Usage()  # one of FRESH_FIELDS, as are the three below
    facts["other_models"] = []
    facts["finish_reasons"] = []
    facts["attribution"] = {}
    parsed.__dict__ = facts
    return parsed


_OTHER_MODEL_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


def other_models_json(other_models: list[tuple[str, Usage]]) -> str | None:
    """The `usage_other_models` column: [{model, input_tokens, ...}, ...] as JSON, or NULL."""
    if not other_models:
        return None
    parts = [{"model": model, **{f: getattr(usage, f) for f in _OTHER_MODEL_FIELDS}} for model, usage in other_models]
    return json.dumps(parts, separators=(",", ":"))


def other_models_from_json(text: str | None) -> list[tuple[str, Usage]]:
    """Inverse of other_models_json (for reprice)."""
    if not text:
        return []
    return [
        (part["model"], Usage(**{f: part.get(f) or 0 for f in _OTHER_MODEL_FIELDS}, source="provider"))
        for part in json.loads(text)
    ]
