"""Importing recorded traffic (mitmproxy flow files, HAR files) through the recorder itself.

Each flow is replayed through a mitmproxy master carrying the same `Recorder` addon the proxy
runs, with the same hook sequence `mitmdump -nr FILE` uses, so an imported call is recorded
exactly as a live one would be. Every file is read once in full before anything is recorded:
a broken file stops the import with nothing written.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

from mitmproxy import exceptions, http, io, options
from mitmproxy.master import Master

from addons.recorder import Recorder, options_from_settings
from analysis.recording.settings import RecorderSettings


class ImportFailed(Exception):
    """A file could not be read as mitmproxy flows or HAR."""


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


def import_files(
    paths: list[Path],
    settings: RecorderSettings,
    on_flow: Callable[[], None] | None = None,
) -> Recorder:
    """Record every HTTP flow in `paths` with `settings`; return the recorder (its counters).

    Flows are read as fast as the worker thread takes them: a queue limit would only drop
    calls, so give `queue_limit=0` (no limit) unless memory matters more than completeness."""
    return asyncio.run(_import(paths, settings, on_flow))


async def _import(paths, settings: RecorderSettings, on_flow) -> Recorder:
    opts = options.Options()
    master = Master(opts)
    recorder = Recorder(worker_process=False)
    master.addons.add(recorder)
    opts.update(**options_from_settings(settings))
    recorder.start()
    try:
        for path in paths:
            with open(path, "rb") as f:
                for flow in io.FlowReader(f).stream():
                    if not isinstance(flow, http.HTTPFlow):
                        continue
                    await master.load_flow(flow)
                    if on_flow:
                        on_flow()
    finally:
        recorder.done()
    return recorder
