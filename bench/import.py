"""Benchmark: `llm-shadow import` speed, against the import it replaced, in one run.

A flow file is generated with the sample-traffic generator (`--scale 10`: about 14,500 flows of
every wire format), or given with `--flows`. Then, each into a fresh data directory, taking turns
for `--rounds` rounds:
  1. before      the previous import: every flow through `Master.load_flow` (the asyncio hook
                 chain) into the recorder with its worker thread, in one process
  2. one process today's import with `--workers 1` (records read without mitmproxy's connection
                 objects, the recorder's hooks called in order, the sink accounting in the
                 importing thread)
  3. parallel    today's import with one process per core (the default for large files): this
                 process and helpers it spawns, taking chunks of the file from one queue
Each import runs in a new Python process, as a user's `llm-shadow import` does: its start-up
(imports, price tables, tokenizer files) is part of what is measured. Prints wall-clock seconds
and calls per second for each, the CPU seconds each spent per call (the process and its
helpers, as the OS counts them: on a machine shared with other jobs the wall clock says more
about the neighbours than about the importer), the calls per second that CPU cost allows on
this machine's cores, and the load average. Every import is bounded by the file's size.

    python bench/import.py [--scale 10] [--flows FILE] [--rounds 2] [--workers N]
"""

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Only what today's import needs at module level: its helper processes import this script again.
from addons.importer import import_files, read_sources  # noqa: E402
from analysis.recording.settings import RecorderSettings  # noqa: E402
from analysis.store.datadir import Store  # noqa: E402


def import_before(path: Path, data_dir: Path) -> tuple[int, float]:
    """The import as it was before the parallel importer (commit 242f44b's addons/importer.py)."""
    from mitmproxy import http, io, options
    from mitmproxy.master import Master

    from addons.recorder import Recorder

    async def run() -> int:
        opts = options.Options()
        master = Master(opts)
        recorder = Recorder(worker_process=False)
        master.addons.add(recorder)
        opts.update(shadow_data=os.fspath(data_dir), shadow_content=True, shadow_queue_limit=0)
        recorder.start()
        try:
            with open(path, "rb") as f:
                for flow in io.FlowReader(f).stream():
                    if isinstance(flow, http.HTTPFlow):
                        await master.load_flow(flow)
        finally:
            recorder.done()
        return recorder.recorded

    cpu = time.process_time()
    recorded = asyncio.run(run())
    return recorded, time.process_time() - cpu


def import_now(path: Path, data_dir: Path, workers: int | None) -> int:
    result = import_files(read_sources([path]), RecorderSettings(data=data_dir, queue_limit=0), workers=workers)
    return result.recorded


IMPORTS = ("before", "one process", "parallel")


def run_one(name: str, path: Path, data_dir: Path, workers: int) -> int:
    """The import `name` in this process (the child side of `in_new_process`)."""
    if name == "before":
        return import_before(path, data_dir)[0]
    return import_now(path, data_dir, 1 if name == "one process" else workers)


def in_new_process(name: str, path: Path, data_dir: Path, workers: int) -> tuple[int, float]:
    """Run the import `name` in a new Python process; (calls recorded, CPU seconds of that
    process and every helper it started and waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    args = [sys.executable, __file__, "--flows", str(path), "--one", name, "--data", str(data_dir)]
    done = subprocess.run([*args, "--workers", str(workers)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the import failed:\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return int(done.stdout.split()[-1]), cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0, help="sample generator scale (default 10)")
    parser.add_argument("--flows", type=Path, help="import this flow file instead of generating one")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="workers of the parallel run (default: cores)")
    parser.add_argument("--one", choices=IMPORTS, help=argparse.SUPPRESS)  # in a new process: one import
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    if args.one:
        print(f"recorded {run_one(args.one, args.flows, args.data, workers)}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-import-"))
    try:
        path = args.flows
        if path is None:
            from sample_traffic.generate import generate

            path = scratch / "month.flows"
            started = time.perf_counter()
            generate(path, scale=args.scale)
            print(f"generated {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
        flows = sum(len(s) for s in read_sources([path]))
        seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
        cpu_seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
        for round_number in range(args.rounds):
            for name in IMPORTS:
                data_dir = scratch / f"data-{round_number}-{name.replace(' ', '-')}"
                Store(data_dir)
                started = time.perf_counter()
                recorded, cpu = in_new_process(name, path, data_dir, workers)
                seconds[name].append(time.perf_counter() - started)
                cpu_seconds[name].append(cpu)
                if recorded != flows:  # reported, not fatal: the baseline may lose calls under load
                    print(f"round {round_number + 1}, {name}: recorded {recorded:,} of {flows:,} flows")
                shutil.rmtree(data_dir)
        print(f"{flows:,} flows, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {cores} cores")
        print("| import | wall s | calls/s | CPU ms per call | calls/s the CPU cost allows | vs before |")
        print("|---|---:|---:|---:|---:|---:|")
        base = statistics.median(seconds["before"])
        for name, values in seconds.items():
            wall = statistics.median(values)
            per_call = statistics.median(cpu_seconds[name]) / flows
            parallel = 1 if name != "parallel" else min(cores, workers)
            allowed = parallel / per_call
            print(
                f"| {name} | {wall:.1f} | {flows / wall:,.0f} | {per_call * 1000:.2f} | {allowed:,.0f} "
                f"| {base / wall:.2f}x |"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
