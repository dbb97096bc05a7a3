"""Benchmark: what the recorder adds on top of bare mitmdump, and on top of a direct call.

In one run, against the same fast local upstream (tests/fake_provider.py):
  1. direct       the client calls the upstream itself
  2. mitmdump     bare `mitmdump --mode reverse:...` (buffers whole responses, its default)
  3. mitmdump-stream  bare mitmdump streaming every body (`stream_large_bodies=1`): the floor
                  for time-to-first-token through any mitmproxy addon
  4. llm-shadow   `llm-shadow proxy --upstream ...` (recording into a scratch data dir)
All four take turns, round after round, in an order that rotates, the proxies started afresh for
each round (throughput is the median of the rounds; latencies are pooled). For each:
throughput (requests/s with CONCURRENCY keep-alive connections, JSON chat calls), latency
p50/p99 one call at a time, and time-to-first-token on a slow stream (the upstream waits
STREAM_DELAY_MS between events), both on a keep-alive connection as SDKs use. Prints a
table and the ratios the targets speak of:
  throughput >= 0.85 x mitmdump, p50 added latency within 0.5 ms of mitmdump's,
  TTFT within 2 ms of a direct call.
Every loop is bounded in count and time; everything listens on 127.0.0.1.

    python bench/overhead.py [--requests 3000] [--concurrency 16] [--latency-calls 300]
"""

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._load import (  # noqa: E402
    TIME_LIMIT_S,
    latencies,
    percentile,
    read_response,
    request_bytes,
    running_proxies,
    throughput,
)
from tests.fake_provider import FakeProvider  # noqa: E402

BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Tell me a story."}],
    }
).encode()
STREAM_DELAY_MS = 20
CALL = request_bytes(BODY)
MITMDUMP = [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]


async def ttfts(port: int, calls: int) -> list[float]:
    """Time to the first body byte of a slow stream, on one keep-alive connection (as SDKs do)."""
    out = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    deadline = time.monotonic() + TIME_LIMIT_S
    try:
        for _ in range(calls):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            writer.write(request_bytes(STREAM_BODY, f"x-fake-delay-ms: {STREAM_DELAY_MS}\r\n"))
            first, _ = await read_response(reader)
            out.append((first - started) * 1000)
    finally:
        writer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--ttft-calls", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="turns each target takes (medians reported)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-"))
    with FakeProvider() as upstream:
        commands = {
            "direct": None,
            "mitmdump": [*MITMDUMP, "--mode", f"reverse:{upstream.url}@0", "--set", "flow_detail=0"],
            # Bare mitmdump buffers whole responses; streaming everything is its fastest-TTFT form.
            "mitmdump-stream": [
                *MITMDUMP,
                "--mode",
                f"reverse:{upstream.url}@0",
                "--set",
                "flow_detail=0",
                "--set",
                "stream_large_bodies=1",
            ],
            "llm-shadow": [
                sys.executable,
                str(ROOT / "cli.py"),
                "proxy",
                "--upstream",
                f"{upstream.url}@0",
                "--data",
                str(scratch / "data"),
            ],
        }
        rounds: dict[str, list[dict]] = {name: [] for name in commands}
        names = list(commands)
        for round_ in range(args.rounds):
            # Targets take turns, round after round, so a busy moment of the machine hits all
            # alike; their order rotates from round to round, and the proxies are fresh processes
            # every round, started at once in that order: in bench/enforce.py, proxies started
            # first spent more CPU a call than the same code started after them
            # (docs/benchmarks.md), so one set of processes started in a fixed order could favour
            # whichever came last (llm-shadow).
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            proxies = [name for name in order if commands[name] is not None]
            with running_proxies([(commands[name], ROOT) for name in proxies]) as started:
                ports = {name: port for name, (_, port) in zip(proxies, started, strict=True)}
                ports["direct"] = upstream.port
                for port in ports.values():
                    asyncio.run(latencies(port, CALL, 50))  # warm up
                for name in order:
                    port = ports[name]
                    rps = asyncio.run(throughput(port, CALL, args.requests // args.rounds, args.concurrency))
                    lat = asyncio.run(latencies(port, CALL, args.latency_calls // args.rounds))
                    ttft = asyncio.run(ttfts(port, max(1, args.ttft_calls // args.rounds)))
                    rounds[name].append({"rps": rps, "lat": lat, "ttft": ttft})
    results = {
        name: {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": percentile([x for r in runs for x in r["lat"]], 50),
            "p99": percentile([x for r in runs for x in r["lat"]], 99),
            "ttft_p50": percentile([x for r in runs for x in r["ttft"]], 50),
        }
        for name, runs in rounds.items()
    }
    recorded = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "sql",
            "SELECT count(*) AS n FROM requests",
            "--format",
            "csv",
            "--data",
            str(scratch / "data"),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    ).stdout.split()[-1]
    shutil.rmtree(scratch, ignore_errors=True)

    print(f"{'target':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'TTFT p50 ms':>14}")
    for name, r in results.items():
        print(f"{name:<16}{r['rps']:>10.0f}{r['p50']:>10.3f}{r['p99']:>10.3f}{r['ttft_p50']:>14.3f}")
    d, m, ms, s = results["direct"], results["mitmdump"], results["mitmdump-stream"], results["llm-shadow"]
    print()
    print(f"throughput llm-shadow / mitmdump: {s['rps'] / m['rps']:.2f}x (target >= 0.85x)")
    print(
        f"p50 added latency: mitmdump +{m['p50'] - d['p50']:.3f} ms, llm-shadow +{s['p50'] - d['p50']:.3f} ms; "
        f"difference {s['p50'] - m['p50']:+.3f} ms (target within 0.5 ms)"
    )
    print(
        f"TTFT added over a direct call: llm-shadow {s['ttft_p50'] - d['ttft_p50']:+.3f} ms (target within 2 ms); "
        f"mitmdump {m['ttft_p50'] - d['ttft_p50']:+.3f} ms (buffers), mitmdump-stream "
        f"{ms['ttft_p50'] - d['ttft_p50']:+.3f} ms"
    )
    print(f"calls recorded by llm-shadow during the run: {recorded}")


if __name__ == "__main__":
    main()
