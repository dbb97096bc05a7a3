"""A request's host as mitmproxy's `Request.pretty_host` gives it, each distinct Host header
parsed once.

mitmproxy parses the authority (a regex, IDNA, a host check) on every read of `pretty_host`,
and the recorder and enforce mode read it for every call, while a proxy sees a few hosts on many
calls. The cache is bounded, so a client sending many Host values costs only misses.
tests/test_enforce_glue.py checks the result equals mitmproxy's in every shape a client may send.
"""

import functools

from mitmproxy import http
from mitmproxy.net.http import url


def pretty_host(request: http.Request) -> str:
    """`request.pretty_host`, read from the raw header fields of an HTTP/1 request."""
    if request.is_http2 or request.is_http3:
        authority = request.host_header  # :authority, else Host
    else:
        authority = _host_header(request.headers.fields)
    return _host_of_authority(authority) if authority else request.host


def _host_header(fields: tuple[tuple[bytes, bytes], ...]) -> str | None:
    """`request.host_header` of an HTTP/1 request: its Host headers, folded as mitmproxy's
    `Headers.get` folds them, from the raw fields: `Headers.get` calls a method per header to
    lower its name (2.4 us for an SDK's 18 headers, in-process; this 0.9)."""
    values = [value.decode("utf-8", "surrogateescape") for name, value in fields if name.lower() == b"host"]
    return ", ".join(values) if values else None


@functools.lru_cache(maxsize=256)
def _host_of_authority(authority: str) -> str:
    return url.parse_authority(authority, check=False)[0]
