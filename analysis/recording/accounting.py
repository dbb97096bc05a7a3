"""From what a call looked like (Exchange) and meant (Parsed) to the rows llm-shadow stores.

`account()` runs in the recorder's worker thread, never on the proxy's event loop: it decodes
the bodies, runs the parser, prices the tokens and builds one `requests` row and, when content
is kept, one `contents` row. A parser that fails still gives a row (with `error` saying so and
`usage_source = 'none'`): a call we could not read is still a call that happened.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from analysis import parsers
from analysis.parsers.exchange import Exchange, Parsed, Usage, other_models_json
from analysis.parsers.hashing import prompt_hash
from analysis.parsers.sse import MAX_EVENT_CHARS
from analysis.pricing.check import Checked, Pricing
from analysis.recording.decoding import DecodeError, decode_body, decode_chunks
from analysis.recording.secrets import redact_json, redact_text
from analysis.recording.settings import DEFAULT_MAX_BODY
from analysis.store.clean import clean_row
from analysis.store.rows import ContentRow, RequestRow, as_dict
from analysis.store.schema import CONTENTS, REQUESTS


@dataclass
class CallContext:
    """What the recorder learnt from the request's headers, secrets already reduced to key_id."""

    id: str
    key_id: str | None = None
    team: str | None = None
    feature: str | None = None
    user: str | None = None
    instance: str | None = None
    import_key: str | None = None
    answered_by: str | None = None  # enforce mode answered without the upstream: the policy kind


# How a call enforce mode answered itself ended, by the kind of policy that answered it.
ANSWERED_OUTCOMES = {
    "exact_cache": "cached",
    "semantic_cache": "cached",
    "budget": "blocked",
    "rate_limit": "throttled",
    "wrapped_key": "refused",  # an unknown, revoked or expired wrapped key (addons.wrapped_keys)
}


class ParseFailure(Exception):
    """The exchange could not be read; the message says why (it becomes the row's `error`)."""


def decode_exchange(exchange: Exchange, max_body: int = DEFAULT_MAX_BODY) -> list[str]:
    """Undo the content-encoding of the request and response bodies, in place, keeping at most
    `max_body` decoded bytes of each; return what went over, as row-error notes."""
    over = decode_request(exchange, max_body)
    if decode_response(exchange, max_body):
        over.append(f"response body over {max_body:,} bytes: read up to there")
    return over


def decode_response(exchange: Exchange, max_body: int = DEFAULT_MAX_BODY) -> bool:
    """Undo the content-encoding of the response body, in place, keeping at most `max_body`
    decoded bytes; return whether it holds only the first part of a longer body."""
    response_encoding = exchange.response_headers.get("content-encoding", "")
    exchange.response_chunks, response_over = decode_chunks(exchange.response_chunks, response_encoding, max_body)
    if response_over:
        exchange.response_over_cap = True
    return exchange.response_over_cap


def decode_request(exchange: Exchange, max_body: int = DEFAULT_MAX_BODY) -> list[str]:
    """Undo the content-encoding of the request body, in place, keeping at most `max_body`
    decoded bytes; return what went over, as row-error notes."""
    request_encoding = exchange.request_headers.get("content-encoding", "")
    if request_encoding or len(exchange.request_body) > max_body:
        exchange.request_body, request_over = decode_body(exchange.request_body, request_encoding, max_body)
        if request_over:
            return [f"request body over {max_body:,} bytes: not read"]
    return []


