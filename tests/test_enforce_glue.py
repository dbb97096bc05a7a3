"""Enforce mode's own reading of a mitmproxy request (addons.enforcer): the host it reads from
the raw header fields is the one mitmproxy's `Request.pretty_host` gives, in every shape a
client may send."""

import pytest
from mitmproxy import http

from addons.enforcer import pretty_host


def request(
    headers: list[tuple[bytes, bytes]], http_version: bytes = b"HTTP/1.1", authority: bytes = b""
) -> http.Request:
    return http.Request(
        "10.0.0.1",
        8000,
        b"POST",
        b"http",
        authority,
        b"/v1/chat/completions",
        http_version,
        http.Headers(headers),
        b"{}",
        None,
        1.0,
        2.0,
    )


@pytest.mark.parametrize(
    "headers, http_version, authority",
    [
        ([(b"Host", b"api.openai.com")], b"HTTP/1.1", b""),
        ([(b"HOST", b"127.0.0.1:8000"), (b"Accept", b"*/*")], b"HTTP/1.1", b""),
        ([(b"Accept", b"*/*"), (b"host", b"[::1]:8080")], b"HTTP/1.1", b""),
        ([(b"Host", b"a.example"), (b"Host", b"b.example")], b"HTTP/1.1", b""),  # folded, as mitmproxy folds them
        ([(b"Host", b"Caf\xc3\xa9.example")], b"HTTP/1.1", b""),
        ([(b"Host", b"bad\xff.example")], b"HTTP/1.1", b""),
        ([(b"Accept", b"*/*")], b"HTTP/1.1", b""),  # no Host: the request's own host
        ([(b"Host", b"")], b"HTTP/1.1", b""),
        ([], b"HTTP/2.0", b"api.anthropic.com:443"),
        ([(b"host", b"h2-host.example")], b"HTTP/2.0", b""),
    ],
)
def test_pretty_host_is_mitmproxys(headers, http_version, authority):
    made = request(headers, http_version, authority)
    assert pretty_host(made) == made.pretty_host
