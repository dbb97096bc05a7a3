"""Importing recorded traffic (mitmproxy flow files, HAR files) through the recorder itself.

Each flow is replayed through a mitmproxy master carrying the same `Recorder` addon the proxy
runs, with the same hook sequence `mitmdump -nr FILE` uses, so an imported call is recorded
exactly as a live one would be. Every file is read once in full before anything is recorded:
a broken file stops the import with nothing written.
"""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from mitmproxy import exceptions, http, io, options
from mitmproxy.master import Master

from addons.recorder import Recorder


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
    data_dir: Path,
    keep_content: bool = True,
    on_flow: Callable[[], None] | None = None,
) -> Recorder:
    """Record every HTTP flow in `paths` into `data_dir`; return the recorder (its counters)."""
    return asyncio.run(_import(paths, data_dir, keep_content, on_flow))


async def _import(paths, data_dir, keep_content, on_flow) -> Recorder:
    opts = options.Options()
    master = Master(opts)
    recorder = Recorder(queue_limit=None)
    master.addons.add(recorder)
    opts.update(shadow_data=os.fspath(data_dir), shadow_content=keep_content)
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
