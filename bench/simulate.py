"""Benchmark `llm-shadow simulate` on synthetic traffic (a script, not a test).

    python bench/simulate.py                       # 1,000,000 records, exact cache + 3 routing rules + 1 budget
    python bench/simulate.py --records 200000 --semantic

Generates N synthetic records (analysis.simulate.synthetic) straight into a scratch data
directory as Parquet segments, then, in a fresh process per policy so the peak memory is that
of the simulation alone, times what `llm-shadow simulate` does: load the requests from the
store, simulate (facts, replay, decisions, summary), store the run. `--semantic` times a
semantic-cache policy apart (the default embedder, wordllama: a first run, which embeds every
prompt and keeps the vectors in the data directory, and a re-run, which embeds none) and
measures the LSH index's recall against exact search.
Figures are wall-clock seconds and peak RSS; CPU seconds are printed too because the machine
may be shared. Record them in docs/simulator.md.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Exact cache + three routing rules + one budget, each rule within one tokenizer family: token
# counts stay as recorded, so no prompt text is read.
SAME_FAMILY_POLICY = """
name = "bench A: exact cache, three routing rules, one budget (same tokenizer families)"

[cache.exact]
ttl = "1h"
scope = "team"

[[routing]]
name = "small-gpt-4o-to-mini"
model = "gpt-4o"
max_input_tokens = 1000
to = "gpt-4o-mini"

[[routing]]
name = "sonnet-to-haiku"
model = "claude-sonnet-4-5"
has_tools = false
to = "claude-haiku-4-5"

[[routing]]
name = "classify-to-nano"
feature = "classify"
model = "gpt-4*"
to = "gpt-4.1-nano"

