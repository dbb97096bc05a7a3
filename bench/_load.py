"""The load loop the proxy benchmarks share (bench/overhead.py, bench/enforce.py).

A bare asyncio HTTP/1.1 client, so the client costs as little as possible and the same in every
run: `throughput` keeps CONCURRENCY keep-alive connections busy, `latencies` sends one call at
a time on one keep-alive connection; `start_proxy` starts a proxy process and reads the port it
listens on. Every loop is bounded in count and in time (TIME_LIMIT_S); everything listens on
127.0.0.1.
"""

import asyncio
import os
import re
import statistics
import subprocess
import threading
import time
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


async def throughput(port: int, request: bytes, total: int, concurrency: int) -> float:
    """Requests per second with `concurrency` connections sending `request` until `total`
    were sent (or TIME_LIMIT_S passed)."""
    done = 0
    deadline = time.monotonic() + TIME_LIMIT_S

    async def worker():
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while done < total and time.monotonic() < deadline:
                done += 1
                writer.write(request)
                await read_response(reader)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def latencies(port: int, request: bytes, calls: int) -> list[float]:
    """Milliseconds each of `calls` calls took, one at a time on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    deadline = time.monotonic() + TIME_LIMIT_S
    try:
        for _ in range(calls):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            writer.write(request)
            await read_response(reader)
            out.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()
    return out


def start_proxy(command: list[str], root: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """Start a proxy (mitmdump or `llm-shadow proxy` of the checkout at `root`); return it and
    the port it listens on."""
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = None
    found = threading.Event()

    def read():
        nonlocal port
        for line in process.stdout:
            m = re.search(r"listening at .*:(\d+)", line)
            if m and port is None:
                port = int(m[1])
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(30):
        process.kill()
        raise RuntimeError(f"{command[:3]} did not start")
    return process, port


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
