"""The data directory: immutable Parquet segments that DuckDB queries as one relation.

DuckDB lets one process open a database file read-write and nobody else read it, so a proxy
holding `shadow.duckdb` open would block every report. Instead each recorder process (an
*instance*) writes its records in batches as small immutable Parquet files, one per flush:

    <data>/records/<instance>-L0-000000000042-000000000042.parquet   rows of `requests`
    <data>/contents/<instance>-L0-000000000042-000000000042.parquet  rows of `contents`

A file is written under a temporary name and renamed into place, so a reader never sees half a
file and a crash loses at most the batch not yet flushed. Readers (`Store.connect`) open an
in-memory DuckDB with views over the files present, so any number of readers and writers work
at once. To keep the file count small the writer merges its own files: sixteen files of level L
become one file of level L+1 covering the same sequence range. A file whose range lies inside
another file's range is superseded: readers skip it, and the writer deletes it a few minutes
later, after any query that listed it has finished.

Schema changes are numbered migrations (`MIGRATIONS`), applied once when a data directory is
opened and recorded in `<data>/meta.json`. Columns added to `analysis.store.schema` need no
migration: the views read old files by name and fill columns they lack with NULL.

This module owns the SQL that touches files; the rest of llm-shadow asks it for relations.
"""

import contextlib
import fcntl
import io
import json
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from analysis.store import StoreError
from analysis.store.modes import OWNER_DIR, create_private_file, make_dir, modes, restrict
from analysis.store.rows import ContentRow, RequestRow
from analysis.store.schema import CONTENTS, DECISIONS, REQUESTS, Column, polars_schema

MERGE_FAN_IN = 16
SUPERSEDED_GRACE_SECONDS = 300.0

_SEGMENT_NAME = re.compile(r"^(?P<instance>.+)-L(?P<level>\d+)-(?P<lo>\d{12})-(?P<hi>\d{12})\.parquet$")


@dataclass(frozen=True)
class Segment:
    path: Path
    instance: str
    level: int
    lo: int
    hi: int

    @classmethod
    def from_path(cls, path: Path) -> "Segment | None":
        m = _SEGMENT_NAME.match(path.name)
        if not m:
            return None
        return cls(path, m["instance"], int(m["level"]), int(m["lo"]), int(m["hi"]))

    def covers(self, other: "Segment") -> bool:
        return (
            self.instance == other.instance and self.path != other.path and self.lo <= other.lo and other.hi <= self.hi
        )


def segment_name(instance: str, level: int, lo: int, hi: int) -> str:
    return f"{instance}-L{level}-{lo:012d}-{hi:012d}.parquet"


def new_instance_name() -> str:
    host = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:20] or "host"
    return f"{host}{os.getpid()}x{secrets.token_hex(3)}"


def new_id(at: float | None = None) -> str:
    """A time-ordered unique id: 12 hex digits of milliseconds, then 10 random hex digits.

    The random part need not be secret, only unlikely to repeat within a millisecond."""
    millis = int((time.time() if at is None else at) * 1000)
    # One number formatted once, not two formatted and joined: enforce mode gives every call an
    # id on the proxy's event loop. The same digits while millis has at most 12 (until year 10889).
    return f"{millis << 40 | random.getrandbits(40):022x}"


# --- migrations -------------------------------------------------------------------------------


def m001_initial(data_dir: Path) -> None:
    for sub in ("records", "contents", "prices", "simulations"):
        make_dir(data_dir / sub, data_dir)
    salt_path = data_dir / "salt"
    if not salt_path.exists():
        fd = os.open(salt_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))


def m002_decisions(data_dir: Path) -> None:
    make_dir(data_dir / "decisions", data_dir)


MIGRATIONS: list[Callable[[Path], None]] = [m001_initial, m002_decisions]


def _read_meta(data_dir: Path) -> dict:
    path = data_dir / "meta.json"
    if not path.exists():
        return {"migrations": []}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from e


def _write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    create_private_file(tmp, (json.dumps(value, indent=2) + "\n").encode(), path.parent)
    os.replace(tmp, path)


def pending_migrations(data_dir: Path) -> list[str]:
    """The migrations this data directory lacks (read without writing anything); StoreError when
    a newer llm-shadow wrote it."""
    done = set(_read_meta(data_dir).get("migrations", []))
    known = {m.__name__ for m in MIGRATIONS}
    if unknown := sorted(done - known):
        raise StoreError(
            f"{data_dir} was written by a newer llm-shadow (migrations {', '.join(unknown)}); upgrade llm-shadow"
        )
    return [m.__name__ for m in MIGRATIONS if m.__name__ not in done]