[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 20
action = "block"
"""

# The same with a rule and a downgrade that cross tokenizer families: the prompt and response
# texts are read and the token counts re-estimated with the target's tokenizer.
CROSS_FAMILY_POLICY = (
    SAME_FAMILY_POLICY.replace("bench A", "bench B")
    .replace('model = "gpt-4*"\n', "")
    .replace('action = "block"', 'action = "downgrade"\nto = "gpt-4.1-nano"')
    .replace("(same tokenizer families)", "(re-estimating tokens across families)")
)

SEMANTIC_POLICY = """
name = "bench: exact and semantic cache"

[cache.exact]
ttl = "1h"
scope = "team"

[cache.semantic]
threshold = 0.9
ttl = "1h"
scope = "team"
"""


def generate_store(data: Path, records: int, days: int, topics: int) -> float:
    from analysis.simulate.synthetic import generate
    from analysis.store.datadir import Store, segment_name, write_segment

    started = time.perf_counter()
    requests, contents = generate(records, days=days, topics=topics)
    store = Store(data)
    step = 100_000
    for k, start in enumerate(range(0, records, step)):
        name = segment_name("bench", 1, k * 16, k * 16 + 15)
        write_segment(store.records_dir, name, requests[start : start + step])
        write_segment(store.contents_dir, name, contents[start : start + step])
    return time.perf_counter() - started


def child(data: Path, policy_text: str) -> dict:
    """One simulation as `llm-shadow simulate` runs it; timings and peak memory."""
    from analysis.pricing.table import PriceTable
    from analysis.simulate.policy import parse_policy
    from analysis.simulate.runs import save_run
    from analysis.simulate.simulator import simulate
    from analysis.store.datadir import Store

    stages: dict[str, float] = {}
    cpu = time.process_time()
    wall = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal wall
        now = time.perf_counter()
        stages[name] = round(now - wall, 2)
        wall = now

    policy = parse_policy(policy_text, "bench.toml")
    prices = PriceTable.load(data)
    store = Store(data)
    lap("setup")
    requests = store.requests_frame()
    lap("load_requests")
    progress_marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        progress_marks.setdefault(stage, time.perf_counter())

    vectors_before = stored_vectors(data)
    result = simulate(policy, requests, lambda: store.contents_frame(), prices=prices, data_dir=data, progress=progress)
    lap("simulate")
    save_run(data, result)
    lap("store_run")
    return {
        "requests": requests.height,
        "stages_s": stages,
        "total_s": round(sum(stages.values()) - stages["setup"], 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "totals": {k: result.totals[k] for k in ("baseline_usd", "saving_usd", "cache_hits", "routed", "downgraded")},
        "texts_embedded": stored_vectors(data) - vectors_before,
        "embedder": result.parameters.get("embedder"),
    }


def stored_vectors(data: Path) -> int:
    """Vectors kept under <data>/embeddings (every text a run embeds is added there)."""
    import polars as pl

    parts = sorted((data / "embeddings").glob("*/part-*.parquet"))
    return pl.scan_parquet(parts).select(pl.len()).collect().item() if parts else 0


def run_child(data: Path, policy_text: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(data)],
        input=policy_text,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def lsh_recall(data: Path, queries: int = 2000, threshold: float = 0.9) -> dict:
    """Recall of the semantic index against exact search: for prompts near a stored one
    (cosine >= threshold by brute force), how often the LSH candidates include a prompt that
    similar."""
    import numpy as np

    from analysis.simulate.embedders import HashingEmbedder
    from analysis.simulate.policy import CacheRules, SemanticCachePolicy
    from analysis.simulate.semantic import SemanticIndex
    from analysis.store.datadir import Store

    texts = Store(data).contents_frame()["prompt_text"].unique().sort().to_list()
    rng = np.random.default_rng(1)
    rng.shuffle(texts)
    stored, probes = texts[: len(texts) // 2], texts[len(texts) // 2 :][:queries]
    defaults = SemanticCachePolicy("recall", 0.9, 3600, "global", 10**9, CacheRules())
    index = SemanticIndex(
        HashingEmbedder(),
        ttl_us=10**15,
        max_entries=10**9,
        bits=defaults.lsh_bits,
        tables=defaults.lsh_tables,
        bucket_size=defaults.bucket_size,
    )
    index.register_many(stored + probes)
    for i, text in enumerate(stored):
        index.store(0, index.text_rows[text], 0, str(i))
    matrix = index.matrix[[index.text_rows[t] for t in stored]]
    found = relevant = 0
    for text in probes:
        row = index.text_rows[text]
        exact = float((matrix @ index.matrix[row]).max())
        if exact < threshold:
            continue
        relevant += 1
        nearest = index.nearest(0, row, 1)
        found += nearest is not None and nearest[0] >= threshold
    return {
        "stored_prompts": len(stored),
        "probes_with_a_neighbour": relevant,
        "recall": round(found / relevant, 4) if relevant else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--topics", type=int, default=50_000, help="distinct prompt topics in the synthetic traffic")
    parser.add_argument(
        "--semantic", action="store_true", help="also time a semantic-cache policy and measure LSH recall"
    )
    parser.add_argument(
        "--skip-cross-family", action="store_true", help="time policy A only (the in-run baseline), not B"
    )
    parser.add_argument("--scratch", type=Path, help="data directory to use (default: a temporary one)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, sys.stdin.read())))
        return

    with tempfile.TemporaryDirectory(prefix="llm-shadow-bench-") as tmp:
        data = args.scratch or Path(tmp) / "data"
        print(f"generating {args.records:,} synthetic records into {data} ...", flush=True)
        print(
            f"  generated and written in {generate_store(data, args.records, args.days, args.topics):.1f} s", flush=True
        )
        report = {"records": args.records, "cpus": os.cpu_count()}
        report["same_family"] = run_child(data, SAME_FAMILY_POLICY)
        print(json.dumps({"A: exact cache + 3 routing rules + 1 budget": report["same_family"]}, indent=2), flush=True)
        if not args.skip_cross_family:
            report["cross_family"] = run_child(data, CROSS_FAMILY_POLICY)
            print(
                json.dumps({"B: the same, re-estimating tokens across families": report["cross_family"]}, indent=2),
                flush=True,
            )
        if args.semantic:
            report["semantic"] = run_child(data, SEMANTIC_POLICY)
            print(json.dumps({"exact + semantic cache, first run": report["semantic"]}, indent=2), flush=True)
            # The vectors of the first run are kept in the data directory: a re-run embeds nothing.
            report["semantic_rerun"] = run_child(data, SEMANTIC_POLICY)
            print(json.dumps({"exact + semantic cache, re-run": report["semantic_rerun"]}, indent=2), flush=True)
            report["lsh_recall"] = lsh_recall(data)
            print(json.dumps({"LSH recall at similarity 0.9": report["lsh_recall"]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
