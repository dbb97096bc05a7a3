"""OpenAI on the wire: chat completions (JSON and SSE), the Responses API, embeddings, errors.

Shapes follow the real exchanges recorded in ../shared/data/cassettes (pydantic-ai's VCR cassettes):
pretty-printed JSON bodies, `chat.completion.chunk` SSE with `obfuscation` padding and a final usage
chunk only when `stream_options.include_usage` is set, `event:`-typed Responses API streams.
"""

import base64
import hashlib
import math
import random
import struct

from sample_traffic import ids
from sample_traffic.calls import Call
from sample_traffic.tokens import count, openai_chat_prompt_tokens, split_tokens, timing
from sample_traffic.wire_common import (
    CLIENT_GONE,
    UPSTREAM_CUT,
    PromptCaches,
    WireExchange,
    compact_json,
    cut_point,
    failure_timing,
    http_date,
    pretty_json,
    sdk_request_headers,
    stream_groups,
    stream_timing,
)

HOST = "api.openai.com"
SERVER_IPS = ["162.159.140.245", "172.66.0.243"]
ORGANIZATION = "kestrel-bank-fake"
SERVED_MODEL = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "o4-mini": "o4-mini-2025-04-16",
    "o3": "o3-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "text-embedding-3-small": "text-embedding-3-small",
}
FINGERPRINT = {
    "gpt-4o-mini": "fp_560af6e559",
    "gpt-4o": "fp_cbf1785567",
    "gpt-4.1": "fp_b3f1157249",
    "gpt-4.1-mini": "fp_6f2eabb9a5",
    "o4-mini": None,
    "o3": None,
    "gpt-5": None,
}
LIMITS = {
    "gpt-4o-mini": (30_000, 150_000_000),
    "gpt-4o": (10_000, 30_000_000),
    "gpt-4.1": (10_000, 30_000_000),
    "gpt-4.1-mini": (30_000, 150_000_000),
    "o4-mini": (30_000, 150_000_000),
    "o3": (10_000, 30_000_000),
    "gpt-5": (10_000, 30_000_000),
    "text-embedding-3-small": (10_000, 10_000_000),
}
PROJECT_RPM = {"data-etl": 6}  # a per-project cap the admins set; other projects share the org's TPM
CACHE_TTL_S = 600  # automatic prompt caching keeps a prefix for 5-10 minutes of inactivity
CACHE_MIN_TOKENS = 1024


def render(call: Call, rng: random.Random, caches: PromptCaches) -> WireExchange:
    if call.api == "embeddings":
        return _render_embeddings(call, rng)
    if call.api == "responses":
        return _render_responses(call, rng, caches)
    return _render_chat(call, rng, caches)


# --- requests ---------------------------------------------------------------------------------


def _system_text(call: Call) -> str:
    return call.system + (f"\n\n{call.context}" if call.context else "")


def chat_messages(call: Call) -> list[dict]:
    messages = [{"role": "system", "content": _system_text(call)}] if call.system else []
    for m in call.messages:
        if m.role == "tool":
            messages.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
        elif m.tool_calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
                        for tc in m.tool_calls
                    ],
                }
            )
        else:
            messages.append({"role": m.role, "content": m.text})
    return messages


def chat_tools(call: Call) -> list[dict]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in call.tools
    ]


def chat_request(call: Call) -> dict:
    body: dict = {"messages": chat_messages(call), "model": call.model}
    params = dict(call.params)
    for name in ("max_tokens", "n", "response_format"):
        if name in params:
            body[name] = params.pop(name)
    if call.stream:
        body["stream"] = True
        if call.include_usage:
            body["stream_options"] = {"include_usage": True}
    body.update(params)  # temperature, top_p
    if call.tools:
        body["tool_choice"] = "auto"
        body["tools"] = chat_tools(call)
    if call.body_user:
        body["user"] = call.body_user
    return body


def responses_request(call: Call) -> dict:
    body: dict = {
        "input": [{"content": m.text, "role": m.role} for m in call.messages],
        "instructions": call.system,
        "model": call.model,
    }
    body.update(call.params)
    if call.stream:
        body["stream"] = True
    return body


def embeddings_request(call: Call) -> dict:
    inputs = call.embedding_inputs
    return {
        "input": inputs[0] if len(inputs) == 1 else inputs,
        "model": call.model,
        "dimensions": call.params.get("dimensions", 1536),
        "encoding_format": "base64",
    }


def request_headers(call: Call) -> list[tuple[str, str]]:
    return sdk_request_headers(call, HOST, ("authorization", f"Bearer {call.key.secret}"), [])


def _project(call: Call) -> str:
    return "proj_FAKE" + hashlib.sha256(call.key.secret.encode()).hexdigest()[:15]


