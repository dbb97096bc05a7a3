"""Benchmark: what shadow and enforce mode add on top of observe mode, and how fast a cache hit is.

In one run, against the same fast local upstream (tests/fake_provider.py), three
`llm-shadow proxy` processes take turns, round after round, started afresh for each round:
  1. observe   recording only
  2. shadow    `--mode shadow` with POLICY: every call decided and logged, nothing changed
  3. enforce   `--mode enforce` with POLICY
The calls are JSON chat calls with temperature 0.7, which the exact cache may not answer: every
policy looks at them (cache lookup, budget window, rate window) and lets them pass, so the
difference to observe mode is the cost of deciding. Then the enforce proxy answers a cacheable
call from its exact cache (`enforce-hit`): its latency is the whole round trip of a hit.
For each: throughput (requests/s with CONCURRENCY keep-alive connections; median of rounds, and
each round's ratio to observe mode's in the same round: their median, with the interval that
holds the true median with 95% confidence, which takes 6 rounds or more),
latency p50/p99 one call at a time, and the CPU time the proxy process spent per call (median
of rounds; its recording worker process is apart), which a shared machine disturbs far less.
Prints the ratios the targets speak of: p50 added latency within 0.5 ms of observe, a cache
hit under 2 ms p50, throughput at least 0.8x observe.
With `--baseline DIR` (another checkout of llm-shadow, e.g. `git worktree add DIR <commit>`),
its observe, shadow and enforce proxies take turns in the same rounds too (`observe@base`, ...),
each beside this checkout's of the same mode and the two going first in turn (see `turns`), each
checkout's ratios taken against its own observe mode: a change is measured against the code
before it under the same load, not against a figure of another day.
Every loop is bounded in count and time; everything listens on 127.0.0.1.

    python bench/enforce.py [--requests 3000] [--concurrency 16] [--latency-calls 300] [--rounds 8] [--baseline DIR]
"""

import argparse
import asyncio
import json
import math
import shutil
import statistics
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

[cache.exact]
name = "exact"
ttl = "1h"

