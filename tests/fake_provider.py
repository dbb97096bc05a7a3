"""A fake LLM provider: a small asyncio HTTP/1.1 server speaking the OpenAI, Anthropic and
Gemini wire formats, for tests and benchmarks.

It answers deterministically (same request, same bytes), so a response fetched directly and one
fetched through the proxy can be compared byte for byte. Tests steer it with request headers:

- `x-fake-status: 429` answers with that status and the provider's error body shape.
- `x-fake-gzip: 1` gzips the response body (content-encoding: gzip).
- `x-fake-cut: N` ends a stream abruptly after N events (the connection is closed).
- `x-fake-gate: NAME` sends the first stream event, then waits for `provider.gates[NAME]` (a
  threading.Event the test sets) before sending the rest; NAME is added to `provider.finished`
  once the stream's last byte is sent.
- `x-fake-delay-ms: N` waits N ms before every stream event after the first.
- `x-fake-body: TEXT` answers 200 with TEXT as a JSON-typed body (for unreadable bodies);
  `x-fake-encoding: NAME` labels that body with content-encoding NAME (without encoding it).
- `x-fake-usage: {JSON}` is laid over the usage object the answer reports, in the provider's
  own shape and convention (nested objects merge, `null` removes a field; the total is
  recomputed unless given): cached, cache-write, reasoning and thought tokens, OpenRouter's
  `cost`, DeepSeek's `prompt_cache_hit_tokens`, Gemini's `thoughtsTokenCount`, ... A stream
  reports it where the provider does (the last chunk, response.completed, message_delta).
- `x-fake-model: NAME` names the model that served an OpenAI chat or embeddings call (Azure
  answers with the model behind the deployment named in the path).
- `x-fake-start-usage: {JSON}` (Anthropic streams) is laid over message_start's usage, for
  counts that message_delta later revises.

Without touching the client's headers (what a proxy resends must be the client's request),
`provider.fail_next(503, times=2, model="gpt-4o")` makes the next two calls for that model
(or for any model: `model="*"`) answer with that status, as an upstream in trouble would.

Endpoints: OpenAI chat, legacy completions, Responses (with a reasoning item when the request
asks for reasoning), embeddings and batches (Azure's /openai/deployments/... paths too);
Anthropic messages and message batches; Gemini generateContent, streamGenerateContent (SSE,
thought parts when includeThoughts) and embeddings.

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
        self.finished: set[str] = set()  # gates whose stream was sent to its end
        self.failures: dict[str, list[int]] = {}  # model or "*" -> statuses of its next calls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, status: int, times: int = 1, model: str = "*") -> None:
        """Answer the next `times` calls for `model` ("*": any) with `status`."""
        self.failures.setdefault(model, []).extend([status] * times)

    def _failure_for(self, request: ReceivedRequest) -> int | None:
        try:
            model = json.loads(request.body or b"{}").get("model")
        except (ValueError, AttributeError):
            model = None
        for key in (model, "*"):
            queued = self.failures.get(key) if key else None
            if queued:
                return queued.pop(0)
        return None

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
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
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
        failure = self._failure_for(request)
        if failure is not None:
            steered = ReceivedRequest(
                request.method, request.target, {**request.headers, "x-fake-status": str(failure)}, request.body
            )
            reply = route(steered)
        else:
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
        if gate:
            self.finished.add(gate)
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


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Overloaded",
}


# --- routing -----------------------------------------------------------------------------------


class BadSteering(ValueError):
    """A steering header (x-fake-...) the fake provider cannot read."""


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
    try:
        usage = _json_header(request, "x-fake-usage")
        start_usage = _json_header(request, "x-fake-start-usage")
    except BadSteering as e:
        return _json_reply(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
    served = request.headers.get("x-fake-model")
    if path.endswith("/chat/completions"):
        return openai_error(status) if status != 200 else openai_chat(body, usage, served)
    if path.endswith("/completions"):
        return openai_error(status) if status != 200 else openai_completions(body, usage)
    if path.endswith("/responses"):
        return openai_error(status) if status != 200 else openai_responses(body, usage)
    if path.endswith("/embeddings"):
        return openai_error(status) if status != 200 else openai_embeddings(body, usage, served)
    if ":rawPredict" in path or ":streamRawPredict" in path:  # Claude on Vertex AI
        body.setdefault("model", path.rsplit("/", 1)[-1].split(":", 1)[0])
        return anthropic_error(status) if status != 200 else anthropic_messages(body, usage, start_usage)
    if "/messages/batches" in path:
        return anthropic_error(status) if status != 200 else anthropic_batches(request.method, path, body, usage)
    if path.endswith("/messages"):
        return anthropic_error(status) if status != 200 else anthropic_messages(body, usage, start_usage)
    if "/batches" in path:
        return openai_error(status) if status != 200 else openai_batches(request.method, path, body, usage)
    if ":generateContent" in path or ":streamGenerateContent" in path:
        if status != 200:
            return gemini_error(status)
        return gemini_generate(body, path, stream=":streamGenerateContent" in path, extra=usage)
    if ":embedContent" in path or ":batchEmbedContents" in path:
        return gemini_error(status) if status != 200 else gemini_embed(body, path)
    return _json_reply(404, {"error": {"message": f"no route for {path}"}})


def _json_header(request: ReceivedRequest, name: str) -> dict:
    try:
        value = json.loads(request.headers.get(name, "{}"))
    except ValueError as e:
        raise BadSteering(f"{name} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise BadSteering(f"{name} is not a JSON object")
    return value


def merge_usage(base: dict, extra: dict) -> dict:
    """`base` with `extra` laid over it: nested objects merge, a None value removes the field."""
    merged = dict(base)
    for key, value in extra.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_usage(merged[key], value)
        else:
            merged[key] = value
    return merged


def _json_reply(status: int, value: dict, extra: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, [("content-type", "application/json")] + (extra or []), json.dumps(value).encode())


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
    return Reply(
        200, [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")], events=events
    )


def reply_words() -> list[str]:
    words = REPLY.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def prompt_token_count(body: dict) -> int:
    """A deterministic stand-in for the provider's tokenizer: 1 token per 4 bytes of JSON."""
    prompt = body.get("messages") or body.get("input") or body.get("contents") or body.get("prompt")
    return max(1, len(json.dumps(prompt or "")) // 4)


# --- OpenAI --------------------------------------------------------------------------------------


def openai_usage(body: dict, cached: int = 0, reasoning: int = 0) -> dict:
    completion = len(reply_words()) + reasoning
    prompt = prompt_token_count(body)
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


def served_tier(body: dict) -> str:
    """The service tier OpenAI says served the call: the one asked for; `auto` or none is `default`."""
    requested = body.get("service_tier")
    return "default" if requested in (None, "auto") else requested


def _with_total(usage: dict, extra: dict, parts: tuple[str, ...], total: str) -> dict:
    """Recompute the total from its parts, unless the test gave the total itself."""
    if total not in extra:
        usage[total] = sum(usage.get(part) or 0 for part in parts)
    return usage


def openai_chat(body: dict, extra: dict | None = None, served: str | None = None) -> Reply:
    extra = extra or {}
    model = body.get("model", "gpt-4o-mini")
    served = served or (model + "-2024-07-18" if model == "gpt-4o-mini" else model)
    tools = body.get("tools")
    usage = _with_total(
        merge_usage(openai_usage(body), extra), extra, ("prompt_tokens", "completion_tokens"), "total_tokens"
    )
    if tools:
        call = {
            "id": "call_fake1",
            "type": "function",
            "function": {"name": tools[0]["function"]["name"], "arguments": '{"city": "Paris"}'},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": REPLY}
        finish = "stop"
    base = {
        "id": "chatcmpl-fake123",
        "created": CREATED,
        "model": served,
        "system_fingerprint": "fp_fake",
        "service_tier": served_tier(body),
    }
    if not body.get("stream"):
        return _json_reply(
            200,
            {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            },
            [("openai-processing-ms", "12")],
        )
    chunk = {**base, "object": "chat.completion.chunk"}
    values: list[dict | str] = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    if tools:
        values.append(
            {
                **chunk,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, **call, "function": {"name": call["function"]["name"], "arguments": ""}}
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
        values.append(
            {
                **chunk,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
    else:
        values += [
            {**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in reply_words()
        ]
    values.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        values.append({**chunk, "choices": [], "usage": usage})
    values.append("[DONE]")
    return _stream_reply(_sse(values))


def openai_completions(body: dict, extra: dict) -> Reply:
    """The legacy Completions API (`/v1/completions`): a prompt in, `choices[].text` out."""
    model = body.get("model", "gpt-3.5-turbo-instruct")
    prompt = prompt_token_count(body)
    usage = _with_total(
        merge_usage({"prompt_tokens": prompt, "completion_tokens": len(reply_words())}, extra),
        extra,
        ("prompt_tokens", "completion_tokens"),
        "total_tokens",
    )
    base = {"id": "cmpl-fake123", "object": "text_completion", "created": CREATED, "model": model}
    if not body.get("stream"):
        choice = {"text": REPLY, "index": 0, "logprobs": None, "finish_reason": "stop"}
        return _json_reply(200, {**base, "choices": [choice], "usage": usage})
    values: list[dict | str] = [
        {**base, "choices": [{"text": w, "index": 0, "logprobs": None, "finish_reason": None}]} for w in reply_words()
    ]
    values.append({**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        values.append({**base, "choices": [], "usage": usage})
    values.append("[DONE]")
    return _stream_reply(_sse(values))


THOUGHT = "The user asks a simple question; answer briefly."


def openai_responses(body: dict, extra: dict | None = None) -> Reply:
    """The Responses API. A request with `reasoning` gets a reasoning item (with a summary)
    before the message; a stream sends the full event sequence the SDK's helpers expect."""
    extra = extra or {}
    model = body.get("model", "gpt-4.1-mini")
    usage = {
        "input_tokens": prompt_token_count(body),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(reply_words()),
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    usage = _with_total(merge_usage(usage, extra), extra, ("input_tokens", "output_tokens"), "total_tokens")
    reasoning = {"type": "reasoning", "id": "rs_fake", "summary": [{"type": "summary_text", "text": THOUGHT}]}
    message = {
        "type": "message",
        "id": "msg_fake",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": REPLY, "annotations": []}],
    }
    output = [reasoning, message] if body.get("reasoning") else [message]
    response = {
        "id": "resp_fake",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": model,
        "output": output,
        "usage": usage,
        "error": None,
        "service_tier": served_tier(body),
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    if not body.get("stream"):
        return _json_reply(200, response)
    values: list[dict] = [
        {"type": "response.created", "response": {**response, "status": "in_progress", "output": [], "usage": None}},
        {
            "type": "response.in_progress",
            "response": {**response, "status": "in_progress", "output": [], "usage": None},
        },
    ]
    index = 0
    if body.get("reasoning"):
        values += [
            {"type": "response.output_item.added", "output_index": 0, "item": {**reasoning, "summary": []}},
            {
                "type": "response.reasoning_summary_part.added",
                "item_id": "rs_fake",
                "output_index": 0,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            },
            {
                "type": "response.reasoning_summary_text.delta",
                "item_id": "rs_fake",
                "output_index": 0,
                "summary_index": 0,
                "delta": THOUGHT,
            },
            {
                "type": "response.reasoning_summary_text.done",
                "item_id": "rs_fake",
                "output_index": 0,
                "summary_index": 0,
                "text": THOUGHT,
            },
            {
                "type": "response.reasoning_summary_part.done",
                "item_id": "rs_fake",
                "output_index": 0,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": THOUGHT},
            },
            {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
        ]
        index = 1
    text_event = {"item_id": "msg_fake", "output_index": index, "content_index": 0}
    values += [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **text_event,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    values += [{"type": "response.output_text.delta", **text_event, "delta": w, "logprobs": []} for w in reply_words()]
    values += [
        {"type": "response.output_text.done", **text_event, "text": REPLY, "logprobs": []},
        {"type": "response.content_part.done", **text_event, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": index, "item": message},
        {"type": "response.completed", "response": response},
    ]
    for number, value in enumerate(values):
        value["sequence_number"] = number
    return _stream_reply(_sse(values, named=True))


def openai_embeddings(body: dict, extra: dict | None = None, served: str | None = None) -> Reply:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    tokens = sum(max(1, len(str(i)) // 4) for i in inputs)
    usage = merge_usage({"prompt_tokens": tokens, "total_tokens": tokens}, extra or {})
    return _json_reply(
        200,
        {
            "object": "list",
            "model": served or body.get("model", "text-embedding-3-small"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
            "usage": usage,
        },
    )


def openai_batches(method: str, path: str, body: dict, extra: dict) -> Reply:
    """The Batch API: creating a batch answers `validating`; retrieving it answers a completed
    batch with the model and the Responses-style usage of all its requests."""
    batch = {
        "id": "batch_fake",
        "object": "batch",
        "endpoint": body.get("endpoint", "/v1/chat/completions"),
        "errors": None,
        "input_file_id": body.get("input_file_id", "file-fake-in"),
        "completion_window": "24h",
        "created_at": CREATED,
        "metadata": body.get("metadata"),
    }
    if method == "POST" and path.endswith("/batches"):
        return _json_reply(
            200, {**batch, "status": "validating", "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        )
    if method == "GET" and path.endswith("/batches"):
        return _json_reply(
            200,
            {"object": "list", "data": [batch], "first_id": "batch_fake", "last_id": "batch_fake", "has_more": False},
        )
    usage = {
        "input_tokens": 40,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    usage = _with_total(merge_usage(usage, extra), extra, ("input_tokens", "output_tokens"), "total_tokens")
    batch["id"] = path.rstrip("/").split("/")[-1]  # retrieving answers the batch asked for
    return _json_reply(
        200,
        {
            **batch,
            "status": "completed",
            "output_file_id": "file-fake-out",
            "completed_at": CREATED + 600,
            "model": "gpt-4o-mini-2024-07-18",
            "request_counts": {"total": 2, "completed": 2, "failed": 0},
            "usage": usage,
        },
    )


def openai_error(status: int) -> Reply:
    kind = {429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}.get(status, "invalid_request_error")
    extra = [("retry-after", "1")] if status == 429 else []
    return _json_reply(
        status, {"error": {"message": f"fake error {status}", "type": kind, "param": None, "code": kind}}, extra
    )


# --- Anthropic -----------------------------------------------------------------------------------


def anthropic_usage(body: dict, extra: dict) -> dict:
    """Anthropic's usage shape: input_tokens EXCLUDES the cache reads and writes."""
    return merge_usage(
        {
            "input_tokens": prompt_token_count(body),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": len(reply_words()),
            "service_tier": "standard",
        },
        extra,
    )


def anthropic_message(body: dict, usage: dict) -> dict:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-sonnet-4-20250514"),
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_messages(body: dict, extra: dict | None = None, start_extra: dict | None = None) -> Reply:
    """A message. Streamed, message_start carries the usage known at the start (output_tokens
    1, laid over with `start_extra`) and message_delta the cumulative final counts, as the API
    sends them (input and cache counts included: server tools can raise them midway)."""
    usage = anthropic_usage(body, extra or {})
    message = anthropic_message(body, usage)
    if not body.get("stream"):
        return _json_reply(200, message, [("request-id", "req_fake")])
    start_usage = merge_usage({**usage, "output_tokens": 1}, start_extra or {})
    delta_usage = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "output_tokens_details",
        )
        if k in usage
    }
    values: list[dict | str] = [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": start_usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    values += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in reply_words()
    ]
    values += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta_usage},
        {"type": "message_stop"},
    ]
    return _stream_reply(_sse(values, named=True))


ANTHROPIC_BATCH_ID = "msgbatch_fake"


def anthropic_batches(method: str, path: str, body: dict, extra: dict) -> Reply:
    """Message Batches: create (in progress), retrieve (ended) and results (JSON lines, one
    succeeded message per request of the batch, each with the usage `extra` gives).

    The results_url is relative: the fake does not know the address its clients used (the
    real API gives an absolute api.anthropic.com URL); the SDK joins it with its base URL.
    """
    batch = {
        "id": ANTHROPIC_BATCH_ID,
        "type": "message_batch",
        "created_at": "2025-10-09T12:00:00Z",
        "expires_at": "2025-10-10T12:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
    }
    requests = body.get("requests") or []
    if method == "POST" and path.endswith("/batches"):
        return _json_reply(
            200,
            {
                **batch,
                "processing_status": "in_progress",
                "ended_at": None,
                "results_url": None,
                "request_counts": {
                    "processing": len(requests),
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
            },
        )
    if path.endswith("/results"):
        lines = []
        for i in range(2):
            request = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": f"question {i}"}]}
            message = anthropic_message(request, anthropic_usage(request, extra))
            lines.append(json.dumps({"custom_id": f"request-{i}", "result": {"type": "succeeded", "message": message}}))
        return Reply(200, [("content-type", "application/x-jsonl")], ("\n".join(lines) + "\n").encode())
    return _json_reply(
        200,
        {
            **batch,
            "processing_status": "ended",
            "ended_at": "2025-10-09T12:10:00Z",
            "results_url": f"/v1/messages/batches/{ANTHROPIC_BATCH_ID}/results",
            "request_counts": {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0},
        },
    )


def anthropic_error(status: int) -> Reply:
    kind = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}.get(status, "invalid_request_error")
    return _json_reply(status, {"type": "error", "error": {"type": kind, "message": f"fake error {status}"}})


# --- Gemini --------------------------------------------------------------------------------------


def _camel_or_snake(mapping: dict, camel: str, snake: str) -> dict:
    value = mapping.get(camel, mapping.get(snake))
    return value if isinstance(value, dict) else {}


def gemini_generate(body: dict, path: str, stream: bool, extra: dict | None = None) -> Reply:
    """generateContent / streamGenerateContent. The final (or only) response carries the
    usageMetadata laid over with `extra` (thoughtsTokenCount, cachedContentTokenCount,
    toolUsePromptTokenCount, ...); earlier stream chunks carry running counts. A request
    asking for includeThoughts gets a thought part first."""
    extra = extra or {}
    model = path.rsplit("/", 1)[-1].split(":", 1)[0]
    prompt = extra.get("promptTokenCount", prompt_token_count(body))
    words = reply_words()
    config = _camel_or_snake(body, "generationConfig", "generation_config")
    thinking = _camel_or_snake(config, "thinkingConfig", "thinking_config")
    include_thoughts = bool(thinking.get("includeThoughts", thinking.get("include_thoughts")))
    final_usage = merge_usage({"promptTokenCount": prompt, "candidatesTokenCount": len(words)}, extra)
    final_usage = _with_total(
        final_usage,
        extra,
        ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount"),
        "totalTokenCount",
    )

    def response(parts: list[dict], done: bool, usage: dict) -> dict:
        candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if done:
            candidate["finishReason"] = "STOP"
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "fake-response"}

    thought_parts = [{"text": THOUGHT, "thought": True}] if include_thoughts else []
    if not stream:
        return _json_reply(200, response([*thought_parts, {"text": REPLY}], True, final_usage))
    values = (
        [response(thought_parts, False, {"promptTokenCount": prompt, "totalTokenCount": prompt})]
        if thought_parts
        else []
    )
    for i, w in enumerate(words):
        last = i == len(words) - 1
        running = {"promptTokenCount": prompt, "candidatesTokenCount": i + 1, "totalTokenCount": prompt + i + 1}
        values.append(response([{"text": w}], last, final_usage if last else running))
    return _stream_reply(_sse(values))


def gemini_embed(body: dict, path: str) -> Reply:
    """embedContent / batchEmbedContents: vectors only (the Gemini API reports no usage)."""
    if ":batchEmbedContents" in path:
        count = len(body.get("requests") or [])
        return _json_reply(200, {"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in range(count)]})
    return _json_reply(200, {"embedding": {"values": [0.1, 0.2, 0.3]}})


def gemini_error(status: int) -> Reply:
    kind = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "INVALID_ARGUMENT")
    return _json_reply(status, {"error": {"code": status, "message": f"fake error {status}", "status": kind}})
