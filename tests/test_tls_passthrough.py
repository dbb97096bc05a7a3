"""The TLS passthrough decision, on real ClientHellos that Python's ssl module writes."""

import ssl

import pytest
from mitmproxy import exceptions, tls
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from addons.tls_passthrough import TlsPassthrough, parse_host_patterns, should_intercept


def client_hello_bytes(sni: str | None) -> bytes:
    """The first TLS record a real client sends for `sni` (None: no SNI extension)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    outgoing = ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def hello_data(tctx, sni: str | None, mode: str = "transparent", address=("203.0.113.9", 443)) -> tls.ClientHelloData:
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse(mode)
    conn_context = context.Context(client, tctx.options)
    conn_context.server.address = address
    hello = parse_client_hello(client_hello_bytes(sni))
    assert hello is not None and hello.sni == sni
    return tls.ClientHelloData(conn_context, hello)


@pytest.mark.parametrize(
    "host",
    ["api.openai.com", "API.Anthropic.com.", "generativelanguage.googleapis.com", "x.openai.azure.com"],
)
def test_llm_hosts_are_decrypted(host):
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        data = hello_data(tctx, host)
        addon.tls_clienthello(data)
        assert data.ignore_connection is False


@pytest.mark.parametrize("host", ["github.com", "pypi.org", "openai.com.evil.example", "db.internal"])
def test_other_hosts_pass_through(host):
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        data = hello_data(tctx, host)
        addon.tls_clienthello(data)
        assert data.ignore_connection is True


def test_without_sni_the_proxy_address_decides():
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        # Forward mode: the CONNECT host is known even when the client sends no SNI.
        data = hello_data(tctx, None, mode="regular", address=("api.openai.com", 443))
        addon.tls_clienthello(data)
        assert data.ignore_connection is False
        # Transparent mode without SNI: only an IP is known, so it is not ours to decrypt.
        data = hello_data(tctx, None, mode="transparent", address=("203.0.113.9", 443))
        addon.tls_clienthello(data)
        assert data.ignore_connection is True


def test_extra_hosts_and_suffixes_are_decrypted():
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_intercept_hosts=["llm-gateway.corp.example", "*.ai.internal"])
        for host, decrypted in [
            ("llm-gateway.corp.example", True),
            ("other.corp.example", False),
            ("vllm.ai.internal", True),
            ("ai.internal", False),
        ]:
            data = hello_data(tctx, host)
            addon.tls_clienthello(data)
            assert data.ignore_connection is not decrypted, host


def test_intercept_all_decrypts_everything():
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_intercept_all=True)
        data = hello_data(tctx, "github.com")
        addon.tls_clienthello(data)
        assert data.ignore_connection is False


def test_reverse_mode_is_left_alone():
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        data = hello_data(tctx, "proxy.local", mode="reverse:https://api.openai.com")
        addon.tls_clienthello(data)
        assert data.ignore_connection is False


def test_bad_host_pattern_is_an_options_error():
    addon = TlsPassthrough()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="shadow_intercept_hosts"):
            tctx.configure(addon, shadow_intercept_hosts=["https://gateway.example/v1"])


def test_pattern_parsing():
    assert parse_host_patterns(["A.example.", "*.b.example", ".c.example"]) == (
        frozenset({"a.example"}),
        (".b.example", ".c.example"),
    )
    with pytest.raises(ValueError):
        parse_host_patterns(["*"])
    assert should_intercept(None) is False
    assert should_intercept(None, intercept_all=True) is True


# --- end to end: `llm-shadow proxy --forward` on loopback -------------------------------------


def test_forward_mode_passes_non_llm_tls_through_with_the_real_certificate(start_proxy, tmp_path):
    import socket
    import threading

    from tests.certs import TestCA

    # A "real" HTTPS server for a non-LLM host, with its own CA.
    authority = TestCA()
    issued = authority.issue("internal.example.test")
    (tmp_path / "server.pem").write_bytes(issued.pem_with_key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def serve_once():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.recv(1024)
            tls_conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    proxy = start_proxy("--forward", "--port", "0", "--confdir", str(tmp_path / "confdir"))

    # The client trusts the real server's CA only, not llm-shadow's.
    client_ctx = ssl.create_default_context(cadata=authority.pem.decode())
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as raw:
        port = listener.getsockname()[1]
        raw.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with client_ctx.wrap_socket(raw, server_hostname="internal.example.test") as tls_conn:
            shown = tls_conn.getpeercert(binary_form=True)
            tls_conn.sendall(b"GET / HTTP/1.1\r\nHost: internal.example.test\r\n\r\n")
            reply = tls_conn.recv(4096)
    server.join(10)
    listener.close()
    assert shown == issued.der
    assert reply.endswith(b"ok")
