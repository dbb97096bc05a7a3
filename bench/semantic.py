"""Benchmark: what the semantic cache costs a call in enforce mode, and how fast it answers.

In one run, against the same fast local upstream (tests/fake_provider.py), `llm-shadow proxy`
processes take turns, round after round: observe mode, and enforce mode with a policy holding
only a semantic cache, once per embedder (`hashing`, `wordllama`). Each sends, one call at a
time on one keep-alive connection:
  - `new`: a prompt never seen before on every call (cacheable, temperature 0). In enforce mode
    each is embedded in a thread (the call waits for it, at most `lookup_timeout_ms`), looked up,
    misses, goes upstream and is stored: the whole price of the semantic cache on a miss.
  - `hit` (enforce only): the same prompt again and again, answered from the semantic cache's
    stored bytes without the upstream (an embedded prompt is not embedded again).
  - `burst`: new prompts again, from CONCURRENCY connections at once: one thread embeds, so
    prompts queue for it, and those not embedded within the budget go upstream without the
    semantic cache. Reported as requests/s and the share that went over the budget.
The prompts are banking77-like questions numbered apart, so no two are alike enough to hit.
Prints p50/p99 latency per target, the p50 added over observe, and how many calls went over
the lookup budget (`semantic_lookup_timeout` in the proxy's status file), with the budget at
its default (20 ms). Every loop is bounded in count and time; everything listens on 127.0.0.1.

    python bench/semantic.py [--calls 300] [--rounds 3] [--concurrency 16]
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._load import burst, percentile, request_bytes, start_proxy, timed  # noqa: E402
from tests.fake_provider import FakeProvider  # noqa: E402

POLICY = """
observe_for = "1s"

[cache.semantic]
name = "semantic"
threshold = 0.9
embedder = "{embedder}"
"""
EMBEDDERS = ("hashing", "wordllama")
WORDS = ("card", "transfer", "refund", "pin", "account", "exchange rate", "top up", "cash withdrawal")


def prompt(n: int, run: str) -> str:
    """A question of its own for call `n` of `run` (never asked before in the run)."""
    return f"{run} question {n}: why was my {WORDS[n % len(WORDS)]} declined at shop number {n * 7919}?"


def call(text: str) -> bytes:
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return request_bytes(json.dumps(body).encode())


def timeouts(data: Path) -> int:
    """semantic_lookup_timeout as the proxy's status file counts it (written every second)."""
    return sum(
        json.loads(p.read_text())["problems"].get("semantic_lookup_timeout", 0)
        for p in (data / "status").glob("*-policy.json")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per target and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the burst")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-semantic-"))
    results: dict[str, list[float]] = {}
    upstreamed: dict[str, int] = {}  # `hit` calls that reached the upstream after all
    rates: dict[str, float] = {}  # burst requests/s
    with FakeProvider() as upstream:
        base = [sys.executable, str(ROOT / "cli.py"), "proxy", "--upstream", f"{upstream.url}@0"]
        commands = {"observe": [*base, "--data", str(scratch / "observe")]}
        for embedder in EMBEDDERS:
            policy = scratch / f"{embedder}.toml"
            policy.write_text(POLICY.format(embedder=embedder))
            data = ["--data", str(scratch / embedder)]
            commands[embedder] = [*base, *data, "--policy", str(policy), "--mode", "enforce", "--force"]
        processes, ports = [], {}
        try:
            for name, command in commands.items():
                process, ports[name] = start_proxy(command)
                processes.append(process)
            for name, port in ports.items():  # warm up: the embedder's first calls, the upstream path
                asyncio.run(timed(port, [call(prompt(n, f"warm-{name}")) for n in range(20)]))
            time.sleep(2)  # the warm-up's answers stored, its status written
            before = {name: timeouts(scratch / name) for name in EMBEDDERS}
            for r in range(args.rounds):
                for name, port in ports.items():
                    fresh = [call(prompt(n, f"round{r}-{name}")) for n in range(args.calls)]
                    lat = asyncio.run(timed(port, fresh))
                    results.setdefault(f"{name} new", []).extend(lat)
                    if name in EMBEDDERS:
                        same = call(prompt(0, f"round{r}-{name}"))  # answered and stored just above
                        sent = len(upstream.requests)
                        lat = asyncio.run(timed(port, [same] * args.calls))
                        results.setdefault(f"{name} hit", []).extend(lat)
                        upstreamed[name] = upstreamed.get(name, 0) + len(upstream.requests) - sent
            time.sleep(2)
            over = {name: timeouts(scratch / name) - before[name] for name in EMBEDDERS}
            burst_calls = args.calls * args.rounds
            for name, port in ports.items():
                fresh = [call(prompt(n, f"burst-{name}")) for n in range(burst_calls)]
                rates[name] = asyncio.run(burst(port, fresh, args.concurrency))
            time.sleep(2)
            burst_over = {name: timeouts(scratch / name) - before[name] - over[name] for name in EMBEDDERS}
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'target':<18}{'calls':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for name, lat in results.items():
        print(f"{name:<18}{len(lat):>8}{percentile(lat, 50):>10.3f}{percentile(lat, 99):>10.3f}")
    observe = percentile(results["observe new"], 50)
    for embedder in EMBEDDERS:
        new, hit = percentile(results[f"{embedder} new"], 50), percentile(results[f"{embedder} hit"], 50)
        print(
            f"{embedder}: a new prompt adds {new - observe:+.3f} ms p50 over observe; a semantic hit is answered "
            f"in {hit:.3f} ms p50 ({upstreamed.get(embedder, 0):,} of {len(results[f'{embedder} hit']):,} reached "
            f"the upstream); {over[embedder]:,} of {len(results[f'{embedder} new']):,} new prompts went over the "
            "20 ms lookup budget (passed upstream)"
        )
        print(
            f"{embedder} burst ({args.concurrency} connections, {burst_calls:,} new prompts): "
            f"{rates[embedder]:.0f} req/s ({rates[embedder] / rates['observe']:.2f}x observe's "
            f"{rates['observe']:.0f}); {burst_over[embedder]:,} went over the lookup budget"
        )


if __name__ == "__main__":
    main()
