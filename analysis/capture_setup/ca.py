"""Where the interception CA lives, who may read its key, and which trust stores hold it.

llm-shadow decrypts LLM traffic with mitmproxy's CA, kept in mitmproxy's configuration
directory (`~/.mitmproxy` unless `--confdir` or LLM_SHADOW_CONFDIR says otherwise), so that a
CA a user already trusts for mitmproxy keeps working and the key stays out of the data
directory, which people copy around to share reports. Clients get only the certificate
(`mitmproxy-ca-cert.pem`); `mitmproxy-ca.pem` and `mitmproxy-ca.p12` hold the private key and
must stay readable by their owner alone. This module only reads files: it creates nothing
(`addons.ca.ensure_ca` does) and never imports mitmproxy, so `llm-shadow doctor` can use it.

"Trusted by a client" is decided the way the clients decide it: Python's httpx (the OpenAI,
Anthropic and Google SDKs) reads SSL_CERT_FILE or the system bundle, requests reads
REQUESTS_CA_BUNDLE or certifi's bundle, Node.js adds NODE_EXTRA_CA_CERTS to its own store,
and curl, Go and most other programs read the system bundle.
"""

import base64
import binascii
import os
import re
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

CONF_BASENAME = "mitmproxy"  # mitmproxy's file prefix: mitmproxy-ca.pem, mitmproxy-ca-cert.pem
CONFDIR_ENV = "LLM_SHADOW_CONFDIR"
DEFAULT_CONFDIR = "~/.mitmproxy"


def default_confdir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(CONFDIR_ENV) or DEFAULT_CONFDIR).expanduser()


@dataclass(frozen=True)
class CaFiles:
    confdir: Path

    @property
    def cert(self) -> Path:
        """The CA certificate alone: the file clients trust."""
        return self.confdir / f"{CONF_BASENAME}-ca-cert.pem"

    @property
    def key_files(self) -> tuple[Path, ...]:
        """Files holding the CA private key (PEM with key + cert, and PKCS#12)."""
        return (
            self.confdir / f"{CONF_BASENAME}-ca.pem",
            self.confdir / f"{CONF_BASENAME}-ca.p12",
        )

    def exists(self) -> bool:
        return self.cert.is_file() and self.key_files[0].is_file()


def loose_key_files(files: CaFiles) -> list[tuple[Path, int]]:
    """Key files that someone other than their owner may read or write: (path, mode)."""
    loose = []
    for path in files.key_files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            loose.append((path, mode))
    return loose


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file. Raises ValueError when there is none."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


def bundle_contains(bundle: Path, cert: x509.Certificate) -> bool:
    """True when the PEM bundle (or PEM file) holds exactly this certificate.

    Compares DER bytes without parsing every certificate of the bundle: system bundles hold
    old certificates that newer `cryptography` releases warn about or refuse.
    """
    try:
        text = bundle.read_bytes()
    except OSError:
        return False
    wanted = cert.public_bytes(serialization.Encoding.DER)
    for match in _PEM_CERT.finditer(text):
        try:
            if base64.b64decode(match.group(1)) == wanted:
                return True
        except binascii.Error:
            continue
    return False


def system_bundle() -> Path | None:
    """The system's CA bundle file, as OpenSSL was built to find it."""
    paths = ssl.get_default_verify_paths()
    for candidate in (
        paths.openssl_cafile,
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def certifi_bundle() -> Path | None:
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


@dataclass(frozen=True)
class TrustSource:
    client: str  # who reads it
    source: str  # where it comes from: an env var or "system store"
    bundle: Path | None  # the file those clients verify servers with


def trust_sources(env: Mapping[str, str] | None = None) -> list[TrustSource]:
    """The bundle each family of clients verifies servers with, in this environment."""
    env = os.environ if env is None else env
    system = system_bundle()

    def from_env(var: str, fallback: Path | None, fallback_name: str) -> tuple[str, Path | None]:
        if env.get(var):
            return var, Path(env[var])
        return fallback_name, fallback

    sources = []
    source, bundle = from_env("SSL_CERT_FILE", system, "system store")
    sources.append(TrustSource("Python httpx (openai, anthropic, google-genai SDKs)", source, bundle))
    if env.get("REQUESTS_CA_BUNDLE"):
        sources.append(TrustSource("Python requests", "REQUESTS_CA_BUNDLE", Path(env["REQUESTS_CA_BUNDLE"])))
    else:
        sources.append(TrustSource("Python requests", "certifi", certifi_bundle()))
    if env.get("NODE_EXTRA_CA_CERTS"):
        sources.append(TrustSource("Node.js", "NODE_EXTRA_CA_CERTS", Path(env["NODE_EXTRA_CA_CERTS"])))
    else:
        sources.append(TrustSource("Node.js", "NODE_EXTRA_CA_CERTS (unset)", None))
    source, bundle = from_env("CURL_CA_BUNDLE", system, "system store")
    sources.append(TrustSource("curl, Go, most other programs", source, bundle))
    return sources


def trusting_sources(cert: x509.Certificate, env: Mapping[str, str] | None = None) -> list[tuple[TrustSource, bool]]:
    """Each trust source and whether it holds the CA certificate."""
    return [
        (source, source.bundle is not None and bundle_contains(source.bundle, cert)) for source in trust_sources(env)
    ]


def trust_instructions(cert: Path, bundle: Path) -> list[tuple[str, str]]:
    """How to make each kind of client trust the CA: (where, command), copy-pasteable.

    `bundle` is the combined bundle `llm-shadow ca --bundle` writes (system CAs plus this
    CA): SSL_CERT_FILE and REQUESTS_CA_BUNDLE replace a client's store, so pointing them at
    the bare CA certificate would make every other HTTPS host fail.
    """
    return [
        (
            "Debian, Ubuntu, Alpine system store",
            f"sudo cp {cert} /usr/local/share/ca-certificates/llm-shadow.crt && sudo update-ca-certificates",
        ),
        (
            "RHEL, Fedora system store",
            f"sudo cp {cert} /etc/pki/ca-trust/source/anchors/llm-shadow.pem && sudo update-ca-trust",
        ),
        (
            "macOS system store",
            f"sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert}",
        ),
        ("Python httpx: openai, anthropic, google-genai SDKs", f"export SSL_CERT_FILE={bundle}"),
        ("Python requests", f"export REQUESTS_CA_BUNDLE={bundle}"),
        ("Node.js (adds to its built-in store)", f"export NODE_EXTRA_CA_CERTS={cert}"),
        ("curl", f"export CURL_CA_BUNDLE={bundle}"),
    ]


def write_bundle(out: Path, ca_cert: Path, base: Path | None) -> None:
    """Write `base` (the system bundle) followed by the CA certificate to `out`."""
    parts = []
    if base is not None:
        parts.append(base.read_bytes().rstrip(b"\n") + b"\n")
    parts.append(ca_cert.read_bytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(parts))
