"""A hostile upstream for the fault suite: the fake provider, plus answers no real provider
should send but some one day will.

`HostileProvider` answers like `tests.fake_provider.FakeProvider` unless the request carries
`x-hostile: KIND[:N]`:

- `big-event:N`: a chat-completions SSE stream whose second event carries N bytes of text,
  sent in 16 KB writes, then the usual usage chunk and `[DONE]`.
- `bomb:N`: a chat completion whose JSON body decodes to about N bytes, sent gzip-compressed
  (about N/1000 bytes on the wire).
- `hang`: reads the request and never answers (for timeouts).
- `echo-key`: answers 401 with an error message that quotes the request's Authorization header.

Sizes are bounded by the caller; the bomb is built once per size and kept.
"""

import asyncio
import functools
import json
import zlib

from tests.fake_provider import CREATED, FakeProvider, ReceivedRequest, _head

WRITE_SIZE = 16 * 1024


@functools.cache
def gzip_bomb(size: int) -> bytes:
    """A gzip-compressed chat completion whose content is about `size` bytes of 'A'."""
    head = json.dumps(
        {"id": "chatcmpl-bomb", "object": "chat.completion", "created": CREATED, "model": "gpt-4o-mini", "choices": []}
    )[:-3]  # up to `"choices": `
    head = head + '[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "'
    tail = '"}}]}'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(head.encode())]
    block = b"A" * (1024 * 1024)
    for _ in range(size // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(tail.encode()))
    parts.append(compressor.flush())
    return b"".join(parts)


def big_event_stream(size: int) -> list[bytes]:
    """SSE events of a chat stream whose second event carries `size` bytes of content."""
    base = {"id": "chatcmpl-big", "object": "chat.completion.chunk", "created": CREATED, "model": "gpt-4o-mini"}

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        value = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            value = {**base, "choices": [], "usage": usage}
        return f"data: {json.dumps(value)}\n\n".encode()

    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "x" * size}),
        chunk({}, "stop"),
        chunk({}, usage={"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}),
        b"data: [DONE]\n\n",
    ]


class HostileProvider(FakeProvider):
    async def _answer(self, request: ReceivedRequest, writer: asyncio.StreamWriter) -> bool:
        kind, _, arg = request.headers.get("x-hostile", "").partition(":")
        if kind == "big-event":
            writer.write(_head(200, [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]))
            body = b"".join(big_event_stream(int(arg)))
            for i in range(0, len(body), WRITE_SIZE):
                piece = body[i : i + WRITE_SIZE]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if kind == "bomb":
            body = gzip_bomb(int(arg))
            headers = [
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("content-length", str(len(body))),
            ]
            writer.write(_head(200, headers) + body)
            await writer.drain()
            return True
        if kind == "hang":
            await asyncio.sleep(3600)
            return False
        if kind == "echo-key":
            secret = request.headers.get("authorization", "")
            body = json.dumps(
                {"error": {"message": f"Incorrect API key provided: {secret}", "type": "invalid_request_error"}}
            ).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            writer.write(_head(401, headers) + body)
            await writer.drain()
            return True
        return await super()._answer(request, writer)
