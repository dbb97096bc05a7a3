"""Find the line of a key in TOML text, so a policy error can say where it is.

`tomllib` reports line numbers for syntax errors only; once a file parses, a wrong value has no
position. `key_line` recovers one by scanning the text the way a reader would: it walks the
table headers (`[a.b]`, `[[a]]`, counting repeated array headers), then looks for the key inside
that table's lines, written plainly, quoted, or as a dotted key under a parent table. It is a
best effort for the files people write by hand: when the key cannot be found it falls back to
the table's header, then to line 1.
"""

import re

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")

Path = tuple[str | int, ...]


def _normalise_dotted(name: str) -> str:
    return ".".join(part.strip().strip('"').strip("'") for part in name.split("."))


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(header path with [[array]] occurrences numbered "name#k", first line, end line)."""
    sections: list[tuple[str, int, int]] = []
    counts: dict[str, int] = {}
    current, start = "", 0
    for number, line in enumerate(lines):
        array = _ARRAY_HEADER.match(line)
        table = None if array else _TABLE_HEADER.match(line)
        if not (array or table):
            continue
        sections.append((current, start, number))
        if array:
            name = _normalise_dotted(array.group(1))
            index = counts.get(name, 0)
            counts[name] = index + 1
            current = f"{name}#{index}"
        else:
            current = _normalise_dotted(table.group(1))
        start = number
    sections.append((current, start, len(lines)))
    return sections


def _header_name(path: Path) -> str:
    """("routing", 2) -> "routing#2"; ("cache", "exact") -> "cache.exact"."""
    name = ""
    for part in path:
        if isinstance(part, int):
            name += f"#{part}"
        else:
            name = f"{name}.{part}" if name else part
    return name


def _key_pattern(dotted_key: list[str]) -> re.Pattern[str]:
    parts = [rf"""(?:{re.escape(k)}|"{re.escape(k)}"|'{re.escape(k)}')""" for k in dotted_key]
    return re.compile(r"^\s*" + r"\s*\.\s*".join(parts) + r"\s*=")


def key_line(text: str, path: Path) -> int:
    """1-based line of `path` (table parts, array indexes, then the key) in `text`."""
    lines = text.splitlines()
    sections = _sections(lines)
    by_name = {name: (start, end) for name, start, end in sections}
    # Try the longest table prefix that has its own header, the rest as a dotted key.
    for split in range(len(path), -1, -1):
        table, key = path[:split], path[split:]
        if any(isinstance(part, int) for part in key):
            continue
        name = _header_name(table)
        if name not in by_name:
            continue
        start, end = by_name[name]
        if not key:
            return start + 1
        pattern = _key_pattern([str(k) for k in key])
        for number in range(start, end):
            if pattern.match(lines[number]):
                return number + 1
    # The key is not written out (a missing key): point at the nearest header.
    for split in range(len(path), 0, -1):
        name = _header_name(path[:split])
        for candidate in (name, f"{name}#0"):
            if name and candidate in by_name:
                return by_name[candidate][0] + 1
    return 1


def describe(table: Path, key: str | None = None) -> str:
    """How an error names a place: (("routing", 2), "to") -> '[[routing]] "to"'."""
    names = [part for part in table if isinstance(part, str)]
    is_array = any(isinstance(part, int) for part in table)
    header = ".".join(names)
    if header:
        header = f"[[{header}]]" if is_array else f"[{header}]"
    if key is None:
        return header or "(top level)"
    return f'{header} "{key}"' if header else f'"{key}"'
