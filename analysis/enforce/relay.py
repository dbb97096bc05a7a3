"""A loopback HTTP/1.1 door through which enforce mode answers a call event by event.

mitmproxy hands a response to the client chunk by chunk only as an upstream sends it: a
response an addon sets is sent whole, and a call whose upstream could not be reached (or never
answered) ends in mitmproxy's own 502, which no addon hook can replace (the HTTP layer sends
its error to the client right after the `error` hook). So a call a fallback rule enforces is
sent by mitmproxy to this relay instead (addons.fallback): a server on 127.0.0.1 in the proxy's
own event loop, which runs the call's job. The job sends the client's call itself, rescues it
when it fails, and writes the answer back through a `Responder` as it arrives; mitmproxy
streams that on to the client like any upstream's answer.

Each job is reached by an unguessable path (`add` gives its URL) and runs once; an unknown path
gets 404. Connections are kept alive for mitmproxy's next call.
"""

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from analysis.store.clean import printable

HeaderFields = tuple[tuple[bytes, bytes], ...]
FRAMING = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
MAX_HEAD = 64 * 1024


class Responder:
    """Writes one answer to mitmproxy: `whole`, or `head`, then `send` each piece, then `end` (or
    `abort`, which cuts the connection: mitmproxy then reports the call as cut, to the client too)."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.started = False
        self.aborted = False
        self._chunked = True

    def head(self, status: int, reason: bytes, headers: HeaderFields, length: int | None = None) -> None:
        """The status line and headers; `length` when the whole body's length is known (else
        the body is sent chunked)."""
        self.writer.write(self._head(status, reason, headers, length))

    async def whole(self, status: int, reason: bytes, headers: HeaderFields, body: bytes) -> None:
        """A whole answer, head and body in one write."""
        self.writer.write(self._head(status, reason, headers, len(body)) + body)
        await self.writer.drain()

    def _head(self, status: int, reason: bytes, headers: HeaderFields, length: int | None) -> bytes:
        self.started = True
        self._chunked = length is None
        lines = [b"HTTP/1.1 %d %s" % (status, reason or b"-")]
        lines += [k + b": " + v for k, v in headers if k.lower() not in FRAMING]
        lines.append(b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def send(self, data: bytes) -> None:
        if data:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
            await self.writer.drain()

    async def end(self) -> None:
        if self._chunked:
            self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        self.aborted = True
        self.writer.transport.abort()


Job = Callable[[Responder], Awaitable[None]]


class Relay:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Listen on a free loopback port (once)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD)
            self.port = self._server.sockets[0].getsockname()[1]

    def add(self, job: Job) -> tuple[str, str]:
        """Register `job`; its token and the URL that runs it."""
        token = secrets.token_urlsafe(18)
        self._jobs[token] = job
        return token, f"http://127.0.0.1:{self.port}/{token}"

    def discard(self, token: str) -> None:
        """Forget a job that will not run (its call ended before reaching the relay)."""
        self._jobs.pop(token, None)

    def __len__(self) -> int:
        return len(self._jobs)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                token = await _read_request(reader)
                if token is None:
                    break
                job = self._jobs.pop(token, None)
                if job is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    await writer.drain()
                    break
                responder = Responder(writer)
                try:
                    await job(responder)
                except Exception:  # the job counted what it could; mitmproxy reports the cut call
                    responder.aborted = True
                if responder.aborted or not responder.started:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # mitmproxy closed the connection, or sent what no job asked for
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """The token of the next request on the connection (its body is read and dropped: the job
    holds the client's request); None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ValueError(f"not an HTTP request line: {printable(lines[0].decode('latin-1'))}")
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    elif length:
        await reader.readexactly(length)
    return parts[1].decode("latin-1").lstrip("/")