[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 1000000

[[rate_limit]]
name = "per-key"
scope = "key"
requests_per_minute = 100000000
"""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PASSING = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.7}).encode()
CACHEABLE = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0}).encode()


def request_bytes(body: bytes) -> bytes:
    return load.request_bytes(body, "x-shadow-team: bench\r\n")


def turns(names: list[str], suffixes: list[str], round_: int) -> list[str]:
    """The order the targets take their turns in a round: each mode's checkouts side by side
    (observe, observe@base, shadow, ...), the checkout that goes first alternating from round to
    round, and the modes' order rotating (observe first, then shadow first, ...). Whichever
    target goes first pays more CPU per call (about 0.1 ms measured, observe against the same
    observe: the worker processes of the targets before it still writing), so a fixed order
    would favour the checkout, or the mode, that comes later."""
    kinds = [name for name in names if not name.endswith("@base")]
    shift = round_ % len(kinds)
    kinds = kinds[shift:] + kinds[:shift]
    order = suffixes if round_ % 2 == 0 else suffixes[::-1]
    return [kind + suffix for kind in kinds for suffix in order if kind + suffix in names]


def paired(rounds: dict[str, list[dict]], name: str, against: str) -> str:
    """The throughput of `name` over that of `against` round by round (the two measured in the
    same round, so a slower spell of the machine falls on both): median, the interval that holds
    the true median with at least 95% confidence (`median_interval`), and lowest to highest.
    Every round starts fresh processes, and the same code's CPU a call moves by up to a fifth
    from one process to the next with where its memory lies (docs/benchmarks.md): single rounds
    scatter, so the interval, not one round, says whether a target holds."""
    ratios = sorted(r["rps"] / a["rps"] for r, a in zip(rounds[name], rounds[against], strict=True))
    interval = median_interval(ratios)
    said = f"95% interval {interval[0]:.2f} to {interval[1]:.2f}, " if interval else ""
    return f"median {statistics.median(ratios):.2f}x ({said}{len(ratios)} rounds: {ratios[0]:.2f} to {ratios[-1]:.2f})"


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of what `values` are samples of:
    the k-th lowest and k-th highest value, with k the largest rank for which a fair coin gives
    fewer than k heads in len(values) tosses with a chance of at most (1 - confidence) / 2.
    None with too few values for that confidence (fewer than 6 at 95%)."""
    n, ordered = len(values), sorted(values)
    below, k = 0.0, 0
    while True:
        below += math.comb(n, k) / 2**n  # the chance of at most k heads
        if below > (1 - confidence) / 2:
            break
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k >= 1 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="turns each target takes (medians reported; even: each checkout first as often)",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout whose shadow and enforce proxies run too")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-enforce-"))
    policy = scratch / "policy.toml"
    policy.write_text(POLICY)
    with FakeProvider() as upstream:
        trees = {"": ROOT, **({"@base": args.baseline.resolve()} if args.baseline else {})}
        commands = {}
        for suffix, tree in trees.items():
            base = [sys.executable, str(tree / "cli.py"), "proxy", "--upstream", f"{upstream.url}@0"]
            policed = ["--policy", str(policy), "--force"]
            commands[f"observe{suffix}"] = ([*base, "--data", str(scratch / f"observe{suffix}")], tree)
            for mode in ("shadow", "enforce"):
                data = ["--data", str(scratch / f"{mode}{suffix}")]
                commands[f"{mode}{suffix}"] = ([*base, *data, *policed, "--mode", mode], tree)
        rounds: dict[str, list[dict]] = {name: [] for name in [*commands, *(f"enforce-hit{s}" for s in trees)]}
        for round_ in range(args.rounds):
            order = turns(list(rounds), list(trees), round_)
            # Fresh processes every round, started in the round's order: with one set for the
            # whole run, the checkout whose proxies were started first spent 0.06 to 0.3 ms more
            # CPU a call than the same code started after it (docs/benchmarks.md; the cause is
            # not known), which favoured whatever was started last.
            names = [name for name in order if name in commands]
            with running_proxies([commands[name] for name in names]) as started:
                procs = dict(zip(names, started, strict=True))
                targets = {name: (port, request_bytes(PASSING)) for name, (_, port) in procs.items()}
                for suffix in trees:
                    targets[f"enforce-hit{suffix}"] = (procs[f"enforce{suffix}"][1], request_bytes(CACHEABLE))
                for port, call in targets.values():
                    asyncio.run(latencies(port, call, 50))  # warm up (and store the cacheable answer)
                for name in order:
                    port, call = targets[name]
                    pid = procs[name.replace("enforce-hit", "enforce")][0].pid
                    cpu = cpu_seconds(pid)
                    calls = args.requests // args.rounds
                    rps = asyncio.run(throughput(port, call, calls, args.concurrency))
                    lat = asyncio.run(latencies(port, call, args.latency_calls // args.rounds))
                    used = cpu_seconds(pid)
                    cpu_ms = None if cpu is None or used is None else (used - cpu) * 1000 / (calls + len(lat))
                    rounds[name].append({"rps": rps, "lat": lat, "cpu_ms": cpu_ms})
    shutil.rmtree(scratch, ignore_errors=True)
    results = summarize(rounds)
    print(f"{'target':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'proxy CPU ms/call':>19}")
    for name, r in results.items():
        print(f"{name:<18}{r['rps']:>10.0f}{r['p50']:>10.3f}{r['p99']:>10.3f}{r['cpu_ms']:>19.3f}")
    for suffix in trees:
        o = results[f"observe{suffix}"]
        s, e, hit = results[f"shadow{suffix}"], results[f"enforce{suffix}"], results[f"enforce-hit{suffix}"]
        print(f"\n{suffix[1:] or 'this checkout'}:")
        print(
            f"p50 added over observe: shadow {s['p50'] - o['p50']:+.3f} ms, enforce {e['p50'] - o['p50']:+.3f} ms "
            "(target within 0.5 ms)"
        )
        print(f"cache hit p50 end to end: {hit['p50']:.3f} ms (target under 2 ms)")
        print(
            f"throughput / observe: shadow {s['rps'] / o['rps']:.2f}x, enforce {e['rps'] / o['rps']:.2f}x "
            f"(target >= 0.8x); cache hits {hit['rps'] / o['rps']:.2f}x"
        )
        print(
            "  each round's own ratio: "
            + ", ".join(f"{mode} {paired(rounds, mode + suffix, 'observe' + suffix)}" for mode in ("shadow", "enforce"))
        )
        print(
            f"proxy CPU per call over observe: shadow {s['cpu_ms'] - o['cpu_ms']:+.3f} ms, "
            f"enforce {e['cpu_ms'] - o['cpu_ms']:+.3f} ms; observe / enforce CPU (the throughput an idle "
            f"core allows): {o['cpu_ms'] / e['cpu_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()
