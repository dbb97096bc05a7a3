"""A person's verdicts on semantic-cache pairs, kept with the run, and the precision they give.

The estimate of wrong hits (analysis.simulate.agreement) is a heuristic; a person reading pairs
is the check. Each threshold of a run's sweep carries a random sample of the hits it adds to the
next threshold up (`band_pairs`: its band of similarity). `llm-shadow label RUN_ID` shows them one
at a time and stores each verdict in `<run>/labels.json` ({request_id: "y" | "n" | "skip"})
as soon as it is given, so labelling can stop and resume at any pair.

Precision at a threshold (the share of its hits that answer the same question) is estimated per
band and weighted by the band's number of hits (a stratified estimate: the bands were sampled
separately), over the bands at or above the threshold that have labels; its interval is Wilson's
(95%) for that share with the number of pairs labelled.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

from analysis.store.modes import create_private_file

LABELS_FILE = "labels.json"
VERDICTS = ("y", "n", "skip")


def pairs_to_label(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sampled pair of a run's semantic sweep, each once, highest band first."""
    semantic = (result.get("cache") or {}).get("semantic")
    if not semantic:
        return []
    pairs, seen = [], set()
    for entry in sorted(semantic["sweep"], key=lambda e: -e["threshold"]):
        for pair in entry.get("band_pairs", []):
            if pair["request_id"] not in seen:
                seen.add(pair["request_id"])
                pairs.append(pair)
    return pairs


def load_labels(directory: Path) -> dict[str, str]:
    path = Path(directory) / LABELS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_labels(directory: Path, labels: dict[str, str]) -> None:
    """Write the verdicts atomically (a crash never leaves half a file)."""
    path = Path(directory) / LABELS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    create_private_file(tmp, (json.dumps(labels, indent=1, sort_keys=True) + "\n").encode())
    os.replace(tmp, path)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a share (95% by default); None without observations."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def precision_by_threshold(result: dict[str, Any], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Per sweep threshold: labelled pairs, precision and its Wilson interval (None when no
    pair at or above it is labelled y or n)."""
    semantic = (result.get("cache") or {}).get("semantic")
    if not semantic:
        return []
    bands = []
    for entry in semantic["sweep"]:
        verdicts = [labels.get(p["request_id"]) for p in entry.get("band_pairs", [])]
        same, different = verdicts.count("y"), verdicts.count("n")
        bands.append((entry["threshold"], entry.get("band_hits", 0), same, different))
    out = []
    for threshold, *_ in bands:
        above = [b for b in bands if b[0] >= threshold]
        labelled = [(hits, same, same + different) for _, hits, same, different in above if same + different]
        n = sum(total for _, _, total in labelled)
        weight = sum(hits for hits, _, _ in labelled)
        precision = sum(hits * same / total for hits, same, total in labelled) / weight if weight else None
        interval = wilson(precision * n, n) if precision is not None else None
        out.append(
            {
                "threshold": threshold,
                "labelled": n,
                "precision": precision,
                "interval": list(interval) if interval else None,
                "hits_in_unlabelled_bands": sum(b[1] for b in above if b[2] + b[3] == 0),
            }
        )
    return out
