"""Generate sample_traffic/month.flows: a month of Kestrel Bank's LLM API traffic as mitmproxy flows.

    python -m sample_traffic.generate                      # writes sample_traffic/month.flows
    python -m sample_traffic.generate --scale 0.05 --out /tmp/small.flows

The pipeline: every feature (features.py) draws its sessions for each day of the month from its
own RNG (seed + feature name), the runaway backfill job is added on its day, faults and retries
are drawn in time order (faults.py), then each call is rendered in its provider's wire format in
time order (so provider prompt caches see calls as they happened) and written as a mitmproxy flow
with mitmproxy's own FlowWriter. Same seed and scale, same bytes.
"""

import argparse
import hashlib
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import io as mitmproxy_io

from sample_traffic import schedule, wire_anthropic, wire_gemini, wire_openai
from sample_traffic.calls import Call
from sample_traffic.faults import inject_faults
from sample_traffic.features import FEATURES, Feature, runaway_backfill
from sample_traffic.flows import build_flow
from sample_traffic.wire_common import UPSTREAM_CUT, PromptCaches, WireExchange

DEFAULT_SEED = 20261001
DEFAULT_OUT = Path(__file__).resolve().parent / "month.flows"
RUNAWAY_DAY_START = datetime(2026, 10, 21, 13, 5, tzinfo=UTC).timestamp()
RUNAWAY_CALLS = 380
WIRE = {"openai": wire_openai, "anthropic": wire_anthropic, "gemini": wire_gemini}


def rng_for(seed: int, name: str) -> random.Random:
    """An independent RNG per concern, so changing one feature leaves the others' draws alone."""
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big"))


def sessions_mean(feature: Feature, day_index: int, scale: float) -> float:
    day = schedule.days()[day_index]
    mean = feature.weekend_sessions if schedule.is_weekend(day) else feature.weekday_sessions
    mean *= (1 + feature.growth_per_day) ** day_index
    for spike_day, factor in feature.spike_days:
        if spike_day == day:
            mean *= factor
    return mean * scale


def build_calls(seed: int, scale: float) -> list[Call]:
    calls: list[Call] = []
    for feature in FEATURES:
        rng = rng_for(seed, feature.name)
        for index, day in enumerate(schedule.days()):
            mean = sessions_mean(feature, index, scale)
            for at in schedule.arrivals(rng, day, mean, feature.hours, feature.scheduled):
                calls += feature.session(rng, at)
    runaway_rng = rng_for(seed, "ticket-backfill")
    calls += runaway_backfill(
        runaway_rng, RUNAWAY_DAY_START + runaway_rng.uniform(0, 600), max(1, round(RUNAWAY_CALLS * scale))
    )
    month_end = schedule.day_start(schedule.days()[-1]) + 86_400
    return sorted((c for c in calls if c.at < month_end), key=lambda c: c.at)


def render_all(seed: int, calls: list[Call]) -> list[tuple[Call, WireExchange]]:
    rng = rng_for(seed, "wire")
    caches = PromptCaches()
    return [(call, WIRE[call.key.provider].render(call, rng, caches)) for call in calls]


def generate(out: Path, seed: int = DEFAULT_SEED, scale: float = 1.0) -> Counter:
    """Write the flow file; returns counts of what it contains."""
    calls = inject_faults(rng_for(seed, "faults"), build_calls(seed, scale))
    rendered = render_all(seed, calls)
    flow_rng = rng_for(seed, "flows")
    summary: Counter = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        writer = mitmproxy_io.FlowWriter(f)
        for call, exchange in rendered:
            writer.add(build_flow(flow_rng, call, exchange))
            summary.update(describe(call, exchange))
    return summary


def describe(call: Call, exchange: WireExchange) -> list[str]:
    kind = "stream" if call.stream else "json"
    if exchange.error:
        outcome = "upstream cut" if exchange.error == UPSTREAM_CUT else "client disconnected"
    elif exchange.ended_at is not None and b"event: error" in exchange.response_body:
        outcome = "200 with a mid-stream error event"
    else:
        outcome = str(exchange.status)
    return [
        "flows",
        f"provider {call.key.provider}",
        f"format {call.key.provider} {call.api} {kind}",
        f"feature {call.key.team}/{call.feature}",
        f"status {outcome}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the sample month of LLM API traffic as mitmproxy flows.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed (default %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="volume multiplier (default 1.0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="flow file to write")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    started = time.perf_counter()
    summary = generate(args.out, args.seed, args.scale)
    elapsed = time.perf_counter() - started
    for label, n in sorted(summary.items()):
        print(f"{n:6d}  {label}")
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
