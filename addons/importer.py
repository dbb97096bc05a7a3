"""Importing captured traffic (mitmproxy flow files, HAR files) through the recorder itself.

Each flow goes to the same `Recorder` addon the proxy runs, its hooks called in the order
`mitmdump -nr FILE` calls them (`flow_records.replay`), so an imported call is recorded exactly
as a live one would be. A flow file's records are read without mitmproxy's connection objects
(`flow_records.from_record`), the costliest part of decoding a flow, which the recorder never
reads. Every file is framed first (`addons.import_sources`): a file that is not a capture stops
the import with nothing written.

Decoding a flow and accounting it is CPU work (well under a millisecond per call), so a large
import is shared among processes, one per core: this one and helpers it starts, each with its
own recorder and segment writer, like separate proxies recording into one data directory. The
flows travel to the helpers as positions in the file (or HAR entries), in chunks; batch calls
all go, in file order, to one chunk (see `import_sources`). A small import runs in this process
alone: starting a helper (importing the recorder: about a second of CPU) costs more than it
would save.

Imports are idempotent: every imported call carries an import key (`import_key` column; see
`import_sources.import_key`). A flow whose key is already in the data directory, or was met
earlier in the same import, is skipped, and counted as already present when it is an LLM call.
"""

import logging
import math
import mmap
import multiprocessing
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import ctx, http, options
from mitmproxy.io.har import request_to_flow

from addons.flow_records import ImportedFlow, from_record, replay
from addons.import_sources import ImportFailed, Source, read_source
from addons.recorder import IMPORT_KEY, Recorder
from analysis.parsers.detect import detect
from analysis.pricing.check import Pricing
from analysis.recording.capture import Capture
from analysis.recording.settings import RecorderSettings
from analysis.recording.sink import Problems, RecordSink
from analysis.store.datadir import Store

__all__ = ["ImportFailed", "ImportResult", "import_files", "read_sources"]

# Below this many flows one process does the job: a worker takes about a second to start.
PARALLEL_FROM = 2_000
CHUNK_FLOWS = 250


class InlineSink(RecordSink):
    """The recorder's sink, accounting in the importing thread: an import has no event loop to
    keep free, and a worker thread would only take turns with this one for the interpreter lock.
    Rows are written every `batch_rows` calls."""

    batch_rows = 5_000

    def start(self) -> "InlineSink":
        return self

    def submit(self, capture: Capture) -> None:
        with self._pending_lock:
            self._pending += 1
        self._account(capture)
        if len(self._requests) >= self.batch_rows:
            self._flush()

    def close(self, timeout: float = 30.0) -> None:
        self._flush()
        self._write_status(stopped=True)


# (source index, record: a flow's (start, end) in its file or a HAR entry, import key, skip it)
Chunk = list[tuple[int, object, str, bool]]


@dataclass
class ImportResult:
    flows: int
    recorded: int  # LLM calls written
    already_present: int  # LLM calls skipped: imported before, or twice in this import
    problems: Problems
    cpu_seconds: float  # spent importing, by this process and its helpers (see bench/import.py)


def read_sources(paths: list[Path]) -> list[Source]:
    """Frame every file (see import_sources); ImportFailed names the first that is not a capture."""
    return [read_source(Path(p)) for p in paths]


