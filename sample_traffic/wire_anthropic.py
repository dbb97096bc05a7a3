"""Anthropic Messages on the wire: JSON and SSE (message_start ... message_stop), prompt caching
with a cache breakpoint after the system context, tool use, and Anthropic's error bodies
(429 rate_limit_error, 500 api_error, 529 overloaded_error, and the mid-stream `event: error`).
"""

import json
import random

from sample_traffic import ids
from sample_traffic.calls import Call
from sample_traffic.tokens import provider_count, split_tokens, timing
from sample_traffic.wire_common import (
    CLIENT_GONE,
    UPSTREAM_CUT,
    PromptCaches,
    WireExchange,
    compact_json,
    cut_point,
    failure_timing,
    http_date,
    sdk_request_headers,
    stream_groups,
    stream_timing,
)

HOST = "api.anthropic.com"
SERVER_IPS = ["160.79.104.10"]
ORGANIZATION_ID = "0f6a1b2c-FAKE-4d5e-9a8b-7c6d5e4f3a2b"
SERVED_MODEL = {"claude-sonnet-4-5": "claude-sonnet-4-5-20250929", "claude-haiku-4-5": "claude-haiku-4-5-20251001"}
TOOL_USE_SYSTEM_TOKENS = 346  # the tool-use system prompt Anthropic adds when tools are offered
CACHE_TTL_S = 300  # ephemeral cache: 5 minutes, refreshed on every read


def render(call: Call, rng: random.Random, caches: PromptCaches) -> WireExchange:
    body = compact_json(messages_request(call))
    if call.fault in ("rate_limited", "server_error") or (call.fault == "overloaded" and not call.stream):
        return _render_failure(call, rng, body)
    usage = _usage(call, caches)
    uncached = usage["input_tokens"] + usage["cache_creation_input_tokens"]
    t = timing(rng, call.model, uncached, usage["output_tokens"])
    headers_at = round(max(0.05, t.ttft_s - 0.01), 4) if call.stream else round(t.total_s - 0.002, 4)
    exchange = WireExchange(
        url=f"https://{HOST}/v1/messages",
        request_headers=_request_headers(call),
        request_body=body,
        status=200,
        response_headers=_response_headers(call, rng, call.at + headers_at, call.stream),
        response_body=b"",
        server_ip=SERVER_IPS[0],
        headers_at=headers_at,
        ended_at=t.total_s,
        gzip=not call.stream,
    )
    if not call.stream:
        exchange.response_body = compact_json(_message(call, ids.anthropic_message(rng), usage))
        return exchange
    events = stream_events(call, rng, usage)
    if call.fault in ("cut", "client_cancel", "overloaded"):
        kept = max(2, cut_point(rng, len(events)))
        exchange.error_at = stream_timing(t, kept / len(events))
        events = events[:kept]
        if call.fault == "overloaded":  # the API reports the overload inside the stream, then closes
            events.append(
                _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            )
            exchange.ended_at = exchange.error_at
            exchange.error_at = None
        else:
            exchange.ended_at = None
            exchange.error = UPSTREAM_CUT if call.fault == "cut" else CLIENT_GONE
    exchange.response_body = b"".join(events)
    return exchange


# --- request ----------------------------------------------------------------------------------


def _content(m) -> str | list[dict]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}]
    if m.tool_calls:
        return [
            {"type": "tool_use", "id": tc.id, "name": tc.name, "input": json.loads(tc.arguments)} for tc in m.tool_calls
        ]
    return m.text


def system_blocks(call: Call) -> list[dict] | str:
    if not call.context:
        return call.system
    context = {"type": "text", "text": call.context}
    if call.cache_control:
        context["cache_control"] = {"type": "ephemeral"}
    return [{"type": "text", "text": call.system}, context]


def messages_request(call: Call) -> dict:
    params = dict(call.params)
    body: dict = {
        "max_tokens": params.pop("max_tokens", 1024),
        "messages": [{"role": "user" if m.role == "tool" else m.role, "content": _content(m)} for m in call.messages],
        "model": call.model,
    }
    if call.body_user:
        body["metadata"] = {"user_id": call.body_user}
    if call.stream:
        body["stream"] = True
    body["system"] = system_blocks(call)
    body.update(params)
    if call.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in call.tools
        ]
    return body


def _request_headers(call: Call) -> list[tuple[str, str]]:
    return sdk_request_headers(call, HOST, ("x-api-key", call.key.secret), [("anthropic-version", "2023-06-01")])


# --- usage ------------------------------------------------------------------------------------


def _prefix_tokens(call: Call) -> int:
    """Tokens up to the cache breakpoint: tools, then the system blocks."""
    tools = 0
    if call.tools:
        tools = TOOL_USE_SYSTEM_TOKENS + sum(
            provider_count(
                "anthropic", json.dumps({"name": t.name, "description": t.description, "input_schema": t.parameters})
            )
            for t in call.tools
        )
    system = provider_count("anthropic", call.system) + (
        provider_count("anthropic", call.context) if call.context else 0
    )
    return tools + system + 4


