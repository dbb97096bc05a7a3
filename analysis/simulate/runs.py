"""Simulation runs kept on disk, so reports and enforce mode can refer to one by its id.

A run is a folder `<data_dir>/simulations/<run_id>/` holding:

    run.json          {"run_id", "created_at", "format": 1, "policy_file", "policy_text",
                       "parameters", "result"}: the policy exactly as written, the
                       parameters (date range, price version, embedder), and the result's
                       `to_dict()` (totals, by policy, by day/team/feature/model, ...)
    decisions.parquet one row per request: replay.DECISION_SCHEMA (what each policy did to it,
                       its recorded and simulated cost, the saving credited to each step)

`run_id` is the UTC creation time plus a short random suffix ("20250301T120000Z-3f9a1c"),
so ids sort by time. Files are written under a temporary name and renamed, so a folder with
a run.json is complete. `load_run` reads one back and refuses a format it does not know.
"""

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from analysis.simulate.results import SimulationResult
from analysis.store.modes import make_dir, restrict

RUNS_DIR = "simulations"
RUN_FORMAT = 1


class RunNotFound(LookupError):
    """No stored run has that id, or it was written in a format this version cannot read."""


@dataclass
class StoredRun:
    run_id: str
    directory: Path
    info: dict[str, Any]  # the content of run.json

    def decisions(self) -> pl.DataFrame:
        return pl.read_parquet(self.directory / "decisions.parquet")


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    restrict(tmp)  # readable as the data directory says (analysis.store.modes)
    os.replace(tmp, path)


def save_run(data_dir: Path, result: SimulationResult, now: datetime | None = None) -> StoredRun:
    """Store `result` (its policy text, parameters, figures and decisions) as a new run."""
    now = now or datetime.now(UTC)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    directory = Path(data_dir) / RUNS_DIR / run_id
    make_dir(directory, Path(data_dir))
    info = {
        "run_id": run_id,
        "created_at": now.isoformat(),
        "format": RUN_FORMAT,
        "policy_file": result.policy.file,
        "policy_text": result.policy.text,
        "parameters": result.parameters,
        "result": result.to_dict(),
    }
    _write_atomic(directory / "decisions.parquet", lambda p: result.decisions.write_parquet(p))
    _write_atomic(directory / "run.json", lambda p: p.write_text(json.dumps(info, indent=1, default=str) + "\n"))
    return StoredRun(run_id, directory, info)


def load_run(data_dir: Path, run_id: str) -> StoredRun:
    directory = Path(data_dir) / RUNS_DIR / run_id
    path = directory / "run.json"
    if not path.is_file():
        raise RunNotFound(f"no simulation run {run_id!r} in {Path(data_dir) / RUNS_DIR}")
    info = json.loads(path.read_text())
    if info.get("format") != RUN_FORMAT:
        raise RunNotFound(
            f"simulation run {run_id!r} has format {info.get('format')!r}; this version reads format {RUN_FORMAT}"
        )
    return StoredRun(run_id, directory, info)
