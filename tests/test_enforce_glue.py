"""The proxy's own reading of a mitmproxy request's host (addons.hosts, read by the recorder and
enforce mode): the host it reads from the raw header fields is the one mitmproxy's
`Request.pretty_host` gives, in every shape a client may send; the response it answers with
(a cache hit, a refusal) is the one mitmproxy's `Response(...)` makes of the same values."""

import pytest
from mitmproxy import http
from mitmproxy.net.http import status_codes

from addons.enforcer import DECISION_HEADER, _response
from addons.hosts import pretty_host


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


@pytest.mark.parametrize(
    "status, headers, body, decision",
    [
        (200, ((b"content-type", b"application/json"),), b'{"id": "x"}', "exact_cache=hit; policy=exact"),
        (200, ((b"content-type", b"text/event-stream"), (b"content-encoding", b"gzip")), b"\x1f\x8b", None),
        (429, ((b"retry-after", b"3"),), b'{"error": {}}', "budget=block; policy=team"),
        (599, (), b"", "x"),  # a status with no reason phrase
    ],
)
def test_response_is_mitmproxys(status, headers, body, decision):
    made = _response(status, headers, body, decision)
    fields = (*headers, (b"content-length", str(len(body)).encode()))
    if decision:
        fields += ((DECISION_HEADER.encode(), decision.encode()),)
    reason = status_codes.RESPONSES.get(status, "").encode()
    ts = made.timestamp_start
    expected = http.Response(b"HTTP/1.1", status, reason, http.Headers(fields), body, None, ts, ts)
    assert made.get_state() == expected.get_state()
    assert (made.stream, made.raw_content, made.headers) == (expected.stream, expected.raw_content, expected.headers)