def _message_tokens(call: Call) -> int:
    total = 0
    for m in call.messages:
        total += 4 + provider_count("anthropic", m.text) if m.text else 4
        total += sum(provider_count("anthropic", tc.name + tc.arguments) + 10 for tc in m.tool_calls)
    return total


def _usage(call: Call, caches: PromptCaches) -> dict:
    prefix, rest = _prefix_tokens(call), _message_tokens(call)
    read = written = 0
    if call.cache_control:
        scope = ("anthropic", call.model, call.system, call.context)
        if caches.hit(scope, call.at, CACHE_TTL_S):
            read = prefix
        else:
            written = prefix
        caches.touch(scope, call.at)
    else:
        rest += prefix
    output = (provider_count("anthropic", call.reply.text) if call.reply.text else 0) + sum(
        provider_count("anthropic", tc.name + tc.arguments) + 12 for tc in call.reply.tool_calls
    )
    return {
        "input_tokens": rest,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard",
        "inference_geo": "not_available",
    }


# --- response ---------------------------------------------------------------------------------


def _stop_reason(call: Call) -> str:
    return "tool_use" if call.reply.tool_calls else "end_turn"


def _message(call: Call, msg_id: str, usage: dict) -> dict:
    content = [{"type": "text", "text": call.reply.text}] if call.reply.text else []
    content += [
        {"type": "tool_use", "id": tc.id, "name": tc.name, "input": json.loads(tc.arguments)}
        for tc in call.reply.tool_calls
    ]
    return {
        "model": SERVED_MODEL[call.model],
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": _stop_reason(call),
        "stop_sequence": None,
        "usage": usage,
    }


def _event(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: ".encode() + compact_json(data) + b"\n\n"


def stream_events(call: Call, rng: random.Random, usage: dict) -> list[bytes]:
    start_usage = {**usage, "output_tokens": 1}
    message = {**_message(call, ids.anthropic_message(rng), start_usage), "content": [], "stop_reason": None}
    events = [_event("message_start", {"type": "message_start", "message": message})]
    index = 0
    if call.reply.text:
        events.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
        )
        events.append(_event("ping", {"type": "ping"}))
        for piece in stream_groups(rng, split_tokens(call.reply.text)):
            events.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                )
            )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for tc in call.reply.tool_calls:
        events.append(
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": tc.id, "name": tc.name, "input": {}},
                },
            )
        )
        if index == 0:
            events.append(_event("ping", {"type": "ping"}))
        for piece in stream_groups(rng, split_tokens(tc.arguments)):
            events.append(
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    final_usage = {
        k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    events.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(call), "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events


def _response_headers(call: Call, rng: random.Random, at: float, stream: bool) -> list[tuple[str, str]]:
    headers = [("date", http_date(at))]
    if stream:
        headers += [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("transfer-encoding", "chunked"),
            ("cache-control", "no-cache"),
        ]
    else:
        headers += [("content-type", "application/json"), ("content-encoding", "gzip")]
    headers += [
        ("anthropic-ratelimit-input-tokens-remaining", str(2_000_000 - rng.randint(0, 60_000) // 1000 * 1000)),
        ("anthropic-ratelimit-output-tokens-remaining", str(400_000 - rng.randint(0, 20_000) // 1000 * 1000)),
        ("request-id", ids.anthropic_request(rng)),
        ("cf-ray", ids.cf_ray(rng)),
    ]
    return headers


def _render_failure(call: Call, rng: random.Random, body: bytes) -> WireExchange:
    status, kind, message = {
        "rate_limited": (
            429,
            "rate_limit_error",
            f"This request would exceed the rate limit for your organization ({ORGANIZATION_ID}) "
            "of 2,000,000 input tokens per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
            "current usage. Please reduce the prompt length or the maximum tokens requested, or "
            "try again later.",
        ),
        "overloaded": (529, "overloaded_error", "Overloaded"),
        "server_error": (500, "api_error", "Internal server error"),
    }[call.fault]
    t = failure_timing(rng, call.fault)
    headers = _response_headers(call, rng, call.at + t.total_s, stream=False)
    request_id = dict(headers)["request-id"]
    headers.insert(3, ("x-should-retry", "true"))
    if status == 429:
        headers.insert(3, ("retry-after", str(max(1, round(call.retry_after_s or 1)))))
    payload = compact_json({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
    return WireExchange(
        url=f"https://{HOST}/v1/messages",
        request_headers=_request_headers(call),
        request_body=body,
        status=status,
        response_headers=headers,
        response_body=payload,
        server_ip=SERVER_IPS[0],
        headers_at=t.ttft_s,
        ended_at=t.total_s,
        gzip=True,
    )