def response_headers(
    call: Call, rng: random.Random, at: float, processing_s: float, stream: bool, prompt_tokens: int
) -> list[tuple[str, str]]:
    limit_requests, limit_tokens = LIMITS[call.model]
    headers = [
        ("date", http_date(at)),
        ("content-type", "text/event-stream; charset=utf-8" if stream else "application/json"),
    ]
    headers.append(("transfer-encoding", "chunked") if stream else ("content-encoding", "gzip"))
    headers += [
        ("openai-organization", ORGANIZATION),
        ("openai-processing-ms", str(max(1, int(processing_s * 1000)))),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-remaining-requests", str(limit_requests - rng.randint(1, 40))),
        ("x-ratelimit-remaining-tokens", str(limit_tokens - prompt_tokens - rng.randint(0, 90_000))),
        ("x-request-id", ids.openai_request(rng)),
        ("cf-ray", ids.cf_ray(rng)),
    ]
    return headers


# --- usage and prompt caching -----------------------------------------------------------------


def cached_tokens(call: Call, caches: PromptCaches, prompt_tokens: int) -> int:
    """Automatic prompt caching: a warm prefix of >= 1024 tokens is read in 128-token steps."""
    if not call.context:
        return 0
    prefix = openai_chat_prompt_tokens(chat_messages(call)[:1]) - 3
    if prefix < CACHE_MIN_TOKENS or prompt_tokens < CACHE_MIN_TOKENS:
        return 0
    scope = ("openai", call.model, hashlib.sha256(_system_text(call).encode()).hexdigest())
    hit = caches.hit(scope, call.at, CACHE_TTL_S)
    caches.touch(scope, call.at)
    return (prefix // 128) * 128 if hit else 0


def completion_tokens(call: Call) -> int:
    text = count(call.reply.text) if call.reply.text else 0
    tools = sum(count(tc.name) + count(tc.arguments) + 7 for tc in call.reply.tool_calls)
    return text + tools + call.reply.reasoning_tokens


def chat_usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- chat completions -------------------------------------------------------------------------


def _assistant_message(call: Call) -> dict:
    message: dict = {"role": "assistant", "content": call.reply.text or None, "refusal": None, "annotations": []}
    if call.reply.tool_calls:
        message["tool_calls"] = [
            {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
            for tc in call.reply.tool_calls
        ]
    return message


def _finish_reason(call: Call) -> str:
    return "tool_calls" if call.reply.tool_calls else "stop"


def chat_completion(call: Call, rng: random.Random, usage: dict) -> dict:
    return {
        "id": ids.openai_completion(rng),
        "object": "chat.completion",
        "created": int(call.at),
        "model": SERVED_MODEL[call.model],
        "choices": [
            {"index": 0, "message": _assistant_message(call), "logprobs": None, "finish_reason": _finish_reason(call)}
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT[call.model],
    }


def chat_stream_events(call: Call, rng: random.Random, usage: dict) -> list[bytes]:
    """The `data:` events of a streamed chat completion, [DONE] included."""
    base = {
        "id": ids.openai_completion(rng),
        "object": "chat.completion.chunk",
        "created": int(call.at),
        "model": SERVED_MODEL[call.model],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT[call.model],
    }

    def chunk(delta: dict, finish: str | None = None, choices: bool = True, usage_value=None) -> bytes:
        data = dict(base)
        data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []
        if call.include_usage:
            data["usage"] = usage_value
        data["obfuscation"] = ids.obfuscation(rng)
        return b"data: " + compact_json(data) + b"\n\n"

    events = []
    if call.reply.tool_calls:
        tc = call.reply.tool_calls[0]
        events.append(
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"index": 0, "id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": ""}}
                    ],
                    "refusal": None,
                }
            )
        )
        for piece in stream_groups(rng, split_tokens(tc.arguments)):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in stream_groups(rng, split_tokens(call.reply.text)):
            events.append(chunk({"content": piece}))
    events.append(chunk({}, finish=_finish_reason(call)))
    if call.include_usage:
        events.append(chunk({}, choices=False, usage_value=usage))
    events.append(b"data: [DONE]\n\n")
    return events


def _render_chat(call: Call, rng: random.Random, caches: PromptCaches) -> WireExchange:
    body = compact_json(chat_request(call))
    if call.fault in ("rate_limited", "server_error", "overloaded"):
        return _render_failure(call, rng, body)
    prompt = openai_chat_prompt_tokens(chat_messages(call), chat_tools(call) or None)
    cached = cached_tokens(call, caches, prompt)
    completion = completion_tokens(call)
    usage = chat_usage(prompt, completion, cached, call.reply.reasoning_tokens)
    t = timing(rng, call.model, prompt - cached, completion, call.reply.reasoning_tokens)
    if not call.stream:
        payload = pretty_json(chat_completion(call, rng, usage))
        return _exchange(call, rng, body, payload, t, headers_at=t.total_s - 0.002, stream=False, prompt=prompt)
    return _stream_exchange(call, rng, body, chat_stream_events(call, rng, usage), t, prompt)


