"""How well each offline embedder finds the same question asked again, and how fast it is.

On a labelled set of real customer questions (BANKING77's test split: 3,080 questions, 77
intents; ../shared/data/prompts/banking77), taken in a fixed shuffled order, each question is
matched with its most similar earlier question, as a semantic cache would. At a threshold, a
question whose nearest earlier one reaches it is a hit; the hit is right when both share an
intent (the same FAQ answer serves both) and wrong otherwise (a look-alike question gets another
question's answer). Precision is right hits / hits; recall is right hits / questions that had an
earlier question of their intent. Speed is prompts embedded per second of wall
clock and of CPU (the machine may be shared), the best of three runs (one for MiniLM).
MiniLM is measured too when the `semantic` extra is installed.

    .venv/bin/python bench/embedders.py [--data ../shared/data/prompts/banking77] [--limit N]

Prints a Markdown table (docs/simulator.md keeps one).
"""

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from analysis.simulate.embedders import HashingEmbedder, MiniLMEmbedder, WordLlamaEmbedder, minilm_installed

THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97)


def load(path: Path, limit: int | None) -> tuple[list[str], list[str]]:
    with (path / "test.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    order = np.random.default_rng(77).permutation(len(rows))
    rows = [rows[i] for i in order][:limit]
    return [r["text"] for r in rows], [r["category"] for r in rows]


def nearest_earlier(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the index of the most similar earlier row and the similarity (-1, -inf for the first)."""
    similarity = vectors @ vectors.T
    similarity[np.triu_indices(len(vectors))] = -np.inf  # only earlier questions
    best = similarity.argmax(axis=1)
    return best, similarity[np.arange(len(vectors)), best]


def measure(name: str, embedder, texts: list[str], intents: list[str], runs: int = 3) -> list[dict]:
    timings, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        vectors = embedder.embed(texts)
        timings.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    best, similarity = nearest_earlier(vectors)
    labels = np.array(intents)
    right = labels[best] == labels
    seen: set[str] = set()
    answerable = np.zeros(len(texts), dtype=bool)
    for i, intent in enumerate(intents):
        answerable[i] = intent in seen
        seen.add(intent)
    rows = []
    for threshold in THRESHOLDS:
        hit = similarity >= threshold
        hit[0] = False
        rows.append(
            {
                "embedder": name,
                "threshold": threshold,
                "hits": int(hit.sum()),
                "precision": float((hit & right).sum() / hit.sum()) if hit.any() else float("nan"),
                "recall": float((hit & right).sum() / answerable.sum()),
                "prompts_per_s": len(texts) / min(timings),
                "prompts_per_cpu_s": len(texts) / min(cpu),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data/prompts/banking77")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    texts, intents = load(args.data, args.limit)
    print(f"{len(texts):,} questions, {len(set(intents))} intents\n")
    print("| embedder | threshold | hits | precision | recall | prompts/s | prompts/CPU-s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    embedders = [("hashing", HashingEmbedder()), ("wordllama", WordLlamaEmbedder())]
    if minilm_installed():  # the semantic extra
        embedders.append(("minilm", MiniLMEmbedder()))
    for name, embedder in embedders:
        for row in measure(name, embedder, texts, intents, runs=1 if name == "minilm" else 3):
            print(
                f"| {row['embedder']} | {row['threshold']:.2f} | {row['hits']:,} | {row['precision']:.2f} | "
                f"{row['recall']:.2f} | {row['prompts_per_s']:,.0f} | {row['prompts_per_cpu_s']:,.0f} |"
            )


if __name__ == "__main__":
    main()
