"""Decoding a flow file's records faster than `mitmproxy.io.tnetstring.loads`, to the same values.

An import spends a quarter of its time turning a flow's bytes into its state: mitmproxy's
decoder looks for each length prefix's colon one byte at a time in Python and slices a
memoryview at every element (a flow has a couple of hundred). This one finds the colon with
`bytes.find` and walks positions in one bytes object; the values (bytes, str, int, float, bool,
None, list, dict) and the errors (ValueError for anything that is not a well-formed tnetstring)
are mitmproxy's, which tests/test_import.py checks on every flow of a generated month (a length
prefix must be digits here, where mitmproxy's `int()` would also take a sign or underscores). The flow
itself is then made by `addons.flow_records` and recorded through the recorder's hooks.
"""

_MAX_PREFIX = 13  # digits of a length prefix and its colon


def loads(data: bytes) -> object:
    """The value of the tnetstring at the start of `data` (what follows it is ignored, as
    mitmproxy's `loads` ignores it)."""
    return _parse(data, 0, len(data))[0]


def loads_dict(data: bytes, leave_out: frozenset[str] = frozenset()) -> dict:
    """The dictionary at the start of `data`, without the entries whose key is in `leave_out`:
    their values are stepped over by their length prefix, neither decoded nor checked (a flow's
    connections, most of its bytes' structure, are of no use to an import)."""
    colon = data.find(b":", 0, _MAX_PREFIX)
    prefix = data[:colon]
    if colon < 0 or not prefix.isdigit():
        raise ValueError("not a tnetstring: missing or invalid length prefix at byte 0")
    start = colon + 1
    end = start + int(prefix)
    if end >= len(data) or data[end] != 125:
        raise ValueError("not a tnetstring dictionary")
    d = {}
    p = start
    while p < end:
        key, p = _parse(data, p, end)
        if key in leave_out:
            p = _step_over(data, p, end)
        else:
            d[key], p = _parse(data, p, end)
    return d


def _step_over(data: bytes, position: int, limit: int) -> int:
    """The position after the value starting at `position`, found from its length prefix."""
    colon = data.find(b":", position, min(limit, position + _MAX_PREFIX))
    prefix = data[position:colon]
    if colon < 0 or not prefix.isdigit():
        raise ValueError(f"not a tnetstring: missing or invalid length prefix at byte {position}")
    end = colon + 1 + int(prefix)
    if end >= limit:
        raise ValueError(f"not a tnetstring: invalid length prefix: {int(prefix)}")
    return end + 1


def _contents(data: bytes, position: int, end: int) -> list:
    """The values from `position` to `end` (a list's items, a dictionary's keys and values), read
    in one loop: a call per value would cost more than reading most values does."""
    values: list[object] = []
    while position < end:
        colon = data.find(b":", position, end)
        prefix = data[position:colon]
        if colon < 0 or not prefix.isdigit():
            raise ValueError(f"not a tnetstring: missing or invalid length prefix at byte {position}")
        start = colon + 1
        stop = start + int(prefix)
        if stop >= end:
            raise ValueError(f"not a tnetstring: invalid length prefix: {int(prefix)}")
        tag = data[stop]
        if tag == 44:  # , bytes
            values.append(data[start:stop])
        elif tag == 59:  # ; text
            values.append(data[start:stop].decode("utf8"))
        elif tag == 93:  # ] list
            values.append(_contents(data, start, stop))
        elif tag == 125:  # } dict
            values.append(_dict(_contents(data, start, stop)))
        else:
            values.append(_literal(data[start:stop], tag))
        position = stop + 1
    return values


def _dict(values: list) -> dict:
    if len(values) % 2:
        raise ValueError("not a tnetstring: a dictionary key has no value")
    pairs = iter(values)
    return dict(zip(pairs, pairs, strict=True))


def _parse(data: bytes, position: int, limit: int) -> tuple[object, int]:
    """The value starting at `position` (ending before `limit`) and the position after it."""
    colon = data.find(b":", position, limit)
    prefix = data[position:colon]
    if colon < 0 or not prefix.isdigit():
        raise ValueError(f"not a tnetstring: missing or invalid length prefix at byte {position}")
    start = colon + 1
    end = start + int(prefix)
    if end >= limit:
        raise ValueError(f"not a tnetstring: invalid length prefix: {int(prefix)}")
    tag = data[end]
    if tag == 44:  # , bytes
        return data[start:end], end + 1
    if tag == 59:  # ; text
        return data[start:end].decode("utf8"), end + 1
    if tag == 93:  # ] list
        return _contents(data, start, end), end + 1
    if tag == 125:  # } dict
        return _dict(_contents(data, start, end)), end + 1
    return _literal(data[start:end], tag), end + 1


def _literal(literal: bytes, tag: int) -> object:
    """The int, float, bool or null `literal` with type tag `tag`."""
    if tag == 35:  # # int
        try:
            return int(literal)
        except ValueError:
            raise ValueError(f"not a tnetstring: invalid integer literal: {literal!r}") from None
    if tag == 94:  # ^ float
        try:
            return float(literal)
        except ValueError:
            raise ValueError(f"not a tnetstring: invalid float literal: {literal!r}") from None
    if tag == 33:  # ! bool
        if literal in (b"true", b"false"):
            return literal == b"true"
        raise ValueError(f"not a tnetstring: invalid boolean literal: {literal!r}")
    if tag == 126:  # ~ null
        if literal:
            raise ValueError(f"not a tnetstring: invalid null literal: {literal!r}")
        return None
    raise ValueError(f"unknown type tag: {tag}")
