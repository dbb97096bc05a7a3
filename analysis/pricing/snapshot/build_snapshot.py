"""Rebuild analysis/pricing/snapshot/snapshot.json from a LiteLLM price map.

    python -m analysis.pricing.snapshot.build_snapshot [PATH_TO_MAP] [--version LABEL]

PATH_TO_MAP defaults to the shared copy (../shared/data/prices/litellm/ beside the repository,
or $LLM_SHADOW_SHARED/data/prices/litellm/). The label names the map the snapshot came from;
it becomes the `price_version` of every row priced with the bundled table, so change it
whenever the map changes. Update SOURCE.txt beside the snapshot at the same time.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from analysis.pricing.litellm import dump_snapshot, snapshot_from_litellm

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]  # analysis/pricing/snapshot -> the repository root
MAP_NAME = "model_prices_and_context_window.json"
# litellm 1.109.1 wheel (SBOM timestamp 2026-11-12), file model_prices_and_context_window_backup.json.
DEFAULT_VERSION = "litellm-2026-11-12-v1.109.1"


def default_map_path() -> Path:
    shared = Path(os.environ.get("LLM_SHADOW_SHARED", REPO.parent / "shared"))
    return shared / "data" / "prices" / "litellm" / MAP_NAME


def build(map_path: Path, version: str) -> dict:
    raw = map_path.read_bytes()
    snapshot = snapshot_from_litellm(json.loads(raw), version)
    snapshot["source"] = {
        "upstream": "BerriAI/litellm model_prices_and_context_window.json (MIT)",
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("map", nargs="?", type=Path, default=None)
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--out", type=Path, default=HERE / "snapshot.json")
    args = parser.parse_args(argv)
    snapshot = build(args.map or default_map_path(), args.version)
    args.out.write_text(dump_snapshot(snapshot))
    count = sum(len(models) for models in snapshot["models"].values())
    print(f"wrote {args.out} ({count} models, {args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
