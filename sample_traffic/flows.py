"""A rendered exchange as a mitmproxy `HTTPFlow`, as mitmproxy would have recorded it.

The company's services reach the providers through the proxy (regular mode, HTTPS): each flow has
a TLS client connection from the service's host to the proxy and a TLS server connection from the
proxy to the provider. Timestamps are real: request sent, response headers received (the first
token for a stream), last byte; a broken stream has an error and no response end. Every id comes
from the seeded RNG, so the file is byte-for-byte reproducible.
"""

import random

from mitmproxy import connection, http
from mitmproxy.connection import ConnectionState
from mitmproxy.flow import Error
from mitmproxy.proxy.mode_specs import ProxyMode

from addons.flow_records import ImportedFlow
from sample_traffic import ids
from sample_traffic.calls import Call
from sample_traffic.wire_common import WireExchange

PROXY_ADDRESS = ("10.10.0.2", 8080)
UPLOAD_BYTES_PER_S = 8_000_000


def _headers(fields: list[tuple[str, str]]) -> http.Headers:
    return http.Headers([(name.encode(), value.encode()) for name, value in fields])


def _t(value: float) -> float:
    return round(value, 4)


def _connections(
    rng: random.Random, call: Call, exchange: WireExchange, host: str, start: float, end: float
) -> tuple[connection.Client, connection.Server]:
    client = connection.Client(
        id=ids.uuid4(rng),
        peername=(call.key.client_ip, rng.randint(32768, 60999)),
        sockname=PROXY_ADDRESS,
        timestamp_start=_t(start - 0.045),
        timestamp_tls_setup=_t(start - 0.02),
        timestamp_end=_t(end + 0.001),
        sni=host,
        tls=True,
        tls_version="TLSv1.3",
        alpn=b"http/1.1",
        proxy_mode=ProxyMode.parse("regular"),
        state=ConnectionState.CLOSED,
    )
    server = connection.Server(
        id=ids.uuid4(rng),
        address=(host, 443),
        peername=(exchange.server_ip, 443),
        sockname=(PROXY_ADDRESS[0], rng.randint(32768, 60999)),
        timestamp_start=_t(start - 0.04),
        timestamp_tcp_setup=_t(start - 0.03),
        timestamp_tls_setup=_t(start - 0.012),
        timestamp_end=_t(end + 0.001),
        sni=host,
        tls=True,
        tls_version="TLSv1.3",
        alpn=b"http/1.1",
        state=ConnectionState.CLOSED,
    )
    return client, server


def build_flow(rng: random.Random, call: Call, exchange: WireExchange) -> http.HTTPFlow:
    request, response, error = _messages(call, exchange)
    client, server = _connections(rng, call, exchange, request.host, call.at, _end(call, exchange))
    flow = http.HTTPFlow(client, server)
    flow.id = ids.uuid4(rng)
    flow.timestamp_created = _t(call.at)
    flow.request = request
    flow.response = response
    flow.error = error
    return flow


def build_recorded_flow(rng: random.Random, call: Call, exchange: WireExchange) -> ImportedFlow:
    """The flow `build_flow` makes, as far as the recorder reads it (addons.flow_records): what
    `llm-shadow demo` records, without building connections nobody reads (about a third of the
    cost of making a call). The RNG is drawn as `build_flow` draws it."""
    request, response, error = _messages(call, exchange)
    _connections(rng, call, exchange, request.host, call.at, _end(call, exchange))
    return ImportedFlow(ids.uuid4(rng), request, response, error, {}, websocket=False)


def _end(call: Call, exchange: WireExchange) -> float:
    return call.at + (exchange.ended_at if exchange.ended_at is not None else exchange.error_at)


def _messages(call: Call, exchange: WireExchange) -> tuple[http.Request, http.Response, Error | None]:
    start, end = call.at, _end(call, exchange)
    request = http.Request.make("POST", exchange.url, exchange.request_body, _headers(exchange.request_headers))
    request.timestamp_start = _t(start)
    request.timestamp_end = _t(start + 0.0008 + len(exchange.request_body) / UPLOAD_BYTES_PER_S)
    response = http.Response.make(exchange.status, b"", _headers(exchange.response_headers))
    response.content = exchange.response_body  # encoded per content-encoding (gzip)
    response.timestamp_start = _t(start + exchange.headers_at)
    response.timestamp_end = _t(end) if exchange.ended_at is not None else None
    return request, response, Error(exchange.error, _t(end)) if exchange.error else None