# --- Responses API ----------------------------------------------------------------------------


def _response_object(call: Call, resp_id: str, status: str, output: list, usage: dict | None) -> dict:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(call.at),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": call.system,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": SERVED_MODEL[call.model],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": call.params.get("reasoning", {}).get("effort", "medium"), "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _responses_usage(prompt: int, completion: int, reasoning: int) -> dict:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _responses_output(call: Call, rs_id: str, msg_id: str) -> list[dict]:
    return [
        {"id": rs_id, "type": "reasoning", "summary": []},
        {
            "id": msg_id,
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": call.reply.text}],
            "role": "assistant",
        },
    ]


def responses_stream_events(
    call: Call, rng: random.Random, resp_id: str, rs_id: str, msg_id: str, usage: dict
) -> list[bytes]:
    seq = iter(range(10_000))

    def event(kind: str, **fields) -> bytes:
        return (
            f"event: {kind}\ndata: ".encode()
            + compact_json({"type": kind, "sequence_number": next(seq), **fields})
            + b"\n\n"
        )

    message_item = {"id": msg_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    where = {"item_id": msg_id, "output_index": 1, "content_index": 0}
    events = [
        event("response.created", response=_response_object(call, resp_id, "in_progress", [], None)),
        event("response.in_progress", response=_response_object(call, resp_id, "in_progress", [], None)),
        event("response.output_item.added", output_index=0, item={"id": rs_id, "type": "reasoning", "summary": []}),
        event("response.output_item.done", output_index=0, item={"id": rs_id, "type": "reasoning", "summary": []}),
        event("response.output_item.added", output_index=1, item=message_item),
        event("response.content_part.added", item_id=msg_id, output_index=1, content_index=0, part=part),
    ]
    for piece in stream_groups(rng, split_tokens(call.reply.text)):
        events.append(
            event("response.output_text.delta", **where, delta=piece, logprobs=[], obfuscation=ids.obfuscation(rng))
        )
    output = _responses_output(call, rs_id, msg_id)
    events += [
        event("response.output_text.done", **where, text=call.reply.text, logprobs=[]),
        event(
            "response.content_part.done",
            item_id=msg_id,
            output_index=1,
            content_index=0,
            part={**part, "text": call.reply.text},
        ),
        event("response.output_item.done", output_index=1, item=output[1]),
        event("response.completed", response=_response_object(call, resp_id, "completed", output, usage)),
    ]
    return events


def _render_responses(call: Call, rng: random.Random, caches: PromptCaches) -> WireExchange:
    body = compact_json(responses_request(call))
    if call.fault in ("rate_limited", "server_error", "overloaded"):
        return _render_failure(call, rng, body)
    prompt = openai_chat_prompt_tokens(
        [{"role": "system", "content": call.system}] + [{"role": m.role, "content": m.text} for m in call.messages]
    )
    completion = completion_tokens(call)
    usage = _responses_usage(prompt, completion, call.reply.reasoning_tokens)
    t = timing(rng, call.model, prompt, completion, call.reply.reasoning_tokens)
    resp_id = ids.openai_response(rng)
    rs_id, msg_id = ids.openai_response(rng, "rs"), ids.openai_response(rng, "msg")
    if not call.stream:
        output = _responses_output(call, rs_id, msg_id)
        payload = pretty_json(_response_object(call, resp_id, "completed", output, usage))
        return _exchange(call, rng, body, payload, t, headers_at=t.total_s - 0.002, stream=False, prompt=prompt)
    events = responses_stream_events(call, rng, resp_id, rs_id, msg_id, usage)
    return _stream_exchange(call, rng, body, events, t, prompt, first_events=6)


# --- embeddings -------------------------------------------------------------------------------


def embedding_vector(text: str, dimensions: int) -> str:
    """A unit vector fixed by the text (same text, same vector), base64 float32 as the API sends."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    values = [rng.gauss(0, 1) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return base64.b64encode(struct.pack(f"<{dimensions}f", *(v / norm for v in values))).decode()


def _render_embeddings(call: Call, rng: random.Random) -> WireExchange:
    body = compact_json(embeddings_request(call))
    if call.fault in ("rate_limited", "server_error", "overloaded"):
        return _render_failure(call, rng, body)
    dimensions = call.params.get("dimensions", 1536)
    tokens = sum(count(text, "cl100k_base") for text in call.embedding_inputs)
    payload = pretty_json(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embedding_vector(text, dimensions)}
                for i, text in enumerate(call.embedding_inputs)
            ],
            "model": SERVED_MODEL[call.model],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    t = timing(rng, call.model, tokens, 0)
    return _exchange(call, rng, body, payload, t, headers_at=t.total_s - 0.001, stream=False, prompt=tokens)


# --- shared response assembly -----------------------------------------------------------------


def _exchange(
    call: Call, rng: random.Random, body: bytes, payload: bytes, t, *, headers_at: float, stream: bool, prompt: int
) -> WireExchange:
    return WireExchange(
        url=_url(call),
        request_headers=request_headers(call),
        request_body=body,
        status=200,
        response_headers=response_headers(call, rng, call.at + headers_at, headers_at, stream, prompt),
        response_body=payload,
        server_ip=rng.choice(SERVER_IPS),
        headers_at=round(headers_at, 4),
        ended_at=t.total_s,
        gzip=not stream,
    )


def _stream_exchange(
    call: Call, rng: random.Random, body: bytes, events: list[bytes], t, prompt: int, first_events: int = 1
) -> WireExchange:
    """A stream's headers arrive with its first token; a cut stream stops part-way, no [DONE]."""
    headers_at = round(max(0.05, t.ttft_s - 0.01), 4)
    exchange = _exchange(call, rng, body, b"".join(events), t, headers_at=headers_at, stream=True, prompt=prompt)
    if call.fault in ("cut", "client_cancel"):
        kept = max(first_events, cut_point(rng, len(events)))
        exchange.response_body = b"".join(events[:kept])
        exchange.ended_at = None
        exchange.error = UPSTREAM_CUT if call.fault == "cut" else CLIENT_GONE
        exchange.error_at = stream_timing(t, kept / len(events))
    return exchange


def _url(call: Call) -> str:
    path = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "embeddings": "/v1/embeddings"}
    return f"https://{HOST}{path[call.api]}"


