"""Benchmark: N enforce-mode proxies sharing one Redis behind HAProxy, against one proxy.

One mitmproxy process uses one core; a deployment that outgrows it runs several behind a load
balancer with `--state redis://` so they keep one set of budgets, rate windows and cache. This
measures what that costs and what it gains, in one run, against the same fast local upstream
(tests/fake_provider.py), everything on 127.0.0.1:

  upstream      the fake provider called directly: the baseline for added latency
  haproxy-only  HAProxy in front of the fake provider: the balancer's own hop
  memory        one `llm-shadow proxy --mode enforce --state memory`, called directly
  redis         one `llm-shadow proxy --mode enforce --state redis://...`, called directly
  haproxy-N     HAProxy (round robin, HTTP mode) in front of N such Redis proxies, N = 1, 2, 3

All proxies run the same POLICY (an exact cache, a team budget, a per-key rate limit, none of
which stops a call) and the calls are JSON chat calls with temperature 0.7, which every policy
looks at and lets pass; so each call pays the Redis round trips of a real decision and
settlement. Targets take turns, round after round. For each: throughput (CONCURRENCY keep-alive
connections, median of the rounds) in total and per proxy process, latency p50/p99 one call at
a time, the Redis scripts and commands each call cost (from Redis's own counters), the CPU the
proxy processes and their worker processes spent per call and the CPU Redis spent per call, and
how busy the whole machine was (from /proc), which says whether another process had a core to
run on. `redis` against
`memory` is the added latency of the Redis round trips.

Every loop is bounded in count and time; HAProxy is the Debian package (`apt-get install
haproxy`), redis-server too.

    python bench/haproxy.py [--requests 3000] [--concurrency 16] [--latency-calls 300] [--rounds 3]
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.enforce import PASSING, POLICY, latencies, throughput  # noqa: E402
from bench.overhead import percentile, start_proxy  # noqa: E402
from tests.fake_provider import FakeProvider  # noqa: E402
from tests.haproxy import HAProxy  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

FLEET = 3


def redis_counts(redis: RedisServer) -> tuple[int, int]:
    """(scripts run, commands run) by Redis so far. Each script call (EVALSHA) is one round trip;
    Redis 7 also counts the commands a script runs inside Redis, so the second figure is the
    work on the server, not round trips."""
    stats = redis.client().info("commandstats")
    scripts = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    commands = sum(value["calls"] for name, value in stats.items() if name != "cmdstat_info")
    return scripts, commands


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their descendants (the
    proxies' worker processes), from /proc."""
    ticks, total, todo, seen = os.sysconf("SC_CLK_TCK"), 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / ticks


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def fallbacks(data_dir: Path) -> int:
    """Operations the proxies served from local state because Redis was slow or down."""
    total = 0
    for path in (data_dir / "status").glob("*.state.json"):
        total += json.loads(path.read_text()).get("problems", {}).get("shared_state_fallback", 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="calls per target for throughput, all rounds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="turns each target takes (medians reported)")
    parser.add_argument(
        "--socket-timeout",
        type=float,
        default=None,
        help="seconds a Redis call may take before the proxy serves it locally (default: the proxy's 50 ms)",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-haproxy-"))
    policy = scratch / "policy.toml"
    policy.write_text(POLICY)
    redis = RedisServer(scratch / "redis").start()
    state = redis.url + (f"?socket_timeout={args.socket_timeout}" if args.socket_timeout else "")
    rounds: dict[str, list[dict]] = {}
    processes, balancers = [], []
    with FakeProvider() as upstream:
        base = [sys.executable, str(ROOT / "cli.py"), "proxy", "--upstream", f"{upstream.url}@0", "--policy"]
        base += [str(policy), "--mode", "enforce", "--force", "--flush-interval", "1"]
        try:
            memory, memory_port = start_proxy([*base, "--data", str(scratch / "memory"), "--state", "memory"])
            processes.append(memory)
            fleet = []
            for _ in range(FLEET):
                process, port = start_proxy([*base, "--data", str(scratch / "redis"), "--state", state])
                processes.append(process)
                fleet.append(port)
            targets = {"upstream": (upstream.port, 0), "haproxy-only": (None, 0)}
            balancers.append(HAProxy(scratch, "haproxy-only", [upstream.port]))
            targets["haproxy-only"] = (balancers[-1].port, 0)
            targets["memory"] = (memory_port, 1)
            targets["redis"] = (fleet[0], 1)
            for n in range(1, FLEET + 1):
                balancers.append(HAProxy(scratch, f"haproxy-{n}", fleet[:n]))
                targets[f"haproxy-{n}"] = (balancers[-1].port, n)
            pids = [process.pid for process in processes]
            for port, _ in targets.values():
                asyncio.run(latencies(port, PASSING, 50))  # warm up every path (and every proxy behind HAProxy)
            for _ in range(args.rounds):
                for name, (port, _) in targets.items():
                    scripts, commands = redis_counts(redis)
                    cpu, (busy, ticks) = tree_cpu_seconds(pids), machine_busy()
                    redis_cpu = tree_cpu_seconds([redis.process.pid])
                    total = args.requests // args.rounds
                    rps = asyncio.run(throughput(port, PASSING, total, args.concurrency))
                    lat = asyncio.run(latencies(port, PASSING, args.latency_calls // args.rounds))
                    calls = total + len(lat)
                    scripts_after, commands_after = redis_counts(redis)
                    cpu_after, (busy_after, ticks_after) = tree_cpu_seconds(pids), machine_busy()
                    redis_cpu_after = tree_cpu_seconds([redis.process.pid])
                    rounds.setdefault(name, []).append(
                        {
                            "rps": rps,
                            "lat": lat,
                            "scripts": (scripts_after - scripts) / calls,
                            "commands": (commands_after - commands) / calls,
                            "cpu_ms": (cpu_after - cpu) * 1000 / calls,
                            "redis_us": (redis_cpu_after - redis_cpu) * 1e6 / calls,
                            "busy": (busy_after - busy) / max(1, ticks_after - ticks),
                        }
                    )
            time.sleep(1.5)  # the proxies write their status files every second
            fell_back = fallbacks(scratch / "redis")
        finally:
            for balancer in balancers:
                balancer.stop()
            for process in processes:
                process.terminate()
                process.wait(30)
            redis.stop()
    shutil.rmtree(scratch, ignore_errors=True)

    results = {
        name: {
            "processes": targets[name][1],
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": percentile([x for r in runs for x in r["lat"]], 50),
            "p99": percentile([x for r in runs for x in r["lat"]], 99),
            "scripts": statistics.median(r["scripts"] for r in runs),
            "commands": statistics.median(r["commands"] for r in runs),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
            "redis_us": statistics.median(r["redis_us"] for r in runs),
            "busy": statistics.median(r["busy"] for r in runs),
        }
        for name, runs in rounds.items()
    }
    base_p50 = results["upstream"]["p50"]
    print(
        f"{'target':<14}{'proxies':>8}{'req/s':>9}{'per proxy':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'scripts':>8}{'commands':>9}{'proxy CPU ms':>13}{'Redis CPU us':>13}{'busy':>6}"
    )
    for name, r in results.items():
        per = f"{r['rps'] / r['processes']:.0f}" if r["processes"] else "-"
        print(
            f"{name:<14}{r['processes'] or '-':>8}{r['rps']:>9.0f}{per:>11}{r['p50']:>9.3f}{r['p99']:>9.3f}"
            f"{r['p50'] - base_p50:>+9.3f}{r['scripts']:>8.2f}{r['commands']:>9.2f}{r['cpu_ms']:>13.2f}"
            f"{r['redis_us']:>13.0f}"
            f"{r['busy']:>6.0%}"
        )
    print("(scripts, commands, CPU: per call; busy: share of the machine's cores in use during the target's turn)")
    m, rd, h1 = results["memory"], results["redis"], results["haproxy-1"]
    print()
    print(
        f"Redis round trips: p50 {rd['p50'] - m['p50']:+.3f} ms, throughput {rd['rps'] / m['rps']:.2f}x (redis/memory)"
    )
    print(f"HAProxy hop: p50 {results['haproxy-only']['p50'] - base_p50:+.3f} ms over the upstream alone")
    print(
        "scaling, total req/s against haproxy-1: "
        + ", ".join(f"haproxy-{n} {results[f'haproxy-{n}']['rps'] / h1['rps']:.2f}x" for n in range(1, FLEET + 1))
        + f"; against one proxy direct: haproxy-{FLEET} {results[f'haproxy-{FLEET}']['rps'] / rd['rps']:.2f}x"
    )
    print(f"Redis operations served locally (fail-open, slow or down): {fell_back}")


if __name__ == "__main__":
    main()
