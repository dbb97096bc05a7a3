"""Splitting capture files into work for the importer, without decoding a single flow.

A mitmproxy flow file is a sequence of tnetstrings (`<length>:<payload><type>`), one per flow,
so its flows can be found by reading only the length prefixes: `read_source` walks the file
once, checks that every record is framed as a flow (a dictionary) and notes where it lies. A
file that is not framed that way (not a flow file, or cut short) fails here, before anything
is recorded. A HAR file is one JSON document: it is parsed here and its entries handed out as
they are. Decoding the flows themselves (the expensive part) happens in the import workers.

Batch calls (`.../batches...`) are marked `ordered`: a batch's usage is reported again by every
poll and kept on the first call only (`Parsed.usage_key`), which needs the polls recorded in
file order by one recorder.
"""

import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path


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
        position = type_at + 1
    return source


def _read_har(path: Path, f) -> Source:
    try:
        text = f.read().decode("utf-8-sig")
        entries = json.loads(text)["log"]["entries"]
        if not isinstance(entries, list):
            raise TypeError("log.entries is not a list")
        ordered = [i for i, e in enumerate(entries) if "batches" in e["request"]["url"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise _not_a_flow_file(path, f"unreadable HAR: {e}") from e
    return Source(path, "har", entries, ordered)


def _not_a_flow_file(path: Path, reason: str) -> ImportFailed:
    return ImportFailed(f"{path}: not a mitmproxy flow file or HAR file ({reason})")
