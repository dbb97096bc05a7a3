"""What the recorder copies off the proxy's event loop, and how it becomes an Exchange.

On the event loop the recorder only takes references (`Capture`): header fields as mitmproxy
holds them, the raw bodies, the timings. Everything that costs something (decoding header
names, taking the API key out, fingerprinting it, parsing the query string, reading
attribution headers) happens in the worker thread, in `to_exchange`.
"""

import functools
import hashlib
from collections.abc import Container
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qsl

from analysis.parsers.detect import Target
from analysis.parsers.exchange import Exchange
from analysis.recording.accounting import CallContext
from analysis.recording.settings import RecorderSettings
from analysis.store.datadir import new_id

SECRET_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization")
DROPPED_HEADERS = SECRET_HEADERS + ("cookie", "set-cookie")
SECRET_QUERY_PARAMS = ("key", "api-key", "api_key")
# The request headers a request's reading looks at, besides the key and the attribution headers
# (analysis.recording.accounting.decode_request; the parsers read none).
REQUEST_SIDE_HEADERS = ("content-encoding",)

HeaderFields = tuple[tuple[bytes, bytes], ...]

# Keys of mitmproxy's flow.metadata through which enforce mode (addons.enforcer) and the
# recorder share one call: the id enforce mode gave it, the policy kind that answered it
# without the upstream, its decision rows; and the Capture the recorder made of it.
FLOW_ID = "llm_shadow.id"
FLOW_ANSWERED_BY = "llm_shadow.answered_by"
FLOW_DECISIONS = "llm_shadow.decisions"
FLOW_CAPTURE = "llm_shadow.capture"
# A call enforce mode sent through its relay (addons.fallback): the client's request (the flow's
# own points at the relay), and the relay records the call itself unless the flow ended first.
FLOW_RELAYED = "llm_shadow.relayed"
# A callable (status, outcome) -> decision rows, for a call that ends without an answer: the
# plan a watching fallback rule logs for a timeout or a connection error (addons.fallback).
FLOW_ERROR_DECISIONS = "llm_shadow.error_decisions"

