"""A live request as the record the policy engine reads: the `requests` columns known before
the answer.

The simulator decides over recorded rows; enforce mode must decide before the upstream has
answered, from the request alone. This module reads the request the way the recorder will
(the same parser, the same prompt hash, the same key fingerprint and attribution headers, or
the wrapped key's identity), so
the cache key, the scope values and the matching conditions are the ones the simulator sees
for the same call. What only the answer tells (tokens, cost, latency, outcome) is absent;
when the policy needs a price before the answer (routing, batch, budget downgrades, token
conditions) the input tokens are counted from the request text, as the recorder counts them
for a response that reports none.

The prompt hash is the exact cache's key and nothing else live reads it: given the rules of the
policy's caches (`caches`), the record carries it only when one of them may answer or store the
request (`reason_before_hash`): a request every cache excludes by its sampling or tools rules
(most chat traffic samples) is decided the same without it, and hashing a prompt costs ~12 us
of a live proxy's event loop.

With the record comes what the request's settlement needs to read only the answer
(`RequestSide`): the request-side facts and the bytes they were read from, used when the call
was sent as it was read (not when enforce mode rewrote its model).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analysis.parsers import tokens
from analysis.parsers.detect import Target
from analysis.parsers.exchange import Exchange, Parsed
from analysis.parsers.hashing import prompt_hash
from analysis.recording.accounting import ParseFailure, parse_request_side
from analysis.recording.capture import Capture, HeaderFields, Identity, read_head
from analysis.recording.settings import RecorderSettings
from analysis.simulate.cacheability import reason_before_hash
from analysis.simulate.policy import CacheRules

Record = dict[str, Any]


# Not frozen, though nothing changes it: a frozen dataclass is built with object.__setattr__ per
# field, 1.1 us against 0.4 (in-process), and enforce mode makes one for every call it decides.
@dataclass(slots=True)
class RequestSide:
    """A decided request's facts as its parser read them before the answer, and what they were
    read from (analysis.parsers.read_request)."""

    parsed: Parsed
    path: str
    headers: HeaderFields
    body: bytes
    max_body: int

    def read_from(self, capture: Capture, max_body: int) -> bool:
        """Whether `capture` sent the request these facts were read from, byte for byte."""
        return (
            capture.request_body == self.body
            and capture.path == self.path
            and capture.request_headers == self.headers
            and max_body == self.max_body
        )


# A record's columns, in their order, each None until known; a record is a copy with the request's
# values stored. Not a dict display: one of more than 15 keys is built key by key (BUILD_MAP 0,
# then MAP_ADD), growing the dict three times, which cost 1.3 us in-process against 0.6.
_UNKNOWN: Record = dict.fromkeys(
    (
        "id",
        "ts",
        "provider",
        "endpoint",
        "host",
        "path",
        "method",
        "stream",
        "model_requested",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "outcome",
        "key_id",
        "team",
        "feature",
        "user",
        "prompt_hash",
        "temperature",
        "n",
        "has_tools",
        "has_images",
        "service_tier",
        "batch",
        "system_prompt",
        "prompt_text",
    )
)


def request_record(
    request_id: str,
    target: Target,
    method: str,
    host: str,
    path: str,
    headers: HeaderFields,
    body: bytes,
    started: float,
    *,
    salt: str,
    settings: RecorderSettings,
    count_tokens: bool = False,
    identity: Identity | None = None,
    caches: tuple[CacheRules, ...] | None = None,
) -> tuple[Record, RequestSide | None]:
    """The record of a request that has not been answered yet, and its `RequestSide` where its
    wire format's parser reads the request apart (else None); ParseFailure when its body
    cannot be read (the caller lets it pass). `caches`: the rules of the caches that decide the
    record (LivePolicy.cache_rules): its prompt is hashed only when one of them may use the hash;
    None: always, as the recorder does."""
    head = read_head(headers, path, identity, salt, settings, all_headers=False)
    # The request as its parser reads it (no answer, no timings: a parser reads none). Given by
    # position: a class's keyword arguments are gathered into a dict first, 0.4 us of its 1.
    exchange = Exchange(
        target.provider, target.endpoint, target.wire_format, method, host, head.path, head.query, head.headers, body
    )
    parsed, request_side = parse_request_side(exchange, settings.max_body)
    attribution = parsed.attribution
    # The attribution headers (or the wrapped key) win over what the body says, as in the recorder.
    team = head.team or attribution.get("team")
    feature = head.feature or attribution.get("feature")
    user = head.user or attribution.get("user")
    model = parsed.model_requested
    side = None if request_side is None else RequestSide(request_side, path, headers, body, settings.max_body)
    record = _UNKNOWN.copy()  # what only the answer tells (tokens, cost, latency, outcome) stays None
    record["id"] = request_id
    record["ts"] = datetime.fromtimestamp(started, UTC)
    record["provider"] = target.provider
    record["endpoint"] = target.endpoint
    record["host"] = host
    record["path"] = exchange.path
    record["method"] = method
    record["stream"] = parsed.stream
    record["model_requested"] = model
    record["model"] = model
    if count_tokens:
        record["input_tokens"] = tokens.estimate_input_tokens(parsed, model)
    record["key_id"] = head.key_id
    record["team"] = team
    record["feature"] = feature
    record["user"] = user
    record["temperature"] = parsed.temperature
    record["n"] = parsed.n
    record["has_tools"] = parsed.has_tools
    record["has_images"] = parsed.has_images
    record["service_tier"] = parsed.service_tier
    record["batch"] = parsed.batch
    record["system_prompt"] = parsed.system_prompt or None
    record["prompt_text"] = parsed.prompt_text or None
    # Last, once the columns the caches' rules read are filled.
    if parsed.canonical_request and (caches is None or _hash_read(record, caches)):
        record["prompt_hash"] = prompt_hash(parsed.canonical_request)
    return record, side


def _hash_read(record: Record, caches: tuple[CacheRules, ...]) -> bool:
    """Whether a cache with one of `caches`' rules reads `record`'s prompt hash."""
    for rules in caches:
        if reason_before_hash(record, rules) is None:
            return True
    return False


__all__ = ["ParseFailure", "Record", "RequestSide", "request_record"]
