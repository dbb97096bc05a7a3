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
) -> tuple[Record, RequestSide | None]:
    """The record of a request that has not been answered yet, and its `RequestSide` where its
    wire format's parser reads the request apart (else None); ParseFailure when its body
    cannot be read (the caller lets it pass)."""
    head = read_head(headers, path, identity, salt, settings, all_headers=False)
    exchange = Exchange(
        provider=target.provider,
        endpoint=target.endpoint,
        wire_format=target.wire_format,
        method=method,
        host=host,
        path=head.path,
        query=head.query,
        request_headers=head.headers,
        request_body=body,
        started_at=started,
    )
    parsed, request_side = parse_request_side(exchange, settings.max_body)
    attribution = parsed.attribution
    # The attribution headers (or the wrapped key) win over what the body says, as in the recorder.
    team = head.team or attribution.get("team")
    feature = head.feature or attribution.get("feature")
    user = head.user or attribution.get("user")
    model = parsed.model_requested
    input_tokens = tokens.estimate_input_tokens(parsed, model) if count_tokens else None
    side = None if request_side is None else RequestSide(request_side, path, headers, body, settings.max_body)
    record = {
        "id": request_id,
        "ts": datetime.fromtimestamp(started, UTC),
        "provider": target.provider,
        "endpoint": target.endpoint,
        "host": host,
        "path": exchange.path,
        "method": method,
        "stream": parsed.stream,
        "model_requested": model,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": None,
        "cost_usd": None,
        "latency_ms": None,
        "outcome": None,
        "key_id": head.key_id,
        "team": team,
        "feature": feature,
        "user": user,
        "prompt_hash": prompt_hash(parsed.canonical_request) if parsed.canonical_request else None,
        "temperature": parsed.temperature,
        "n": parsed.n,
        "has_tools": parsed.has_tools,
        "has_images": parsed.has_images,
        "service_tier": parsed.service_tier,
        "batch": parsed.batch,
        "system_prompt": parsed.system_prompt or None,
        "prompt_text": parsed.prompt_text or None,
    }
    return record, side


__all__ = ["ParseFailure", "Record", "RequestSide", "request_record"]