# flow.metadata key: who a call belongs to when a wrapped key said so (addons.wrapped_keys).
FLOW_IDENTITY = "llm_shadow.identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """Attribution from a wrapped key: it replaces the key fingerprint, and its team, feature and
    user replace the attribution headers where the key sets them."""

    key_id: str
    team: str
    feature: str | None = None
    user: str | None = None


@dataclass(slots=True)
class Capture:
    target: Target
    method: str
    host: str
    path: str  # with the query string
    request_headers: HeaderFields
    request_body: bytes
    status: int | None
    response_headers: HeaderFields
    chunks: list[tuple[float, bytes]]  # (seconds since start, raw bytes as received)
    started: float  # unix time
    ended: float
    outcome: str
    error: str | None = None
    response_truncated: bool = False  # the proxy kept only the first shadow_max_body bytes
    import_key: str | None = None  # what identifies an imported call (see addons.importer)
    id: str | None = None  # the call's id when enforce mode gave it one at the request
    answered_by: str | None = None  # the policy kind that answered without the upstream (enforce mode)
    decisions: tuple[dict, ...] = ()  # rows of `decisions` for this call (analysis.enforce)
    identity: Identity | None = None  # from a wrapped key (addons.wrapped_keys)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def split_secrets(fields, only: Container[str | bytes] | None = None) -> tuple[dict[str, str], str | None]:
    """Headers with lower-case names minus credentials and cookies, and the API key if any.

    `fields` are (name, value) pairs, as bytes (mitmproxy's header fields) or str. `only`: the
    lower-case names looked at (the key's among them), as str and as bytes (`request_side_names`),
    the others skipped undecoded; None: every name."""
    headers, key = {}, None
    for name, value in fields:
        if only is not None and isinstance(name, bytes) and name.isascii():
            # Skipped before decoding (most of an SDK's headers); an ASCII name lowered as bytes
            # decodes to its lower-case str, so a kept one is not lowered and looked up again.
            name = name.lower()
            if name not in only:
                continue
            name = name.decode("ascii")
        else:
            name = (_text(name) if isinstance(name, bytes) else name).lower()
            if only is not None and name not in only:
                continue
        value = _text(value) if isinstance(value, bytes) else value
        if name in SECRET_HEADERS:
            if key is None:
                key = value.split(" ", 1)[1] if value.lower().startswith("bearer ") else value
        elif name not in DROPPED_HEADERS:
            headers[name] = value
    return headers, key


# A proxy sees a handful of API keys, each on many calls: their fingerprints are kept (bounded),
# so a call's sha256 is not computed again (enforce mode reads a request's key when deciding it, and
# again when settling a call it changed: analysis.enforce.settlement).
@functools.lru_cache(maxsize=1024)
def key_fingerprint(key: str, salt: str) -> str:
    """A salted fingerprint of an API key: stable per data directory, useless to an attacker."""
    return "key_" + hashlib.sha256(f"{salt}:{key.strip()}".encode()).hexdigest()[:16]


class RequestHead(NamedTuple):
    """What a request's headers and path say, secrets taken out: the headers (lower-case
    names), the path without its query string, the query minus any API key, and who the call
    belongs to (the key's fingerprint and the attribution headers, or the wrapped key's identity)."""

    headers: dict[str, str]
    path: str
    query: dict[str, str]
    key_id: str | None
    team: str | None
    feature: str | None
    user: str | None


# One set per proxy's attribution header names, made once, not on every request.
@functools.lru_cache(maxsize=16)
def request_side_names(team_header: str, feature_header: str, user_header: str) -> frozenset[str | bytes]:
    """The lower-case names of the headers a request's reading looks at (the key, the
    attribution headers and REQUEST_SIDE_HEADERS), each as str and as bytes (`split_secrets`)."""
    names = [
        name.lower() for name in (*SECRET_HEADERS, *REQUEST_SIDE_HEADERS, team_header, feature_header, user_header)
    ]
    return frozenset([*names, *[name.encode() for name in names]])


def read_head(
    fields: HeaderFields,
    path_and_query: str,
    identity: Identity | None,
    salt: str,
    settings: RecorderSettings,
    all_headers: bool = True,
) -> RequestHead:
    """The request's head as the recorder reads it; enforce mode reads a request before it is
    sent with this same function (analysis.enforce.request_record). `all_headers` False: of the
    headers, only those a request's reading looks at (the key, the attribution headers and
    REQUEST_SIDE_HEADERS) are decoded and kept; an SDK sends a score of others."""
    only = None
    if not all_headers:
        only = request_side_names(settings.team_header, settings.feature_header, settings.user_header)
    headers, key = split_secrets(fields, only)
    path, _, query_string = path_and_query.partition("?")
    query = {}
    if query_string:
        for name, value in parse_qsl(query_string, keep_blank_values=True):
            if name.lower() in SECRET_QUERY_PARAMS:
                key = key or value
            else:
                query[name] = value
    team = headers.get(settings.team_header.lower())
    feature = headers.get(settings.feature_header.lower())
    user = headers.get(settings.user_header.lower())
    key_id = key_fingerprint(key, salt) if key else None
    if identity is not None:
        key_id, team, feature, user = identity.key_id, identity.team, identity.feature or feature, identity.user or user
    return RequestHead(headers, path, query, key_id, team, feature, user)


def to_exchange(
    capture: Capture, salt: str, settings: RecorderSettings, instance: str | None
) -> tuple[Exchange, CallContext]:
    head = read_head(capture.request_headers, capture.path, capture.identity, salt, settings)
    exchange = _exchange(
        capture, head.path, split_secrets(capture.response_headers)[0], head.query, head.headers, capture.request_body
    )
    context = CallContext(
        id=capture.id or new_id(capture.started),
        key_id=head.key_id,
        team=head.team,
        feature=head.feature,
        user=head.user,
        instance=instance,
        import_key=capture.import_key,
        answered_by=capture.answered_by,
    )
    return exchange, context


def answer_exchange(capture: Capture) -> Exchange:
    """The answer half of `to_exchange`, for reading a call's answer into the request-side facts
    read before it was sent (analysis.parsers.parse with request_side: enforce mode settling a
    call on the event loop). The request's headers, query string and body are left out and no
    key is fingerprinted: they were read then, and the answer's reading never looks at them; of
    the response's headers, only those it reads (`ANSWER_HEADERS`)."""
    response_headers = headers_named(capture.response_headers, ANSWER_HEADERS)
    return _exchange(capture, capture.path.partition("?")[0], response_headers, {}, {}, b"")


