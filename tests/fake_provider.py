"""A fake LLM provider: a small asyncio HTTP/1.1 server speaking the OpenAI, Anthropic and
Gemini wire formats, for tests and benchmarks.

It answers deterministically (same request, same bytes), so a response fetched directly and one
fetched through the proxy can be compared byte for byte. Tests steer it with request headers:

- `x-fake-status: 429` answers with that status and the provider's error body shape.
- `x-fake-gzip: 1` gzips the response body (content-encoding: gzip).
- `x-fake-cut: N` ends a stream abruptly after N events (the connection is closed).
- `x-fake-gate: NAME` sends the first stream event, then waits for `provider.gates[NAME]` (a
  threading.Event the test sets) before sending the rest.
- `x-fake-delay-ms: N` waits N ms before every stream event after the first.
- `x-fake-body: TEXT` answers 200 with TEXT as a JSON-typed body (for unreadable bodies);
  `x-fake-encoding: NAME` labels that body with content-encoding NAME (without encoding it).

It runs on its own event loop in a thread (`FakeProvider().start()`), so synchronous tests can
use the real SDKs against it. Every request it receives is kept in `provider.requests`.
"""

import asyncio
import gzip
import json
import threading
from dataclasses import dataclass, field

REPLY = "Hello! This is the fake provider answering your question in a few words."
CREATED = 1_760_000_000


@dataclass
class ReceivedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    events: list[bytes] | None = None  # SSE stream


class FakeProvider:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.requests: list[ReceivedRequest] = []
        self.gates: dict[str, threading.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())

    def start(self) -> "FakeProvider":
        self._thread = threading.Thread(target=self._run, name="fake-provider", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake provider did not start")
        return self

    def stop(self) -> None:
        for gate in self.gates.values():
            gate.set()
        if self._loop and self._server:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        if self._loop:
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                keep_alive = await self._answer(request, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: ReceivedRequest, writer: asyncio.StreamWriter) -> bool:
        reply = route(request)
        gzip_body = request.headers.get("x-fake-gzip") == "1"
        if reply.events is None:
            body = gzip.compress(reply.body, mtime=0) if gzip_body else reply.body
            headers = reply.headers + [("content-length", str(len(body)))]
            if gzip_body:
                headers.append(("content-encoding", "gzip"))
            writer.write(_head(reply.status, headers) + body)
            await writer.drain()
            return True

        writer.write(_head(reply.status, reply.headers + [("transfer-encoding", "chunked")]))
        cut = int(request.headers.get("x-fake-cut", "0") or 0)
        gate = request.headers.get("x-fake-gate")
        delay = int(request.headers.get("x-fake-delay-ms", "0") or 0) / 1000
        for i, event in enumerate(reply.events):
            if cut and i == cut:
                await writer.drain()
                writer.transport.abort()
                return False
            if i == 1 and gate:
                await asyncio.get_running_loop().run_in_executor(None, self.gate(gate).wait, 10)
            elif i > 0 and delay:
                await asyncio.sleep(delay)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return ReceivedRequest(method, target, headers, body)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 529: "Overloaded"}


# --- routing -----------------------------------------------------------------------------------