def default_workers(flows: int) -> int:
    if flows < PARALLEL_FROM:
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def import_files(
    sources: list[Source],
    settings: RecorderSettings,
    on_progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportResult:
    """Record every HTTP flow of `sources` with `settings` (into `settings.data`; flows are read
    as fast as they are recorded, so give `queue_limit=0`). `on_progress(n)` is called as each
    batch of n flows is done; `workers`: processes to use (default: see default_workers)."""
    cpu = time.process_time()
    total = sum(len(s) for s in sources)
    workers = default_workers(total) if workers is None else max(1, workers)
    chunks = split(sources, workers, Store(settings.data).recorded_import_keys())
    files = FileFlows([(os.fspath(s.path), s.kind) for s in sources])
    before_recording = time.process_time() - cpu
    result = record_flows(files, chunks, settings, workers, on_progress)
    result.cpu_seconds += before_recording
    return result


def record_flows(
    producer: "FlowProducer",
    items: list,
    settings: RecorderSettings,
    workers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Record with `settings` the flows `producer` makes of each of `items` (a chunk of a file,
    a generated day...), in this process or shared among `workers` processes."""
    job = _Job(settings, producer)
    if workers == 1 or len(items) <= 1:
        problems, cpu = Problems(_quiet_log()), time.process_time()
        recorded, present, total = _record(job, iter(items), problems, on_progress)
        return ImportResult(total, recorded, present, problems, time.process_time() - cpu)
    return _record_in_workers(job, items, min(workers, len(items)), on_progress)


def split(sources: list[Source], workers: int, seen: set[str]) -> list[Chunk]:
    """Chunks of flows for `workers`: all batch calls in one chunk, first, in file order; the
    rest in chunks small enough that every worker gets several. A flow whose key is in `seen`
    (recorded already) or was met before is marked to be skipped."""
    ordered: Chunk = []
    rest: Chunk = []
    for index, source in enumerate(sources):
        marked = set(source.ordered)
        for i, (record, key) in enumerate(zip(source.records, source.keys, strict=True)):
            skip = key in seen
            seen.add(key)
            (ordered if i in marked else rest).append((index, record, key, skip))
    size = max(1, min(CHUNK_FLOWS, math.ceil(len(rest) / (workers * 4))))
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
    return ([ordered] if ordered else []) + chunks


# What a producer yields for each flow: the flow (None: not an HTTP flow, or unreadable),
# its import key, and whether to skip it (imported already).
ProducedFlow = tuple[http.HTTPFlow | ImportedFlow | None, str | None, bool]
FlowProducer = Callable[[object, Problems], Iterator[ProducedFlow]]


@dataclass
class _Job:
    settings: RecorderSettings
    producer: FlowProducer  # picklable: the workers get a copy


class FileFlows:
    """The producer of an import: decodes a chunk's records into flows (see addons.flow_records;
    a HAR entry by mitmproxy's HAR reader)."""

    def __init__(self, sources: list[tuple[str, str]]):
        self.sources = sources  # (path, kind)
        self._maps: dict[int, mmap.mmap] = {}

    def __getstate__(self) -> dict:
        return {"sources": self.sources, "_maps": {}}

    def __call__(self, chunk: Chunk, problems: Problems) -> Iterator[ProducedFlow]:
        for index, record, key, skip in chunk:
            try:
                f = self.decode(index, record)
            except Exception as e:  # framed like a flow, but not one: count it, go on
                problems.add(f"unreadable_flow:{type(e).__name__}", f"{self.sources[index][0]}: {e}")
                f = None
            yield (f if isinstance(f, http.HTTPFlow | ImportedFlow) else None), key, skip

    def decode(self, index: int, record) -> http.HTTPFlow | ImportedFlow | None:
        if self.sources[index][1] == "har":
            return request_to_flow(record)
        start, end = record
        data = self._maps.get(index)
        if data is None:
            with open(self.sources[index][0], "rb") as f:
                data = self._maps[index] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return from_record(data[start:end])


def _record(
    job: _Job, items: Iterator, problems: Problems, on_progress: Callable[[int], None] | None
) -> tuple[int, int, int]:
    """Feed the flows of `items` to one recorder; return the calls it wrote, the calls skipped,
    and the flows seen."""
    # mitmproxy's options, which the recorder reads where a live call's error needs them (no
    # master: it would import mitmproxy's every addon, a second of CPU in each worker).
    ctx.options = options.Options()
    store = Store(job.settings.data)
    recorder = Recorder(worker_process=False)
    recorder.problems = problems
    recorder.settings = job.settings
    sink = recorder.sink = InlineSink(store, Pricing.load(store.data_dir), job.settings, problems=problems)
    already_present = seen = 0
    try:
        for item in items:
            done = 0
            for f, key, skip in job.producer(item, problems):
                done += 1
                if f is None:
                    continue
                request = f.request
                if skip:
                    already_present += (
                        detect(request.pretty_host, request.path, request.headers, request.method) is not None
                    )
                    continue
                if key is not None:
                    f.metadata[IMPORT_KEY] = key
                try:
                    replay(recorder, f)
                except Exception as e:  # a flow mitmproxy could read but we cannot: count it, go on
                    problems.add(f"import_error:{type(e).__name__}", str(e))
            seen += done
            if on_progress:
                on_progress(done)
    finally:
        # What the recorder's done hook does, less its log line: the importer reports problems.
        recorder.sink = None
        sink.close()
    return sink.recorded, already_present, seen


def _record_in_workers(job: _Job, items: list, processes: int, on_progress) -> ImportResult:
    """Record `items` in this process and `processes - 1` helper processes, each taking the next
    item from one queue when it is done with the last: this process starts at once, the helpers
    as soon as they have imported the recorder, and all finish within an item of each other."""
    # Spawned, not forked (polars and DuckDB threads in this process could leave a lock held
    # in a fork) and not from a fork server (starting one makes this process wait for it).
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for item in items:
        tasks.put(item)
    for _ in range(processes):
        tasks.put(None)
    helpers = [
        context.Process(target=_worker_main, args=(job, tasks, results), name="llm-shadow-import", daemon=True)
        for _ in range(processes - 1)
    ]
    for p in helpers:
        p.start()
    problems = Problems(_quiet_log())
    totals = Counter()
    finished = 0

    def take(block: bool) -> None:
        """Pass on the helpers' progress, add up what finished helpers recorded."""
        nonlocal finished
        while finished < len(helpers):
            try:
                kind, value = results.get(timeout=0.5) if block else results.get_nowait()
            except queue.Empty:
                # A helper that ended normally sent its last message before it exited.
                if any(p.exitcode not in (0, None) for p in helpers):
                    raise ImportFailed(
                        "an import worker died; the data directory may hold part of the import"
                    ) from None
                if not block:
                    return
                continue
            if kind == "progress":
                if on_progress:
                    on_progress(value)
                continue
            recorded, present, seen, helper_problems, cpu = value
            totals.update(recorded=recorded, present=present, seen=seen, cpu=cpu)
            for name, n in helper_problems.items():
                problems.add(name, n=n)
            finished += 1

    def mine() -> Iterator:
        while (item := tasks.get()) is not None:
            yield item
            take(block=False)

    cpu = time.process_time()
    try:
        recorded, present, seen = _record(job, mine(), problems, on_progress)
        take(block=True)
    finally:
        for p in helpers:
            p.join(5 if finished == len(helpers) else 0)
            if p.is_alive():
                p.terminate()
    cpu_seconds = time.process_time() - cpu + totals["cpu"]
    return ImportResult(
        seen + totals["seen"], recorded + totals["recorded"], present + totals["present"], problems, cpu_seconds
    )


def _quiet_log() -> logging.Logger:
    """A logger that says nothing: the import command prints the problems' summary itself."""
    quiet = logging.getLogger("llm_shadow.import")
    quiet.disabled = True
    return quiet


def _worker_main(job: _Job, tasks, results) -> None:
    problems = Problems(_quiet_log())

    def items() -> Iterator:
        while (item := tasks.get()) is not None:
            yield item

    recorded, present, seen = _record(job, items(), problems, lambda n: results.put(("progress", n)))
    results.put(("done", (recorded, present, seen, Counter(problems.counts), time.process_time())))
