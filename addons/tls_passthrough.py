"""Decrypt TLS only for LLM hosts; pass every other TLS connection through untouched.

A proxy that sees all of a machine's or a pod's traffic (transparent mode, local mode, or
HTTPS_PROXY set for a whole process) must not show its CA to services it has no business
with: a database driver, a package mirror or a bank would see a certificate they do not
trust, and their connections would break or, worse, be read. So the decision is made on the
TLS ClientHello, before any certificate is sent: when the server name (SNI, or the CONNECT
host when a client sends none) is a known LLM host (`analysis.parsers.detect.provider_for_host`) or
one the user listed in `shadow_intercept_hosts`, mitmproxy decrypts it and the recorder sees
the call; otherwise `ignore_connection` makes mitmproxy relay the encrypted bytes to the real
server, which then presents its own certificate to the client. `shadow_intercept_all`
switches this off and decrypts everything (mitmproxy's own behaviour). Reverse-proxy mode is
left alone: there the proxy is the server the client meant to reach.

Plain HTTP is not decided here: it carries no certificate, and the recorder records only
requests that `analysis.parsers.detect` recognises.
"""

import logging
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, tls
from mitmproxy.proxy.mode_specs import ReverseMode

from analysis.parsers.detect import provider_for_host

logger = logging.getLogger(__name__)


def parse_host_patterns(patterns: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Split user host patterns into exact names and suffixes.

    "gateway.corp.example" matches that host only; "*.corp.example" or ".corp.example" match
    every host below corp.example (not corp.example itself). Raises ValueError on a pattern
    that is not a host name.
    """
    exact: set[str] = set()
    suffixes: list[str] = []
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            pattern = pattern[1:]
        name = pattern.lstrip(".")
        if not name or any(c in name for c in "/:*@ ") or ".." in name:
            raise ValueError(f"not a host name or *.suffix pattern: {raw!r}")
        if pattern.startswith("."):
            suffixes.append(pattern)
        else:
            exact.add(pattern)
    return frozenset(exact), tuple(suffixes)


def should_intercept(
    host: str | None,
    extra_exact: frozenset[str] = frozenset(),
    extra_suffixes: tuple[str, ...] = (),
    intercept_all: bool = False,
) -> bool:
    """True when TLS to `host` is to be decrypted: an LLM host, a listed host, or everything."""
    if intercept_all:
        return True
    if not host:
        return False
    host = host.lower().rstrip(".")
    if provider_for_host(host) is not None or host in extra_exact:
        return True
    return any(host.endswith(suffix) for suffix in extra_suffixes)


def server_name(data: tls.ClientHelloData) -> str | None:
    """The host a TLS connection is meant for: its SNI, else the address the proxy knows."""
    if data.client_hello.sni:
        return data.client_hello.sni
    address = data.context.server.address
    return address[0] if address else None


class TlsPassthrough:
    """mitmproxy addon: `ignore_connection` for TLS that is not to an LLM host."""

    def __init__(self) -> None:
        self.extra_exact: frozenset[str] = frozenset()
        self.extra_suffixes: tuple[str, ...] = ()

    def load(self, loader) -> None:
        loader.add_option(
            "shadow_intercept_hosts",
            Sequence[str],
            [],
            "Extra hosts whose TLS llm-shadow decrypts and records, besides the known LLM "
            "providers (e.g. a company LLM gateway). Exact names, or *.suffix for a domain.",
        )
        loader.add_option(
            "shadow_intercept_all",
            bool,
            False,
            "Decrypt TLS to every host, not only LLM hosts (every client must then trust "
            "the llm-shadow CA for everything it talks to).",
        )

    def configure(self, updated) -> None:
        if "shadow_intercept_hosts" in updated:
            try:
                self.extra_exact, self.extra_suffixes = parse_host_patterns(ctx.options.shadow_intercept_hosts)
            except ValueError as e:
                raise exceptions.OptionsError(f"shadow_intercept_hosts: {e}") from e

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if isinstance(data.context.client.proxy_mode, ReverseMode):
            return
        host = server_name(data)
        if should_intercept(host, self.extra_exact, self.extra_suffixes, ctx.options.shadow_intercept_all):
            return
        data.ignore_connection = True
        logger.debug(f"TLS passthrough (not an LLM host): {host}")
