"""Importing recorded traffic (mitmproxy flow files, HAR files) through the recorder itself.

Each flow is replayed through a mitmproxy master carrying the same `Recorder` addon the proxy
runs, with the same hook sequence `mitmdump -nr FILE` uses, so an imported call is recorded
exactly as a live one would be. Every file is read once in full before anything is recorded:
a broken file stops the import with nothing written.

Imports are idempotent: every imported call carries an import key (`import_key` column), what
identifies it across files and runs: the flow's id for a mitmproxy flow file (mitmproxy keeps it
when flows are saved and read again), and for a HAR entry (whose flow ids mitmproxy makes up on
every read) a hash of its request, response and start time. A flow whose key is already in the
data directory, or was met earlier in the same import, is skipped and counted as already present.
"""

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import exceptions, http, io, options
from mitmproxy.master import Master

from addons.recorder import IMPORT_KEY, Recorder, options_from_settings
from analysis.parsers.detect import detect
from analysis.recording.settings import RecorderSettings
from analysis.recording.sink import Problems
from analysis.store.datadir import Store


class ImportFailed(Exception):
    """A file could not be read as mitmproxy flows or HAR."""


@dataclass
class ImportResult:
    recorded: int = 0  # LLM calls written
    already_present: int = 0  # LLM calls skipped: imported before, or twice in this import
    problems: Problems = field(default_factory=Problems)


def count_flows(path: Path) -> int:
    """Read `path` through once; return how many HTTP flows it holds, or raise ImportFailed."""
    try:
        with open(path, "rb") as f:
            return sum(1 for flow in io.FlowReader(f).stream() if isinstance(flow, http.HTTPFlow))
    except FileNotFoundError as e:
        raise ImportFailed(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise ImportFailed(f"{path}: is a directory") from e
    except PermissionError as e:
        raise ImportFailed(f"{path}: permission denied") from e
    except (exceptions.FlowReadException, ValueError, KeyError, TypeError) as e:
        raise ImportFailed(f"{path}: not a mitmproxy flow file or HAR file ({e})") from e


def is_har(path: Path) -> bool:
    """A HAR file is JSON (what mitmproxy's FlowReader also checks: a leading `{`, BOM or not)."""
    with open(path, "rb") as f:
        return f.read(4).lstrip(b"\xef\xbb\xbf").startswith(b"{")


def import_key(flow: http.HTTPFlow, har: bool) -> str:
    """What identifies an imported call across files and runs (see the module docstring)."""
    if not har:
        return f"flow:{flow.id}"
    request, response = flow.request, flow.response
    digest = hashlib.sha256()
    for part in (
        request.method.encode(),
        request.url.encode(),
        request.raw_content or b"",
        repr(request.timestamp_start).encode(),
        str(response.status_code if response is not None else "").encode(),
        (response.raw_content or b"") if response is not None else b"",
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return f"har:{digest.hexdigest()[:32]}"


def import_files(
    paths: list[Path],
    settings: RecorderSettings,
    on_flow: Callable[[], None] | None = None,
) -> ImportResult:
    """Record every HTTP flow in `paths` with `settings` (into `settings.data`) that is not
    there already.

    Flows are read as fast as the worker thread takes them: a queue limit would only drop
    calls, so give `queue_limit=0` (no limit) unless memory matters more than completeness."""
    return asyncio.run(_import(paths, settings, on_flow))


async def _import(paths, settings: RecorderSettings, on_flow) -> ImportResult:
    seen = Store(settings.data).recorded_import_keys()
    opts = options.Options()
    master = Master(opts)
    recorder = Recorder(worker_process=False)
    master.addons.add(recorder)
    opts.update(**options_from_settings(settings))
    result = ImportResult(problems=recorder.problems)
    recorder.start()
    try:
        for path in paths:
            har = is_har(path)
            with open(path, "rb") as f:
                for flow in io.FlowReader(f).stream():
                    if not isinstance(flow, http.HTTPFlow):
                        continue
                    key = import_key(flow, har)
                    if key in seen:
                        if detect(
                            flow.request.pretty_host, flow.request.path, flow.request.headers, flow.request.method
                        ):
                            result.already_present += 1
                    else:
                        seen.add(key)
                        flow.metadata[IMPORT_KEY] = key
                        await master.load_flow(flow)
                    if on_flow:
                        on_flow()
    finally:
        recorder.done()
    result.recorded = recorder.recorded
    return result
