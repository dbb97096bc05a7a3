"""Real recorded exchanges for the parser tests: pydantic-ai's VCR cassettes as `Exchange`s.

The cassettes live in the shared data folder (see shared/data/cassettes/SOURCE.txt), the
sibling of the repository root, or wherever LLM_SHADOW_SHARED points. An interaction becomes an
Exchange the way the recorder would build it: analysis.parsers.detect.detect() on the URI's host and
path decides the wire format (interactions it does not recognise are not LLM calls and are left
out), JSON bodies are the cassette's parsed_body re-serialised, and a raw body (an SSE stream)
is cut into a few chunks at fixed byte offsets, so that chunk boundaries fall inside lines,
CRLF pairs and UTF-8 sequences and the incremental decoders get exercised.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from analysis.parsers.detect import detect
from analysis.parsers.exchange import Exchange

STREAM_CHUNKS = 7  # pieces a raw response body is cut into
CHUNK_INTERVAL = 0.05  # seconds between the chunks of a raw body


def shared_dir() -> Path:
    """The shared data folder: LLM_SHADOW_SHARED, else the repository root's sibling `shared`."""
    if os.environ.get("LLM_SHADOW_SHARED"):
        return Path(os.environ["LLM_SHADOW_SHARED"])
    return Path(__file__).resolve().parents[1].parent / "shared"


CASSETTES_DIR = shared_dir() / "data" / "cassettes"


def require_cassettes() -> Path:
    if not CASSETTES_DIR.is_dir():
        pytest.skip(f"recorded cassettes not found at {CASSETTES_DIR} (set LLM_SHADOW_SHARED)")
    return CASSETTES_DIR


def cassette_files() -> list[Path]:
    """Every cassette, sorted; [] when the shared folder is absent."""
    if not CASSETTES_DIR.is_dir():
        return []
    return sorted(CASSETTES_DIR.rglob("*.yaml"))


def cassette_id(path: Path) -> str:
    return str(path.relative_to(CASSETTES_DIR))


def cassette_path(relative: str) -> Path:
    """A cassette by its path under tests/models/cassettes/ (or any path under the folder)."""
    root = require_cassettes()
    for candidate in (root / "tests" / "models" / "cassettes" / relative, root / relative):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(relative)


def load_interactions(path: Path) -> list[dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as f:
        document = yaml.load(f, Loader=loader)
    return list((document or {}).get("interactions") or [])


@dataclass
class Recorded:
    cassette: Path
    position: int  # index of the interaction in the cassette
    exchange: Exchange


def recorded_exchanges(path: Path, stream_chunks: int = STREAM_CHUNKS) -> list[Recorded]:
    """The interactions of a cassette that detect() recognises, as Exchanges."""
    found = []
    for position, interaction in enumerate(load_interactions(path)):
        exchange = exchange_from_interaction(interaction, stream_chunks)
        if exchange is not None:
            found.append(Recorded(path, position, exchange))
    return found


def exchange(relative: str, position: int = 0, stream_chunks: int = STREAM_CHUNKS) -> Exchange:
    """The interaction at index `position` of a cassette, which must be a recognised one."""
    for recorded in recorded_exchanges(cassette_path(relative), stream_chunks):
        if recorded.position == position:
            return recorded.exchange
    raise LookupError(f"{relative} has no recognised LLM call at interaction {position}")


def exchange_from_interaction(interaction: dict, stream_chunks: int = STREAM_CHUNKS) -> Exchange | None:
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    uri = request.get("uri")
    if not isinstance(uri, str):
        return None
    url = urlsplit(uri)
    request_headers = _headers(request.get("headers"))
    method = str(request.get("method") or "POST")
    target = detect(url.hostname or "", url.path, request_headers, method)
    if target is None:
        return None
    status = (response.get("status") or {}).get("code")
    response_body, raw = _body(response)
    chunks = _split(response_body, stream_chunks if raw else 1)
    return Exchange(
        provider=target.provider,
        endpoint=target.endpoint,
        wire_format=target.wire_format,
        method=method,
        host=url.hostname or "",
        path=url.path,
        query=dict(parse_qsl(url.query)),
        request_headers=request_headers,
        request_body=_body(request)[0],
        status=int(status) if status is not None else None,
        response_headers=_headers(response.get("headers")),
        response_chunks=[(round(i * CHUNK_INTERVAL + 0.1, 6), c) for i, c in enumerate(chunks)],
        started_at=1_750_000_000.0,
        duration=len(chunks) * CHUNK_INTERVAL + 0.1,
    )


def _headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, dict):
        return {}
    result = {}
    for name, value in headers.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        result[str(name).lower()] = str(value)
    return result


def _body(message: dict) -> tuple[bytes, bool]:
    """(body bytes, True when it is the raw recorded text rather than re-serialised JSON)."""
    if "parsed_body" in message:
        return json.dumps(message["parsed_body"], ensure_ascii=False).encode("utf-8"), False
    body = message.get("body")
    if isinstance(body, dict):
        body = body.get("string")
    if isinstance(body, bytes):
        return body, True
    if isinstance(body, str):
        return body.encode("utf-8"), True
    return b"", False


def _split(body: bytes, pieces: int) -> list[bytes]:
    """`body` cut into `pieces` parts at fixed offsets (a prime stride, so cuts land anywhere)."""
    if pieces <= 1 or len(body) < pieces:
        return [body] if body else []
    size = max(1, len(body) // pieces)
    cuts = sorted({min(len(body), i * size + (i * 7919) % 13) for i in range(1, pieces)})
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