def _requested_tokens(call: Call) -> int:
    """What the rate limiter charges a request up front: its input plus max_tokens."""
    if call.api == "embeddings":
        return sum(count(text, "cl100k_base") for text in call.embedding_inputs)
    messages = (
        chat_messages(call)
        if call.api == "chat"
        else [{"role": "system", "content": call.system}] + [{"role": m.role, "content": m.text} for m in call.messages]
    )
    return openai_chat_prompt_tokens(messages, chat_tools(call) or None) + call.params.get("max_tokens", 0)


def error_body(call: Call, rng: random.Random, status: int, request_id: str) -> dict:
    if status == 429:
        wait = f"{int((call.retry_after_s or 1) * 1000)}ms"
        if call.key.name in PROJECT_RPM:
            kind, unit, limit, requested = "requests", "requests per min (RPM)", PROJECT_RPM[call.key.name], 1
            used = limit
        else:
            kind, unit, limit = "tokens", "tokens per min (TPM)", LIMITS[call.model][1] // 50
            requested = _requested_tokens(call)
            used = limit - rng.randint(0, requested - 1)
        return {
            "error": {
                "message": (
                    f"Rate limit reached for {call.model} in project {_project(call)} on {unit}: "
                    f"Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. "
                    "Visit https://platform.openai.com/account/rate-limits to learn more."
                ),
                "type": kind,
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    if status == 503:
        return {
            "error": {
                "message": "The server is overloaded or not ready yet.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    return {
        "error": {
            "message": (
                "The server had an error while processing your request. Sorry about that! You can retry "
                "your request, or contact us through our help center at help.openai.com if the error "
                f"persists. (Please include the request ID {request_id} in your message.)"
            ),
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def _render_failure(call: Call, rng: random.Random, body: bytes) -> WireExchange:
    status = {"rate_limited": 429, "overloaded": 503}.get(call.fault, 500)
    t = failure_timing(rng, call.fault)
    headers = response_headers(call, rng, call.at + t.total_s, t.ttft_s, False, 0)
    request_id = dict(headers)["x-request-id"]
    if status == 429:
        headers.insert(2, ("retry-after", str(max(1, math.ceil(call.retry_after_s or 1)))))
        limited = "requests" if call.key.name in PROJECT_RPM else "tokens"
        headers.append((f"x-ratelimit-reset-{limited}", f"{int((call.retry_after_s or 1) * 1000)}ms"))
    return WireExchange(
        url=_url(call),
        request_headers=request_headers(call),
        request_body=body,
        status=status,
        response_headers=headers,
        response_body=pretty_json(error_body(call, rng, status, request_id)),
        server_ip=rng.choice(SERVER_IPS),
        headers_at=t.ttft_s,
        ended_at=t.total_s,
        gzip=True,
    )
