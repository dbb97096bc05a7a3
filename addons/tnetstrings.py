"""Decoding a flow file's records faster than `mitmproxy.io.tnetstring.loads`, to the same values.

An import spends a quarter of its time turning a flow's bytes into its state: mitmproxy's
decoder looks for each length prefix's colon one byte at a time in Python and slices a
memoryview at every element (a flow has a couple of hundred). This one finds the colon with
`bytes.find` and walks positions in one bytes object; the values (bytes, str, int, float, bool,
None, list, dict) and the errors (ValueError for anything that is not a well-formed tnetstring)
are mitmproxy's, which tests/test_import.py checks on every flow of a generated month (a length
prefix must be digits here, where mitmproxy's `int()` would also take a sign or underscores). The flow
itself is still built by mitmproxy (`Flow.from_state`) and recorded through the recorder's hooks.
"""


def loads(data: bytes) -> object:
    """The value of the tnetstring at the start of `data` (what follows it is ignored, as
    mitmproxy's `loads` ignores it)."""
    return _parse(data, 0, len(data))[0]


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
    if tag == 125:  # } dict
        d = {}
        p = start
        while p < end:
            key, p = _parse(data, p, end)
            d[key], p = _parse(data, p, end)
        return d, end + 1
    if tag == 93:  # ] list
        items = []
        p = start
        while p < end:
            item, p = _parse(data, p, end)
            items.append(item)
        return items, end + 1
    literal = data[start:end]
    if tag == 35:  # # int
        try:
            return int(literal), end + 1
        except ValueError:
            raise ValueError(f"not a tnetstring: invalid integer literal: {literal!r}") from None
    if tag == 94:  # ^ float
        try:
            return float(literal), end + 1
        except ValueError:
            raise ValueError(f"not a tnetstring: invalid float literal: {literal!r}") from None
    if tag == 33:  # ! bool
        if literal in (b"true", b"false"):
            return literal == b"true", end + 1
        raise ValueError(f"not a tnetstring: invalid boolean literal: {literal!r}")
    if tag == 126:  # ~ null
        if literal:
            raise ValueError(f"not a tnetstring: invalid null literal: {literal!r}")
        return None, end + 1
    raise ValueError(f"unknown type tag: {tag}")