def migrate(data_dir: Path) -> list[str]:
    """Apply the migrations this data directory lacks; return the names applied."""
    if not pending_migrations(data_dir):
        return []  # nothing to do: no lock taken, nothing written
    with _exclusive_lock(data_dir, "migrate.lock"):
        meta = _read_meta(data_dir)
        done = set(meta.get("migrations", []))
        known = {m.__name__ for m in MIGRATIONS}
        if unknown := sorted(done - known):
            raise StoreError(
                f"{data_dir} was written by a newer llm-shadow (migrations {', '.join(unknown)}); upgrade llm-shadow"
            )
        applied = []
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                migration(data_dir)
                applied.append(migration.__name__)
        if applied:
            meta["migrations"] = [m.__name__ for m in MIGRATIONS if m.__name__ in done or m.__name__ in applied]
            _write_json_atomic(data_dir / "meta.json", meta)
        return applied


@contextlib.contextmanager
def _exclusive_lock(data_dir: Path, name: str, blocking: bool = True) -> Iterator[bool]:
    fd = os.open(data_dir / name, os.O_RDWR | os.O_CREAT, modes(data_dir)[1])
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# --- the store --------------------------------------------------------------------------------


class Store:
    """A data directory, opened (and migrated) for reading and writing; or, `read_only`, for
    reading only: nothing is created or migrated (a read-only mount, or a directory owned by the
    proxy's user, reads as well; the views need no migration)."""

    def __init__(self, data_dir: str | os.PathLike, create: bool = True, read_only: bool = False):
        self.data_dir = Path(data_dir)
        try:
            if not self.data_dir.exists():
                if not create or read_only:
                    raise StoreError(f"no data directory at {self.data_dir}")
                self.data_dir.mkdir(parents=True, mode=OWNER_DIR)
            if not self.data_dir.is_dir():
                raise StoreError(f"{self.data_dir} is not a directory")
            for sub in ("records", "contents", "decisions"):
                if (self.data_dir / sub).exists() and not (self.data_dir / sub).is_dir():
                    raise StoreError(f"{self.data_dir / sub} is not a directory")
            if read_only:
                pending_migrations(self.data_dir)
            else:
                migrate(self.data_dir)
        except OSError as e:
            raise StoreError(f"cannot use data directory {self.data_dir}: {e.strerror or e}") from e

    @property
    def records_dir(self) -> Path:
        return self.data_dir / "records"

    @property
    def contents_dir(self) -> Path:
        return self.data_dir / "contents"

    @property
    def decisions_dir(self) -> Path:
        return self.data_dir / "decisions"

    def relations(self) -> tuple[tuple[Path, list[Column]], ...]:
        """Each relation's segment directory and columns."""
        return ((self.records_dir, REQUESTS), (self.contents_dir, CONTENTS), (self.decisions_dir, DECISIONS))

    def salt(self) -> str:
        return (self.data_dir / "salt").read_text().strip()

    def quarantine(self, instance: str, relation: str, row: dict, reason: str) -> None:
        """Keep a row that cannot be written as a segment in `<data>/quarantine/<instance>.jsonl`,
        with the reason (values that JSON cannot hold are kept as their repr). Raises OSError."""
        directory = self.data_dir / "quarantine"
        make_dir(directory, self.data_dir)
        line = json.dumps({"relation": relation, "reason": reason, "row": row}, default=repr, ensure_ascii=True)
        fd = os.open(directory / f"{instance}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, modes(self.data_dir)[1])
        with os.fdopen(fd, "a", encoding="ascii") as f:
            f.write(line + "\n")

    # --- reading

    def connect(self, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with the views `requests`, `contents` and `decisions`.

        `sandboxed` (what `llm-shadow sql` gives a user's query): the connection can read files
        in the data directory only, install or load no extension, and its configuration is
        locked; run only statements `read_only_violation` accepts on it."""
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        _create_view(con, "requests", REQUESTS, live_segments(self.records_dir))
        _create_view(con, "contents", CONTENTS, live_segments(self.contents_dir))
        _create_view(con, "decisions", DECISIONS, live_segments(self.decisions_dir))
        if sandboxed:
            directory = _sql_string(str(self.data_dir.resolve()) + os.sep)
            con.execute(f"SET allowed_directories = [{directory}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET lock_configuration = true")
        return con

    def requests_frame(self, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        return self._frame(self.records_dir, REQUESTS, start, end)

    def contents_frame(self, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        return self._frame(self.contents_dir, CONTENTS, start, end)

    def decisions_frame(self, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        return self._frame(self.decisions_dir, DECISIONS, start, end)

    def _frame(
        self, directory: Path, columns: list[Column], start: datetime | None, end: datetime | None
    ) -> pl.DataFrame:
        """The relation as one polars frame in (ts, id) order, read straight from the segments
        (what the DuckDB view reads, without a copy through Arrow: the simulator loads millions)."""
        schema = polars_schema(columns)
        segments = live_segments(directory)
        if not segments:
            return pl.DataFrame(schema=schema)
        frame = pl.scan_parquet(
            [s.path for s in segments],
            schema=schema,
            missing_columns="insert",
            extra_columns="ignore",
            cast_options=pl.ScanCastOptions(integer_cast="upcast"),
        )
        if start is not None:
            frame = frame.filter(pl.col("ts") >= start)
        if end is not None:
            frame = frame.filter(pl.col("ts") < end)
        return frame.sort("ts", "id").collect()

    def recorded_usage_keys(self) -> set[str]:
        """The usage keys (see analysis.parsers.exchange.Parsed.usage_key) already recorded with tokens."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT DISTINCT usage_key FROM requests WHERE usage_key IS NOT NULL AND usage_source = 'provider'"
            ).fetchall()
        return {key for (key,) in rows}

    def recorded_import_keys(self) -> set[str]:
        """The import keys (see addons.importer) of the calls already imported."""
        with self.connect() as con:
            rows = con.execute("SELECT DISTINCT import_key FROM requests WHERE import_key IS NOT NULL").fetchall()
        return {key for (key,) in rows}

    # --- rewriting (purge, reprice)

    def rewrite_requests(self, transform: Callable[[pl.DataFrame], pl.DataFrame]) -> int:
        return self._rewrite(self.records_dir, REQUESTS, transform)

    def rewrite_contents(self, transform: Callable[[pl.DataFrame], pl.DataFrame]) -> int:
        return self._rewrite(self.contents_dir, CONTENTS, transform)

    def _rewrite(self, directory: Path, columns: list[Column], transform) -> int:
        """Replace every live segment by transform(segment); return the rows written.

        Each file is replaced atomically; a segment left with no rows is removed. Holds the
        rewrite lock so a recorder does not merge segments meanwhile.
        """
        written = 0
        with _exclusive_lock(self.data_dir, "rewrite.lock"):
            for segment in live_segments(directory):
                frame = read_segment(segment.path, columns)
                new = transform(frame)
                if new.height == 0:
                    segment.path.unlink()
                    continue
                if new.equals(frame):
                    written += new.height
                    continue
                write_segment(directory, segment.path.name, new)
                written += new.height
        return written

    def compact(self, quiet_seconds: float = 600.0, now: float | None = None) -> tuple[int, int]:
        """Merge each quiet instance's live segments into one, and delete segments superseded
        for longer than the grace period; return (segments merged away, files deleted).

        A recorder merges only its own segments while it runs; the segments of recorders that
        have stopped stay as they were left (up to a few dozen each). An instance is quiet when
        none of its files changed for `quiet_seconds`. The merged file covers the instance's
        whole sequence range, so readers skip the files it replaces at once, and the files
        themselves are deleted by a later compact, once no query can still be reading them.
        """
        now = time.time() if now is None else now
        merged = deleted = 0
        with _exclusive_lock(self.data_dir, "rewrite.lock"):
            for directory, columns in self.relations():
                live, superseded = split_superseded(all_segments(directory))
                for s in superseded:
                    covering = next((c for c in live if c.covers(s)), None)
                    if covering is not None and now - _mtime(covering.path) >= SUPERSEDED_GRACE_SECONDS:
                        with contextlib.suppress(FileNotFoundError):
                            s.path.unlink()
                            deleted += 1
                by_instance: dict[str, list[Segment]] = {}
                for s in live:
                    by_instance.setdefault(s.instance, []).append(s)
                for instance, group in by_instance.items():
                    if len(group) < 2 or any(now - _mtime(s.path) < quiet_seconds for s in group):
                        continue
                    group.sort(key=lambda s: s.lo)
                    frame = pl.concat([read_segment(s.path, columns) for s in group])
                    level = max(s.level for s in group) + 1
                    write_segment(directory, segment_name(instance, level, group[0].lo, group[-1].hi), frame)
                    merged += len(group)
        return merged, deleted

    def unquiet_instances(self, quiet_seconds: float = 600.0, now: float | None = None) -> dict[str, float]:
        """The instances `compact(quiet_seconds)` leaves alone because a file of theirs changed
        lately, though they have segments to merge: instance -> seconds since that change."""
        now = time.time() if now is None else now
        recent: dict[str, float] = {}
        for directory, _ in self.relations():
            by_instance: dict[str, list[Segment]] = {}
            for s in live_segments(directory):
                by_instance.setdefault(s.instance, []).append(s)
            for instance, group in by_instance.items():
                age = min(now - _mtime(s.path) for s in group)
                if len(group) >= 2 and age < quiet_seconds:
                    recent[instance] = min(age, recent.get(instance, age))
        return recent

    def purge_contents(self, older_than: datetime) -> int:
        """Delete stored contents recorded before `older_than`; return the rows deleted."""
        before = self._count("contents")
        self.rewrite_contents(lambda df: df.filter(pl.col("ts") >= older_than))
        return before - self._count("contents")

    def purge_requests(self, older_than: datetime) -> int:
        before = self._count("requests")
        self.rewrite_requests(lambda df: df.filter(pl.col("ts") >= older_than))
        return before - self._count("requests")

    def _count(self, view: str) -> int:
        with self.connect() as con:
            row = con.execute(f"SELECT count(*) FROM {view}").fetchone()
            return row[0] if row else 0


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


def read_only_violation(sql: str) -> str | None:
    """Why `sql` is not a read-only query (None when every statement in it only reads)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        return str(e).splitlines()[0]
    if not statements:
        return "no statement given"
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            return f"{kind} statements can change files or state; queries are read-only unless --allow-write is given"
    return None


def query_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run `sql` and return its result as a polars DataFrame (empty for a statement)."""
    relation = con.sql(sql, params=params or None)
    return relation.pl() if relation is not None else pl.DataFrame()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def time_filter(since: datetime | None, until: datetime | None, extra: str | None = None) -> tuple[str, list]:
    """A WHERE clause (and its parameters) for `since <= ts < until`, and `extra` if given."""
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    if extra:
        clauses.append(extra)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_view(con: duckdb.DuckDBPyConnection, name: str, columns: list[Column], segments: list[Segment]) -> None:
    if not segments:
        select = ", ".join(f'CAST(NULL AS {c.sql_type}) AS "{c.name}"' for c in columns)
        con.execute(f"CREATE VIEW {name} AS SELECT {select} WHERE false")
        return
    files = "[" + ", ".join(_sql_string(str(s.path)) for s in segments) + "]"
    source = f"read_parquet({files}, union_by_name = true)"
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    select = ", ".join(
        f'CAST("{c.name}" AS {c.sql_type}) AS "{c.name}"'
        if c.name in present
        else f'CAST(NULL AS {c.sql_type}) AS "{c.name}"'
        for c in columns
    )
    con.execute(f"CREATE VIEW {name} AS SELECT {select} FROM {source}")


# --- segments -----------------------------------------------------------------------------------


def all_segments(directory: Path) -> list[Segment]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    segments = (Segment.from_path(directory / n) for n in names if not n.startswith("."))
    return [s for s in segments if s is not None]


def split_superseded(segments: list[Segment]) -> tuple[list[Segment], list[Segment]]:
    """Split segments into (live, superseded): superseded ones lie inside another's range."""
    by_instance: dict[str, list[Segment]] = {}
    for s in segments:
        by_instance.setdefault(s.instance, []).append(s)
    live, superseded = [], []
    for group in by_instance.values():
        # Widest first: a segment is superseded if an already-kept segment covers it.
        group.sort(key=lambda s: (s.lo, -(s.hi - s.lo), -s.level))
        kept_hi = -1
        for s in group:
            if s.hi <= kept_hi:
                superseded.append(s)
            else:
                live.append(s)
                kept_hi = s.hi
    return live, superseded


def live_segments(directory: Path) -> list[Segment]:
    return split_superseded(all_segments(directory))[0]


def read_segment(path: Path, columns: list[Column]) -> pl.DataFrame:
    frame = pl.read_parquet(path)
    schema = polars_schema(columns)
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def write_segment(directory: Path, name: str, frame: pl.DataFrame) -> Path:
    """Write `frame` as directory/name atomically (temporary file, fsync, rename)."""
    final = directory / name
    tmp = directory / f".{name}.tmp"
    frame.write_parquet(tmp, compression="zstd")
    restrict(tmp, directory.parent)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def rows_to_frame(rows: Sequence[RequestRow | ContentRow | dict], columns: list[Column]) -> pl.DataFrame:
    """A frame of `rows` with exactly `columns`. Rows are the row types of analysis.store.rows,
    or dicts whose keys are columns (a missing key is NULL); an unknown key is a ValueError,
    never a silently dropped value."""
    names = [c.name for c in columns]
    known = set(names)
    data: dict[str, list] = {name: [] for name in names}
    for row in rows:
        if isinstance(row, dict):
            if unknown := row.keys() - known:
                raise ValueError(f"not a column: {', '.join(sorted(unknown))}")
            for name in names:
                data[name].append(row.get(name))
        else:
            for name in names:
                data[name].append(getattr(row, name))
    return pl.DataFrame(data, schema=polars_schema(columns))


def unwritable_reason(row: dict, columns: list[Column]) -> str | None:
    """Why this row alone cannot be written as a segment (None: it can)."""
    try:
        rows_to_frame([row], columns).write_parquet(io.BytesIO())
    except Exception as e:  # whatever polars or Parquet refuses
        return f"{type(e).__name__}: {e}"[:500]
    return None


class SegmentWriter:
    """Writes one instance's batches as segments and merges them as they accumulate."""

    def __init__(self, store: Store, instance: str | None = None):
        self.store = store
        self.instance = instance or new_instance_name()
        self.sequence = self._next_sequence()
        self._superseded_at: dict[Path, float] = {}

    def _next_sequence(self) -> int:
        mine = [s.hi for s in all_segments(self.store.records_dir) if s.instance == self.instance]
        return max(mine, default=-1) + 1

    def write(
        self,
        requests: Sequence[RequestRow | dict],
        contents: Sequence[ContentRow | dict],
        decisions: Sequence[dict] = (),
    ) -> None:
        """Write one batch. Raises OSError (disk full, permission) and leaves no partial file."""
        seq = self.sequence
        name = segment_name(self.instance, 0, seq, seq)
        if decisions:
            write_segment(self.store.decisions_dir, name, rows_to_frame(list(decisions), DECISIONS))
        if contents:
            write_segment(self.store.contents_dir, name, rows_to_frame(contents, CONTENTS))
        if requests:
            write_segment(self.store.records_dir, name, rows_to_frame(requests, REQUESTS))
        self.sequence += 1

    def maintain(self, now: float | None = None) -> None:
        """Merge full levels of this instance's segments and delete long-superseded ones.

        Skipped (not waited for) while a purge or reprice holds the rewrite lock.
        """
        now = time.monotonic() if now is None else now
        with _exclusive_lock(self.store.data_dir, "rewrite.lock", blocking=False) as locked:
            if not locked:
                return
            for directory, columns in self.store.relations():
                self._merge_full_levels(directory, columns)
                self._delete_superseded(directory, now)

    def _merge_full_levels(self, directory: Path, columns: list[Column]) -> None:
        while True:
            live = [s for s in live_segments(directory) if s.instance == self.instance]
            by_level: dict[int, list[Segment]] = {}
            for s in live:
                by_level.setdefault(s.level, []).append(s)
            full = [lvl for lvl, segs in by_level.items() if len(segs) >= MERGE_FAN_IN]
            if not full:
                return
            level = min(full)
            group = sorted(by_level[level], key=lambda s: s.lo)[:MERGE_FAN_IN]
            frame = pl.concat([read_segment(s.path, columns) for s in group])
            write_segment(directory, segment_name(self.instance, level + 1, group[0].lo, group[-1].hi), frame)

    def _delete_superseded(self, directory: Path, now: float) -> None:
        _, superseded = split_superseded(all_segments(directory))
        for s in superseded:
            if s.instance != self.instance:
                continue
            first_seen = self._superseded_at.setdefault(s.path, now)
            if now - first_seen >= SUPERSEDED_GRACE_SECONDS:
                with contextlib.suppress(FileNotFoundError):
                    s.path.unlink()
                self._superseded_at.pop(s.path, None)
