"""Benchmark: what a fallback rule in enforce mode costs a call that needs no rescue.

A call an enforcing `[[fallback]]` rule covers is sent by the proxy itself, through its relay
(addons.fallback, analysis.enforce.relay), so that a timeout or a refused connection can be
rescued too; every other call goes through mitmproxy alone. In one run, against the same fast
local upstream (tests/fake_provider.py), two `llm-shadow proxy --mode enforce` processes take
turns, round after round, started afresh for each round:
  1. enforce            a policy without a fallback rule
  2. enforce-fallback   the same policy with a fallback rule covering every call
Both the JSON call and a streamed call are measured: throughput (requests/s with CONCURRENCY
keep-alive connections; median of rounds), latency p50/p99 one call at a time, and the CPU time
the proxy process spent per call (median of rounds). Every loop is bounded in count and time;
everything listens on 127.0.0.1.

    python bench/fallback.py [--requests 1200] [--concurrency 8] [--latency-calls 300] [--rounds 3]
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _load as load  # noqa: E402
from bench._load import cpu_seconds, latencies, running_proxies, summarize, throughput  # noqa: E402
from tests.fake_provider import FakeProvider  # noqa: E402

POLICY = """
observe_for = "1s"

[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 1000000
"""
FALLBACK = """
[[fallback]]
name = "rescue"
retries = 1
backoff_ms = 100
timeout_s = 30
chain = [{ to = "gpt-4o-mini" }]
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
JSON_CALL = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.7}).encode()
STREAM_CALL = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.7, "stream": True}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="turns each target takes (medians reported)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-fallback-"))
    (scratch / "plain.toml").write_text(POLICY)
    (scratch / "fallback.toml").write_text(POLICY + FALLBACK)
    with FakeProvider() as upstream:
        base = [sys.executable, str(ROOT / "cli.py"), "proxy", "--upstream", f"{upstream.url}@0", "--force"]
        commands = {
            name: [
                *base,
                "--data",
                str(scratch / name),
                "--policy",
                str(scratch / f"{policy}.toml"),
                "--mode",
                "enforce",
            ]
            for name, policy in (("enforce", "plain"), ("enforce-fallback", "fallback"))
        }
        names = list(commands)
        rounds: dict[str, list[dict]] = {f"{name} {kind}": [] for name in names for kind in ("json", "stream")}
        extra = "x-shadow-team: bench\r\n"
        calls = {"json": load.request_bytes(JSON_CALL, extra), "stream": load.request_bytes(STREAM_CALL, extra)}
        for round_ in range(args.rounds):
            # Fresh processes every round, started at once, the first alternating: in
            # bench/enforce.py, proxies started first spent more CPU a call than the same code
            # started after them (docs/benchmarks.md), and `enforce` was always started first.
            order = names if round_ % 2 == 0 else names[::-1]
            with running_proxies([(commands[name], ROOT) for name in order]) as started:
                procs = dict(zip(order, started, strict=True))
                for _, port in started:
                    for call in calls.values():
                        asyncio.run(latencies(port, call, 30))  # warm up
                for name in order:
                    process, port = procs[name]
                    for kind, call in calls.items():
                        cpu = cpu_seconds(process.pid)
                        count = args.requests // args.rounds
                        rps = asyncio.run(throughput(port, call, count, args.concurrency))
                        lat = asyncio.run(latencies(port, call, args.latency_calls // args.rounds))
                        used = cpu_seconds(process.pid)
                        cpu_ms = None if cpu is None or used is None else (used - cpu) * 1000 / (count + len(lat))
                        rounds[f"{name} {kind}"].append({"rps": rps, "lat": lat, "cpu_ms": cpu_ms})
    shutil.rmtree(scratch, ignore_errors=True)
    results = summarize(rounds)
    print(f"{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'proxy CPU ms/call':>19}")
    for name, r in results.items():
        print(f"{name:<26}{r['rps']:>10.0f}{r['p50']:>10.3f}{r['p99']:>10.3f}{r['cpu_ms']:>19.3f}")
    for kind in ("json", "stream"):
        plain, relayed = results[f"enforce {kind}"], results[f"enforce-fallback {kind}"]
        print(
            f"{kind}: p50 added by the fallback rule {relayed['p50'] - plain['p50']:+.3f} ms, "
            f"throughput {relayed['rps'] / plain['rps']:.2f}x, "
            f"proxy CPU per call {relayed['cpu_ms'] - plain['cpu_ms']:+.3f} ms"
        )


if __name__ == "__main__":
    main()
