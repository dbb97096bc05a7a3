"""The load loop the proxy benchmarks share (bench/overhead.py, bench/enforce.py).

A bare asyncio HTTP/1.1 client, so the client costs as little as possible and the same in every
run: `throughput` keeps CONCURRENCY keep-alive connections busy, `latencies` sends one call at
a time on one keep-alive connection; `start_proxy` starts a proxy process and reads the port it
listens on (`running_proxies`: several at once). Every loop is bounded in count and in time
(TIME_LIMIT_S); everything listens on 127.0.0.1.
"""

import asyncio
import contextlib
import math
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 60


def request_bytes(body: bytes, extra: str = "", path: str = "/v1/chat/completions") -> bytes:
    """A JSON POST with a bearer key; `extra` is more header lines, each ending in CRLF."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[float | None, bytes]:
    """Read one HTTP/1.1 response; return (time the first body byte arrived, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers = head.decode("latin-1").lower()
    first_byte = None
    if "transfer-encoding: chunked" in headers:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if first_byte is None:
                first_byte = time.perf_counter()
            if size == 0:
                return first_byte, body
            body += data[:-2]
    length = int(re.search(r"content-length: (\d+)", headers)[1])
    body = await reader.readexactly(length)
    return time.perf_counter(), body


async def burst(port: int, requests: list[bytes], concurrency: int) -> float:
    """Requests per second sending `requests` from `concurrency` keep-alive connections (until
    all were sent, or TIME_LIMIT_S passed)."""
    pending = list(reversed(requests))
    deadline = time.monotonic() + TIME_LIMIT_S

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while pending and time.monotonic() < deadline:
                writer.write(pending.pop())
                await read_response(reader)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (len(requests) - len(pending)) / (time.perf_counter() - started)


async def throughput(port: int, request: bytes, total: int, concurrency: int) -> float:
    """Requests per second with `concurrency` connections sending `request` `total` times."""
    return await burst(port, [request] * total, concurrency)


async def timed(port: int, requests: list[bytes]) -> list[float]:
    """Milliseconds each request took, one at a time on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    deadline = time.monotonic() + TIME_LIMIT_S
    try:
        for request in requests:
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            writer.write(request)
            await read_response(reader)
            out.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()
    return out


async def latencies(port: int, request: bytes, calls: int) -> list[float]:
    """Milliseconds each of `calls` calls took, one at a time on one keep-alive connection."""
    return await timed(port, [request] * calls)


def summarize(rounds: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Each target's rounds ({"rps", "lat", "cpu_ms"}) as one figure each: the median
    throughput and CPU per call, and latency percentiles over every round's calls."""
    return {
        name: {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": percentile([x for r in runs for x in r["lat"]], 50),
            "p99": percentile([x for r in runs for x in r["lat"]], 99),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in runs) if runs[0]["cpu_ms"] is not None else math.nan,
        }
        for name, runs in rounds.items()
    }


def start_proxy(command: list[str], root: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """Start a proxy (mitmdump or `llm-shadow proxy` of the checkout at `root`); return it and
    the port it listens on."""
    return _start_all([(command, root)])[0]


@contextlib.contextmanager
def running_proxies(commands: list[tuple[list[str], Path]]) -> Iterator[list[tuple[subprocess.Popen, int]]]:
    """Several proxies (command, checkout) started at once, in this order, without waiting for
    one to listen before starting the next: each with the port it listens on, while the block
    runs; stopped when it ends."""
    started = _start_all(commands)
    try:
        yield started
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(30)


def _start_all(commands: list[tuple[list[str], Path]]) -> list[tuple[subprocess.Popen, int]]:
    starting = [_Starting(command, root) for command, root in commands]
    try:
        return [(proxy.process, proxy.listening()) for proxy in starting]
    except RuntimeError:
        for proxy in starting:
            proxy.process.kill()
        raise


class _Starting:
    """A proxy process started, its output read until it says where it listens."""

    def __init__(self, command: list[str], root: Path):
        env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.command = command
        self.process = subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.port: int | None = None
        self.found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            m = re.search(r"listening at .*:(\d+)", line)
            if m and self.port is None:
                self.port = int(m[1])
                self.found.set()

    def listening(self) -> int:
        if not self.found.wait(60) or self.port is None:
            raise RuntimeError(f"{self.command[:3]} did not start")
        return self.port


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the process `pid` has used so far; None where /proc is not
    there. On a machine shared with other work, CPU per call varies far less than wall time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]