def read_exchange(capture: Capture) -> Exchange:
    """`to_exchange`'s Exchange as reading the whole call needs it (analysis.parsers.parse: enforce
    mode settling a call whose request it could not read apart, on the event loop): of the
    headers, only those the reading looks at (`REQUEST_SIDE_HEADERS`, `ANSWER_HEADERS`); no query
    string and no key fingerprint, which it never looks at. A provider's answer and an SDK's
    request carry a score of headers each, and `to_exchange` decoded them all."""
    request_headers = headers_named(capture.request_headers, _REQUEST_HEADERS_READ)
    response_headers = headers_named(capture.response_headers, ANSWER_HEADERS)
    return _exchange(
        capture, capture.path.partition("?")[0], response_headers, {}, request_headers, capture.request_body
    )


def _exchange(
    capture: Capture,
    path: str,
    response_headers: dict[str, str],
    query: dict[str, str],
    request_headers: dict[str, str],
    request_body: bytes,
) -> Exchange:
    """The Exchange of `capture`'s call with these path, response headers and request parts."""
    target = capture.target
    # Given by position, in Exchange's field order: binding 17 keywords took half the time of
    # building it (enforce mode builds one per settled call, on the proxy's event loop).
    return Exchange(
        target.provider,  # provider
        target.endpoint,  # endpoint
        target.wire_format,  # wire_format
        capture.method,  # method
        capture.host,  # host
        path,  # path
        query,  # query
        request_headers,  # request_headers
        request_body,  # request_body
        capture.status,  # status
        response_headers,  # response_headers
        capture.chunks,  # response_chunks
        capture.started,  # started_at
        capture.ended - capture.started,  # duration
        capture.outcome,  # outcome
        capture.error,  # error
        capture.response_truncated,  # response_over_cap
    )


# The response headers reading an answer looks at: whether it is an event stream
# (Exchange.is_event_stream) and how it is encoded (analysis.recording.accounting.decode_exchange).
ANSWER_HEADERS = frozenset({b"content-type", b"content-encoding"})
_REQUEST_HEADERS_READ = frozenset(name.encode() for name in REQUEST_SIDE_HEADERS)
_LENGTHS_READ = frozenset(len(name) for name in ANSWER_HEADERS | _REQUEST_HEADERS_READ)


def headers_named(fields: HeaderFields, names: frozenset[bytes]) -> dict[str, str]:
    """The headers of `fields` that `names` name (lower-case, of ANSWER_HEADERS and
    REQUEST_SIDE_HEADERS), as `split_secrets` gives them. A provider's answer carries a score of
    others (rate limits, request ids, cookies): decoding all 25 of an OpenAI answer's took a
    settlement 10 us, its two 1.6 us (in-process). Only a name as long as one of them is lowered
    and looked up: that halved the time the 25 headers of an OpenAI answer took."""
    headers = {}
    for name, value in fields:
        if len(name) in _LENGTHS_READ:
            name = name.lower()
            if name in names:
                headers[name.decode()] = value.decode("utf-8", "replace")  # _text's
    return headers
