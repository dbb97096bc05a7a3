"""The status files recorders leave in `<data>/status/<instance>.json` (written by
`analysis.recording.sink.RecordSink`), read back so commands can say loudly when recording had problems."""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecorderStatus:
    instance: str
    recorded: int
    spooled: int
    problems: dict[str, int]


def read_statuses(data_dir: Path) -> list[RecorderStatus]:
    statuses = []
    for path in sorted((Path(data_dir) / "status").glob("*.json")):
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now, or not ours
        statuses.append(
            RecorderStatus(
                str(raw.get("instance", path.stem)),
                int(raw.get("recorded", 0)),
                int(raw.get("spooled", 0)),
                dict(raw.get("problems", {})),
            )
        )
    return statuses


def problem_summary(statuses: list[RecorderStatus]) -> str | None:
    """One line of what went wrong while recording, over every instance; None when nothing did."""
    totals: dict[str, int] = {}
    for status in statuses:
        for kind, count in status.problems.items():
            totals[kind] = totals.get(kind, 0) + count
    spooled = sum(s.spooled for s in statuses)
    parts = [f"{kind}={count:,}" for kind, count in sorted(totals.items())]
    if spooled:
        parts.append(f"{spooled:,} calls waiting in a spool, not yet written")
    return ", ".join(parts) if parts else None


def alert_counts(data_dir: Path) -> dict[str, int]:
    """Budget alerts sent, failed and dropped, summed over every proxy's status file (the
    `alerts` entry the policy's status carries, addons.enforcer)."""
    totals: dict[str, int] = {}
    for path in sorted((Path(data_dir) / "status").glob("*.json")):
        try:
            alerts = json.loads(path.read_text()).get("alerts") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for kind, count in alerts.items():
            totals[kind] = totals.get(kind, 0) + int(count)
    return totals
