"""The status files of recorders, `<data>/status/<instance>.json`: written by the process that owns
a recorder's counts, read back so that commands say loudly when recording had problems.

One process owns each file. A proxy's recorder parses and writes in a worker process
(`analysis.recording.worker_process`), but it is the proxy process that owns the file: the worker
sends it its counts, and the proxy adds what only it can see (a call dropped because the queue
was full, a worker that died, a worker started again: its counts add up instead of starting over).
A live owner rewrites its file every flush interval, even when nothing changed, and marks it
`stopped` when it stops cleanly; so a file much older than its interval and not marked stopped
says that the recorder was killed or cannot write its status any more (a full disk): `stats`
says which file has not been updated for how long.

Writing never raises: a failure is printed on stderr once per kind (ENOSPC, EACCES, ...) and
counted; the file's growing age tells the rest.
"""

import errno
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from analysis.store.modes import create_private_file, make_dir


def stale_after(interval: float) -> float:
    """Seconds after which a status rewritten every `interval` seconds is late: a busy machine can
    delay a rewrite by a few intervals, never by this many."""
    return max(10 * interval, 3.0)


@dataclass(frozen=True)
class RecorderStatus:
    instance: str
    recorded: int
    spooled: int
    problems: dict[str, int]
    path: Path | None = None
    updated: float | None = None  # unix time of the last rewrite
    interval: float | None = None  # seconds between rewrites, when the owner rewrites it regularly
    stopped: bool = True  # files of older versions carry no flag: they are never called late

    def late_by(self, now: float) -> float | None:
        """Seconds since the last rewrite when the file is late (see module docstring), else None."""
        if self.stopped or self.interval is None or self.updated is None:
            return None
        age = now - self.updated
        return age if age > stale_after(self.interval) else None


def read_statuses(data_dir: Path) -> list[RecorderStatus]:
    statuses = []
    for path in sorted((Path(data_dir) / "status").glob("*.json")):
        try:
            raw = json.loads(path.read_text())
            interval = raw.get("interval")
            statuses.append(
                RecorderStatus(
                    str(raw.get("instance", path.stem)),
                    int(raw.get("recorded", 0)),
                    int(raw.get("spooled", 0)),
                    {str(k): int(v) for k, v in dict(raw.get("problems", {})).items()},
                    path,
                    float(raw["updated"]) if "updated" in raw else None,
                    float(interval) if interval is not None else None,
                    bool(raw.get("stopped", interval is None)),
                )
            )
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # being replaced right now, or not ours
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


def late_statuses(statuses: list[RecorderStatus], now: float | None = None) -> list[tuple[RecorderStatus, float]]:
    """The statuses not rewritten in time by a recorder not marked stopped, with their age."""
    now = time.time() if now is None else now
    return [(s, age) for s in statuses if (age := s.late_by(now)) is not None]


def add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for kind, n in counts.items():
        into[kind] = into.get(kind, 0) + n


@dataclass
class StatusFile:
    """Writes one status file atomically (temporary file, rename), readable by its owner only
    (see analysis.store.modes). A failure is counted with `count(kind, detail)` and printed on
    stderr the first time its kind occurs."""

    path: Path
    count: Callable[[str, str], None] | None = None
    _failed_kinds: set[str] = field(default_factory=set)

    def write(self, status: dict) -> bool:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            make_dir(self.path.parent)
            create_private_file(tmp, json.dumps(status).encode())
            os.replace(tmp, self.path)
            return True
        except OSError as e:
            self._failed(e)
            return False

    def _failed(self, e: OSError) -> None:
        code = errno.errorcode.get(e.errno, "") if e.errno else ""
        kind = f"status_write_failed:{code or type(e).__name__}"
        reason = e.strerror or str(e)
        if self.count is not None:
            self.count(kind, reason)
        if kind not in self._failed_kinds:
            self._failed_kinds.add(kind)
            print(
                f"llm-shadow: cannot write the status file {self.path}: {reason} "
                "(said once; llm-shadow stats will say it is not updated)",
                file=sys.stderr,
                flush=True,
            )


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
