"""Just enough PNG decoding to tell a drawn chart from a blank box: 8-bit RGB(A), not interlaced.

`pixels(png)` returns the image's size and its pixels as (r, g, b) tuples, row by row;
`ink(png)` summarises them: how many colours appear and what share of the pixels is not
near-white. Screenshots are taken scaled down, so pure Python is quick enough.
"""

import struct
import zlib
from collections import Counter
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def pixels(png: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    if not png.startswith(SIGNATURE):
        raise ValueError("not a PNG file")
    pos, idat = len(SIGNATURE), bytearray()
    width = height = channels = None
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    previous = bytearray(stride)
    out: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + previous[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                up_left = previous[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, previous[i], up_left)) & 0xFF
        out.extend(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return width, height, out


@dataclass
class Ink:
    width: int
    height: int
    colours: int  # distinct colours
    inked_share: float  # share of pixels that are not near-white


def ink(png: bytes) -> Ink:
    width, height, rgb = pixels(png)
    inked = sum(1 for r, g, b in rgb if min(r, g, b) < 235)
    return Ink(width, height, len(Counter(rgb)), inked / len(rgb) if rgb else 0.0)