def route(request: ReceivedRequest) -> Reply:
    path = request.target.split("?", 1)[0]
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _json_reply(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
    status = int(request.headers.get("x-fake-status", "200"))
    if "x-fake-body" in request.headers:
        headers = [("content-type", "application/json")]
        if "x-fake-encoding" in request.headers:
            headers.append(("content-encoding", request.headers["x-fake-encoding"]))
        return Reply(200, headers, request.headers["x-fake-body"].encode())
    if path.endswith("/chat/completions"):
        return openai_error(status) if status != 200 else openai_chat(body)
    if path.endswith("/responses"):
        return openai_error(status) if status != 200 else openai_responses(body)
    if path.endswith("/embeddings"):
        return openai_error(status) if status != 200 else openai_embeddings(body)
    if path.endswith("/messages"):
        return anthropic_error(status) if status != 200 else anthropic_messages(body)
    if ":generateContent" in path or ":streamGenerateContent" in path:
        if status != 200:
            return gemini_error(status)
        return gemini_generate(body, path, stream=":streamGenerateContent" in path)
    return _json_reply(404, {"error": {"message": f"no route for {path}"}})


def _json_reply(status: int, value: dict, extra: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, [("content-type", "application/json")] + (extra or []),
                 json.dumps(value).encode())


def _sse(values: list[dict | str], named: bool = False) -> list[bytes]:
    events = []
    for value in values:
        if isinstance(value, str):
            events.append(f"data: {value}\n\n".encode())
        elif named:
            events.append(f"event: {value['type']}\ndata: {json.dumps(value)}\n\n".encode())
        else:
            events.append(f"data: {json.dumps(value)}\n\n".encode())
    return events


def _stream_reply(events: list[bytes]) -> Reply:
    return Reply(200, [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
                 events=events)


def reply_words() -> list[str]:
    words = REPLY.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def prompt_token_count(body: dict) -> int:
    """A deterministic stand-in for the provider's tokenizer: 1 token per 4 bytes of JSON."""
    return max(1, len(json.dumps(body.get("messages") or body.get("input") or body.get("contents") or "")) // 4)


# --- OpenAI --------------------------------------------------------------------------------------

def openai_usage(body: dict, cached: int = 0, reasoning: int = 0) -> dict:
    completion = len(reply_words()) + reasoning
    prompt = prompt_token_count(body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def openai_chat(body: dict) -> Reply:
    model = body.get("model", "gpt-4o-mini")
    served = model + "-2024-07-18" if model == "gpt-4o-mini" else model
    tools = body.get("tools")
    usage = openai_usage(body)
    if tools:
        call = {"id": "call_fake1", "type": "function",
                "function": {"name": tools[0]["function"]["name"], "arguments": '{"city": "Paris"}'}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": REPLY}
        finish = "stop"
    base = {"id": "chatcmpl-fake123", "created": CREATED, "model": served, "system_fingerprint": "fp_fake"}
    if not body.get("stream"):
        return _json_reply(200, {**base, "object": "chat.completion",
                                 "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                                 "usage": usage}, [("openai-processing-ms", "12")])
    chunk = {**base, "object": "chat.completion.chunk"}
    values: list[dict | str] = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    if tools:
        values.append({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call, "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None}]})
        values.append({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}, "finish_reason": None}]})
    else:
        values += [{**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in reply_words()]
    values.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        values.append({**chunk, "choices": [], "usage": usage})
    values.append("[DONE]")
    return _stream_reply(_sse(values))


def openai_responses(body: dict) -> Reply:
    model = body.get("model", "gpt-4.1-mini")
    usage = {"input_tokens": prompt_token_count(body), "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": len(reply_words()), "output_tokens_details": {"reasoning_tokens": 0}}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    output = [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}]
    response = {"id": "resp_fake", "object": "response", "created_at": CREATED, "status": "completed",
                "model": model, "output": output, "usage": usage}
    if not body.get("stream"):
        return _json_reply(200, response)
    values: list[dict | str] = [{"type": "response.created", "sequence_number": 0,
                                 "response": {**response, "status": "in_progress", "output": [], "usage": None}}]
    for i, w in enumerate(reply_words()):
        values.append({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_fake",
                       "output_index": 0, "content_index": 0, "delta": w})
    values.append({"type": "response.completed", "sequence_number": len(values), "response": response})
    return _stream_reply(_sse(values, named=True))


def openai_embeddings(body: dict) -> Reply:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    tokens = sum(max(1, len(str(i)) // 4) for i in inputs)
    return _json_reply(200, {"object": "list", "model": body.get("model", "text-embedding-3-small"),
                             "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def openai_error(status: int) -> Reply:
    kind = {429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}.get(status, "invalid_request_error")
    extra = [("retry-after", "1")] if status == 429 else []
    return _json_reply(status, {"error": {"message": f"fake error {status}", "type": kind, "param": None, "code": kind}}, extra)


# --- Anthropic -----------------------------------------------------------------------------------

def anthropic_messages(body: dict) -> Reply:
    model = body.get("model", "claude-sonnet-4-20250514")
    usage = {"input_tokens": prompt_token_count(body), "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0, "output_tokens": len(reply_words())}
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": REPLY}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return _json_reply(200, message, [("request-id", "req_fake")])
    values: list[dict | str] = [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    values += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in reply_words()]
    values += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}},
        {"type": "message_stop"},
    ]
    return _stream_reply(_sse(values, named=True))


def anthropic_error(status: int) -> Reply:
    kind = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}.get(status, "invalid_request_error")
    return _json_reply(status, {"type": "error", "error": {"type": kind, "message": f"fake error {status}"}})


# --- Gemini --------------------------------------------------------------------------------------

def gemini_generate(body: dict, path: str, stream: bool) -> Reply:
    model = path.rsplit("/", 1)[-1].split(":", 1)[0]
    prompt = prompt_token_count(body)
    words = reply_words()

    def chunk(text: str, done: bool, count: int) -> dict:
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if done:
            candidate["finishReason"] = "STOP"
        return {"candidates": [candidate],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": count,
                                  "totalTokenCount": prompt + count},
                "modelVersion": model, "responseId": "fake-response"}

    if not stream:
        return _json_reply(200, chunk(REPLY, True, len(words)))
    values = [chunk(w, i == len(words) - 1, i + 1) for i, w in enumerate(words)]
    return _stream_reply(_sse(values))


def gemini_error(status: int) -> Reply:
    kind = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "INVALID_ARGUMENT")
    return _json_reply(status, {"error": {"code": status, "message": f"fake error {status}", "status": kind}})