_UNREADABLE = (DecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def parse_exchange(
    exchange: Exchange, max_body: int = DEFAULT_MAX_BODY, request_side: Parsed | None = None, read_text: bool = True
) -> tuple[Parsed, list[str]]:
    """The exchange decoded and parsed, and the row-error notes of decoding. `request_side`:
    the request's facts as `parse_request_side` read them from the same request bytes;
    `read_text`: see analysis.parsers.parse."""
    try:
        over = decode_exchange(exchange, max_body)
        return parsers.parse(exchange, request_side, read_text), over
    except _UNREADABLE as e:
        raise ParseFailure(f"{exchange.wire_format}: {type(e).__name__}: {e}") from e


def parse_request_side(exchange: Exchange, max_body: int = DEFAULT_MAX_BODY) -> tuple[Parsed, Parsed | None]:
    """The facts of an exchange that has no answer yet, and the request-side facts alone where
    the wire format's parser reads them apart (analysis.parsers.read_request; else None): then
    both are the same object, which the caller must not change, as enforce mode reads the
    call's answer into it when the call ends (`call_cost`)."""
    try:
        decode_request(exchange, max_body)  # no answer yet: its body is not decoded
        request_side = parsers.read_request(exchange)
        if request_side is not None:
            return request_side, request_side
        return parsers.parse(exchange), None
    except _UNREADABLE as e:
        raise ParseFailure(f"{exchange.wire_format}: {type(e).__name__}: {e}") from e


def outcome_for_status(status: int | None, outcome: str) -> str:
    """The recorder says how the call ended; a complete HTTP answer is classed by its status."""
    if outcome != "ok" or status is None:
        return outcome
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


def account(
    exchange: Exchange,
    context: CallContext,
    prices: Pricing,
    content: bool = True,
    usage_keys_seen: set[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> tuple[dict, dict | None, ParseFailure | None, list[tuple[str, str]]]:
    """Return (requests row, contents row or None, the parse failure if there was one, the
    problems to count as (kind, detail)).

    The rows are made as `RequestRow`/`ContentRow` (a misspelt column fails here) and returned
    as dicts with every text field cleaned (analysis.store.clean).
    `content`: whether to make the contents row (the recorder's `content` setting).
    `usage_keys_seen`: the usage keys (see Parsed.usage_key) already recorded with their tokens;
    a call reporting one of them again is recorded without tokens, so sums count it once.
    `max_body`: decoded bytes of a body read (see decode_exchange)."""
    failure: ParseFailure | None = None
    notes: list[str] = []
    problems: list[tuple[str, str]] = []
    try:
        parsed, notes = parse_exchange(exchange, max_body)
    except ParseFailure as e:
        parsed, failure = Parsed(), e
    if notes:
        problems.append(("body_too_large", notes[0]))
    if parsed.skipped_events:
        note = (
            f"{parsed.skipped_events} stream event{'s' if parsed.skipped_events > 1 else ''} over "
            f"{MAX_EVENT_CHARS:,} characters not read ({parsed.skipped_chars:,} characters)"
        )
        notes.append(note)
        problems.append(("sse_event_too_large", note))
    if parsed.usage_key and usage_keys_seen is not None:
        if parsed.usage_key in usage_keys_seen:
            parsed.usage, parsed.provider_cost_usd, parsed.other_models = Usage(), None, []
            parsed.error = parsed.error or f"usage of {parsed.usage_key} was recorded by an earlier call"
        else:
            usage_keys_seen.add(parsed.usage_key)
    mark_cut_stream(exchange, parsed)

    usage = parsed.usage
    checked = price(exchange, parsed, prices)
    cost = checked.cost

    if context.answered_by is not None:
        # No upstream call was made: nothing was processed or charged. The answer's own usage
        # (a cached response's) belongs to the call that produced it.
        parsed.usage, parsed.provider_cost_usd = Usage(), None
        exchange.outcome = ANSWERED_OUTCOMES.get(context.answered_by, "cached")

    attribution = {**parsed.attribution}
    for name in ("team", "feature", "user"):
        if getattr(context, name):
            attribution[name] = getattr(context, name)  # a header wins over the body

    response_body_size = sum(len(c) for _, c in exchange.response_chunks)
    row = RequestRow(
        id=context.id,
        ts=datetime.fromtimestamp(exchange.started_at, UTC),
        provider=exchange.provider,
        endpoint=exchange.endpoint,
        host=exchange.host,
        path=exchange.path,
        method=exchange.method,
        status=exchange.status,
        outcome=outcome_for_status(exchange.status, exchange.outcome),
        stream=parsed.stream or exchange.is_event_stream,
        finish_reasons=",".join(r for r in parsed.finish_reasons if r) or None,
        model_requested=parsed.model_requested,
        model=parsed.model or parsed.model_requested,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        audio_input_tokens=usage.audio_input_tokens,
        audio_output_tokens=usage.audio_output_tokens,
        image_input_tokens=usage.image_input_tokens,
        image_output_tokens=usage.image_output_tokens,
        usage_other_models=other_models_json(parsed.other_models),
        usage_source=usage.source,
        cost_usd=0.0 if context.answered_by else cost.cost_usd,
        cost_source="not_sent" if context.answered_by else cost.cost_source,
        price_version=prices.version,
        price_check=checked.check,
        price_check_cost_usd=checked.check_cost_usd,
        price_check_version=checked.check_version,
        latency_ms=None if exchange.duration is None else exchange.duration * 1000,
        ttft_ms=None if parsed.first_token_at is None else parsed.first_token_at * 1000,
        request_bytes=len(exchange.request_body),
        response_bytes=response_body_size,
        key_id=context.key_id,
        team=attribution.get("team"),
        feature=attribution.get("feature"),
        user=attribution.get("user"),
        prompt_hash=prompt_hash(parsed.canonical_request) if parsed.canonical_request else None,
        temperature=parsed.temperature,
        n=parsed.n,
        has_tools=parsed.has_tools,
        has_images=parsed.has_images,
        service_tier=parsed.service_tier,
        batch=parsed.batch,
        usage_key=parsed.usage_key,
        error=redact_text(_first(str(failure) if failure else None, exchange.error, "; ".join(notes), parsed.error)),
        instance=context.instance,
        import_key=context.import_key,
    )
    content_row = None
    if content:
        content_row = ContentRow(
            id=context.id,
            ts=row.ts,
            system_prompt=redact_text(parsed.system_prompt) or None,
            prompt_text=redact_text(parsed.prompt_text) or None,
            request_json=_request_json(exchange.request_body),
            response_text=redact_text(parsed.response_text) or None,
        )
    contents = clean_row(as_dict(content_row), CONTENTS) if content_row is not None else None
    return clean_row(as_dict(row), REQUESTS), contents, failure, problems


def mark_cut_stream(exchange: Exchange, parsed: Parsed) -> None:
    """A stream that stopped short: with an error event of the provider's own (Anthropic's
    overloaded_error) it is a server error; without one, a cut (the exchange's outcome)."""
    if exchange.outcome == "ok" and not parsed.complete and exchange.is_event_stream and not exchange.response_over_cap:
        exchange.outcome = "server_error" if parsed.error else "upstream_cut"


def price(exchange: Exchange, parsed: Parsed, prices: Pricing) -> Checked:
    """The call's cost by the primary table, checked by the other (analysis.pricing.check)."""
    return priced_with(prices.cost, exchange, parsed)


def priced_with[T](cost: Callable[..., T], exchange: Exchange, parsed: Parsed) -> T:
    """`cost` (Pricing.cost, or one table's: they take the same arguments) of a call. The
    arguments are given by name, not built as a dict and unpacked: enforce mode prices every
    call it settles on the proxy's event loop (call_cost)."""
    return cost(
        provider=exchange.provider,
        model=parsed.model or parsed.model_requested,
        model_requested=parsed.model_requested,
        usage=parsed.usage,
        service_tier=parsed.service_tier,
        batch=parsed.batch,
        provider_cost_usd=parsed.provider_cost_usd,
        other_models=parsed.other_models,
        at=exchange.started_at,  # a timestamp: only genai-prices reads it, and makes it a datetime then
    )


@dataclass(slots=True)  # not frozen: a frozen one costs 4x as much to build, and one is built per settled call
class CallCost:
    """What settling a call needs of its `requests` row."""

    outcome: str
    cost_usd: float | None
    tokens: int  # input_tokens + output_tokens (a rate limit's tokens_per_minute counts them)


def call_cost(
    exchange: Exchange, prices: Pricing, max_body: int = DEFAULT_MAX_BODY, request_side: Parsed | None = None
) -> CallCost:
    """The `outcome`, `cost_usd` and tokens that `account` gives a call that went upstream,
    without the rest of the row nor the second table's check: what enforce mode settles a call
    with (analysis.enforce.live), cheaply enough to do it on the proxy's event loop.
    `request_side`: the request's facts as read when it was decided (`parse_request_side`),
    given only when the request was sent as it was read then."""
    try:  # parse_exchange, without the failure's message, which a CallCost does not keep
        if request_side is None:
            decode_exchange(exchange, max_body)
        else:  # the request was read (and decoded) when it was decided: only the answer is read now
            decode_response(exchange, max_body)
        parsed = parsers.parse(exchange, request_side, read_text=False)  # no text in a CallCost
    except _UNREADABLE:
        parsed = Parsed()
    if not parsed.complete:  # mark_cut_stream's first test: nearly every answer is complete
        mark_cut_stream(exchange, parsed)
    usage = parsed.usage
    # The primary table alone: the settlement needs no check (this runs on the proxy's event loop).
    cost = priced_with(prices.primary.cost, exchange, parsed)
    tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
    return CallCost(outcome_for_status(exchange.status, exchange.outcome), cost.cost_usd, tokens)


def _first(*values: str | None) -> str | None:
    for v in values:
        if v:
            return v[:500]
    return None


def _request_json(body: bytes) -> str | None:
    """The request body as compact JSON text, credentials redacted (see recording.secrets)."""
    if not body:
        return None
    try:
        return redact_text(json.dumps(redact_json(json.loads(body)), ensure_ascii=False, separators=(",", ":")))
    except ValueError:
        return None
