"""Splitting capture files into work for the importer, without decoding a single flow.

A mitmproxy flow file is a sequence of tnetstrings (`<length>:<payload><type>`), one per flow,
so its flows can be found by reading only the length prefixes: `read_source` walks the file
once, checks that every record is framed as a flow (a dictionary) and notes where it lies. A
file that is not framed that way (not a flow file, or cut short) fails here, before anything
is recorded. A HAR file is one JSON document: it is parsed here and its entries handed out as
they are. Decoding the flows themselves (the expensive part) happens in the import workers.

Every flow gets its import key here (what makes imports idempotent; see `import_key`), so the
importer can tell which flows are already in the data directory, or met twice in one import,
before handing them out. Batch calls (`.../batches...`) are marked `ordered`: a batch's usage is reported again by every
poll and kept on the first call only (`Parsed.usage_key`), which needs the polls recorded in
file order by one recorder.
"""

import hashlib
import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import http
from mitmproxy.io import tnetstring
from mitmproxy.io.har import request_to_flow


class ImportFailed(Exception):
    """A file could not be read as mitmproxy flows or HAR."""


_BOM = b"\xef\xbb\xbf"
_MAX_LENGTH_DIGITS = 12


@dataclass
class Source:
    """One capture file: `records` are the (start, end) byte positions of each flow's tnetstring
    in a flow file, or the entries of a HAR file; `ordered` are the indexes of batch calls."""

    path: Path
    kind: str  # "flows" or "har"
    records: list = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the import key of each record
    ordered: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def read_source(path: Path) -> Source:
    """Find the flows in `path`, or raise ImportFailed with a one-line reason."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(_BOM):
                head = head[3:]
            f.seek(0)
            if head.lstrip()[:1] == b"{":
                return _read_har(path, f)
            if not head:
                return Source(path, "flows")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _read_flow_file(path, data)
    except FileNotFoundError as e:
        raise ImportFailed(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise ImportFailed(f"{path}: is a directory") from e
    except PermissionError as e:
        raise ImportFailed(f"{path}: permission denied") from e


def _read_flow_file(path: Path, data) -> Source:
    source = Source(path, "flows")
    end, position = len(data), 0
    while position < end:
        colon = data.find(b":", position, position + _MAX_LENGTH_DIGITS)
        digits = data[position:colon] if colon > position else b""
        if not digits.isdigit():
            raise _not_a_flow_file(path, f"no flow record at byte {position}")
        length = int(digits)
        payload = colon + 1
        type_at = payload + length
        if type_at >= end:
            raise _not_a_flow_file(path, f"the flow at byte {position} is cut short")
        if data[type_at : type_at + 1] != b"}":
            raise _not_a_flow_file(path, f"the record at byte {position} is not a flow")
        if data.find(b"batches", payload, type_at) >= 0:
            source.ordered.append(len(source.records))
        source.records.append((position, type_at + 1))
        source.keys.append(f"flow:{_flow_id(path, data, payload, type_at)}")
        position = type_at + 1
    return source


def _flow_id(path: Path, data, position: int, end: int) -> str:
    """The `id` entry of the flow dictionary between `position` and `end`, other values skipped."""
    try:
        while position < end:
            key_end = _skip(data, position)
            value_end = _skip(data, key_end)
            if data[position:key_end] in (b"2:id;", b"2:id,"):
                value = tnetstring.loads(data[key_end:value_end])
                return value.decode() if isinstance(value, bytes) else str(value)
            position = value_end
    except ValueError as e:
        raise _not_a_flow_file(path, str(e)) from e
    raise _not_a_flow_file(path, f"the flow ending at byte {end} has no id")


def _skip(data, position: int) -> int:
    """Where the tnetstring starting at `position` ends."""
    colon = data.find(b":", position, position + _MAX_LENGTH_DIGITS)
    digits = data[position:colon] if colon > position else b""
    if not digits.isdigit():
        raise ValueError(f"not a tnetstring at byte {position}")
    return colon + 1 + int(digits) + 1


def import_key(flow: http.HTTPFlow, har: bool) -> str:
    """What identifies an imported call across files and runs: the flow's id for a mitmproxy flow
    file (mitmproxy keeps it when flows are saved and read again); for a HAR entry (whose flow ids
    mitmproxy makes up on every read) a hash of its request, response and start time."""
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


def _read_har(path: Path, f) -> Source:
    try:
        text = f.read().decode("utf-8-sig")
        entries = json.loads(text)["log"]["entries"]
        if not isinstance(entries, list):
            raise TypeError("log.entries is not a list")
        ordered = [i for i, e in enumerate(entries) if "batches" in e["request"]["url"]]
        keys = [import_key(request_to_flow(entry), har=True) for entry in entries]
    except Exception as e:  # mitmproxy's HAR reader raises what its input makes it raise
        if isinstance(e, OSError):
            raise
        raise _not_a_flow_file(path, f"unreadable HAR: {e}") from e
    return Source(path, "har", entries, keys, ordered)


def _not_a_flow_file(path: Path, reason: str) -> ImportFailed:
    return ImportFailed(f"{path}: not a mitmproxy flow file or HAR file ({reason})")
