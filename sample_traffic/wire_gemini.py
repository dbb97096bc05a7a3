"""Gemini generateContent on the wire: pretty-printed JSON, `streamGenerateContent?alt=sse` with
CRLF-separated `data:` chunks that each repeat the running usageMetadata (thoughtsTokenCount for
the thinking model), and Google's error bodies (429 RESOURCE_EXHAUSTED with RetryInfo, 503
UNAVAILABLE, 500 INTERNAL).
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
    pretty_json,
    sdk_request_headers,
    stream_timing,
)

HOST = "generativelanguage.googleapis.com"
SERVER_IPS = ["142.250.185.74", "172.217.16.138", "216.58.206.42"]
STREAM_CHUNK_TOKENS = (18, 60)  # Gemini streams fewer, larger chunks than OpenAI


def render(call: Call, rng: random.Random, caches: PromptCaches) -> WireExchange:
    body = compact_json(generate_request(call))
    if call.fault in ("rate_limited", "server_error", "overloaded"):
        return _render_failure(call, rng, body)
    prompt = _prompt_tokens(call)
    candidates = provider_count("gemini", call.reply.text)
    thoughts = call.reply.reasoning_tokens
    t = timing(rng, call.model, prompt, candidates, thoughts)
    response_id = ids.gemini_response(rng)
    if not call.stream:
        headers_at = round(t.total_s - 0.002, 4)
        payload = pretty_json(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": call.reply.text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": _usage(prompt, candidates, thoughts),
                "modelVersion": call.model,
                "responseId": response_id,
            }
        )
        return _exchange(call, rng, body, payload, headers_at, t.total_s, stream=False)
    chunks = stream_chunks(call, rng, prompt, thoughts, response_id)
    headers_at = round(max(0.05, t.ttft_s - 0.01), 4)
    exchange = _exchange(call, rng, body, b"".join(chunks), headers_at, t.total_s, stream=True)
    if call.fault in ("cut", "client_cancel") and len(chunks) > 1:
        kept = cut_point(rng, len(chunks))
        exchange.response_body = b"".join(chunks[:kept])
        exchange.ended_at = None
        exchange.error = UPSTREAM_CUT if call.fault == "cut" else CLIENT_GONE
        exchange.error_at = stream_timing(t, kept / len(chunks))
    return exchange


def generate_request(call: Call) -> dict:
    contents = [
        {"parts": [{"text": m.text}], "role": "model" if m.role == "assistant" else "user"} for m in call.messages
    ]
    config = {"temperature": call.params.get("temperature", 1.0)}
    if call.reply.reasoning_tokens:
        config["thinkingConfig"] = {"thinkingBudget": 2048 if call.stream else 4096}
    return {
        "contents": contents,
        "systemInstruction": {"parts": [{"text": call.system}], "role": "user"},
        "generationConfig": config,
    }


def _prompt_tokens(call: Call) -> int:
    return provider_count("gemini", call.system) + sum(provider_count("gemini", m.text) + 2 for m in call.messages)


def _usage(prompt: int, candidates: int | None, thoughts: int) -> dict:
    usage: dict = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + (candidates or 0) + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ": "), ensure_ascii=False).encode() + b"\r\n\r\n"


def stream_chunks(call: Call, rng: random.Random, prompt: int, thoughts: int, response_id: str) -> list[bytes]:
    pieces = split_tokens(call.reply.text)
    chunks, sent, i = [], "", 0
    while i < len(pieces):
        n = rng.randint(*STREAM_CHUNK_TOKENS)
        text = "".join(pieces[i : i + n])
        i += n
        sent += text
        candidate: dict = {"content": {"parts": [{"text": text}], "role": "model"}}
        if i >= len(pieces):
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        chunks.append(
            _sse(
                {
                    "candidates": [candidate],
                    "usageMetadata": _usage(prompt, provider_count("gemini", sent), thoughts),
                    "modelVersion": call.model,
                    "responseId": response_id,
                }
            )
        )
    return chunks


def _url(call: Call) -> str:
    method = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
    return f"https://{HOST}/v1beta/models/{call.model}:{method}"


def _response_headers(at: float, processing_s: float, stream: bool) -> list[tuple[str, str]]:
    if stream:
        headers = [
            ("content-type", "text/event-stream"),
            ("content-disposition", "attachment"),
            ("transfer-encoding", "chunked"),
        ]
    else:
        headers = [("content-type", "application/json; charset=UTF-8"), ("content-encoding", "gzip")]
    return headers + [
        ("date", http_date(at)),
        ("server", "scaffolding on HTTPServer2"),
        ("server-timing", f"gfet4t7; dur={max(1, int(processing_s * 1000))}"),
    ]


def _exchange(
    call: Call, rng: random.Random, body: bytes, payload: bytes, headers_at: float, ended_at: float, stream: bool
) -> WireExchange:
    return WireExchange(
        url=_url(call),
        request_headers=sdk_request_headers(call, HOST, ("x-goog-api-key", call.key.secret), []),
        request_body=body,
        status=200,
        response_headers=_response_headers(call.at + headers_at, headers_at, stream),
        response_body=payload,
        server_ip=rng.choice(SERVER_IPS),
        headers_at=headers_at,
        ended_at=ended_at,
        gzip=not stream,
    )


def _render_failure(call: Call, rng: random.Random, body: bytes) -> WireExchange:
    if call.fault == "rate_limited":
        error = {
            "code": 429,
            "message": (
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
            ),
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{max(1, round(call.retry_after_s or 1))}s",
                }
            ],
        }
    elif call.fault == "overloaded":
        error = {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
    else:
        error = {
            "code": 500,
            "message": "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
            "status": "INTERNAL",
        }
    t = failure_timing(rng, call.fault)
    exchange = _exchange(call, rng, body, pretty_json({"error": error}), t.ttft_s, t.total_s, stream=False)
    exchange.status = error["code"]
    return exchange
