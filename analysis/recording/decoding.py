"""Content-decoding of bodies chunk by chunk, so each decoded piece keeps its arrival time.

The recorder forwards the upstream's bytes untouched (still gzip- or brotli-encoded) and keeps a
copy of each chunk with its time; the worker thread decodes them here before parsing.
"""

import zlib

import brotli
import zstandard


class DecodeError(ValueError):
    pass


class _Identity:
    def process(self, data: bytes) -> bytes:
        return data


class _Zlib:
    def __init__(self, wbits: int):
        self._d = zlib.decompressobj(wbits)

    def process(self, data: bytes) -> bytes:
        return self._d.decompress(data)


class _Brotli:
    def __init__(self):
        self._d = brotli.Decompressor()

    def process(self, data: bytes) -> bytes:
        return self._d.process(data)


class _Zstd:
    def __init__(self):
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def process(self, data: bytes) -> bytes:
        return self._d.decompress(data)


def _decoder(encoding: str):
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Zlib(32 + zlib.MAX_WBITS)  # zlib or gzip header, auto-detected
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    raise DecodeError(f"unsupported content-encoding {encoding!r}")


def decode_chunks(chunks: list[tuple[float, bytes]], content_encoding: str) -> list[tuple[float, bytes]]:
    """Decode (time, bytes) chunks of a body sent with `content_encoding` (may be a list)."""
    encodings = [e for e in content_encoding.split(",") if e.strip()]
    if not encodings:
        return chunks
    # Encodings are listed in the order applied: undo them in reverse.
    decoders = [_decoder(e) for e in reversed(encodings)]
    out = []
    try:
        for at, data in chunks:
            for d in decoders:
                data = d.process(data)
            out.append((at, data))
    except (zlib.error, brotli.error, zstandard.ZstdError) as e:
        raise DecodeError(f"cannot decode {content_encoding} body: {e}") from e
    return out


def decode_body(body: bytes, content_encoding: str) -> bytes:
    return b"".join(data for _, data in decode_chunks([(0.0, body)], content_encoding))
