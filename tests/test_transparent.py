"""Transparent capture end to end, in network namespaces this test creates.

Topology (all of it inside two namespaces made here and deleted afterwards):

    ns "client"  10.200.0.1/30 ──veth── 10.200.0.2/30  ns "server"
      client (gid 65534, unmodified openai SDK)           netns_https_server.py on :443,
      proxy  (gid 0, transparent mode on :8080)           certificates for api.openai.com
      iptables -t nat OUTPUT: tcp dport 443,              and internal.example.test signed
        -m owner --gid-owner 65534 -> REDIRECT :8080      by a test "public" CA

The client resolves both host names to 10.200.0.2 through /etc/netns/<client>/hosts (which
`ip netns exec` mounts over /etc/hosts), and trusts a bundle of the test CA and the proxy's
CA, as a user's service would after `llm-shadow ca --bundle`. The NAT rule is the "one
group" variant of the owner-match recipe in docs/transparent.md: only the client's group is
redirected, so the proxy's own upstream connections go straight out and cannot loop. (The
client keeps uid 0 and only drops its group, because the test's Python may live where only
root can read it.) Neither process is told about the other.

Without root, `ip`, `iptables` or the right to create a namespace the tests are skipped with
that reason (.ci/install-system-deps installs iproute2 and iptables).
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.certs import TestCA

ROOT = Path(__file__).resolve().parents[1]
CLIENT_GID = 65534  # nogroup
PROXY_PORT = 8080
CLIENT_IP, SERVER_IP = "10.200.0.1", "10.200.0.2"
LLM_HOST, OTHER_HOST = "api.openai.com", "internal.example.test"
# The provider's answer; the client must receive exactly these bytes.
PROVIDER_BODY = (
    b'{"id":"chatcmpl-netns1","object":"chat.completion","created":1732350000,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hi there!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":3,"total_tokens":12}}'
)

pytestmark = pytest.mark.timeout(120)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and iptables rules"
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (run .ci/install-system-deps)"
    probe = f"lsprobe{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nat = _run("ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S", check=False)
        if nat.returncode != 0:
            return f"iptables nat table unusable in a namespace: {nat.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


# --- certificates ----------------------------------------------------------------------------


def _make_certs(directory: Path) -> tuple[Path, dict[str, bytes]]:
    """A test CA and a server certificate per host; returns the CA file and each host's DER."""
    authority = TestCA()
    ca_file = directory / "public-ca.pem"
    ca_file.write_bytes(authority.pem)
    server_dir = directory / "server"
    server_dir.mkdir()
    ders = {}
    for host in (LLM_HOST, OTHER_HOST):
        issued = authority.issue(host)
        (server_dir / f"{host}.pem").write_bytes(issued.pem_with_key)
        ders[host] = issued.der
    (server_dir / "body").write_bytes(PROVIDER_BODY)
    return ca_file, ders


# --- processes -------------------------------------------------------------------------------


class Background:
    """A long-running process whose output is collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{text!r} not seen; output:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.2))

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Namespaces:
    """The client and server namespaces, the veth between them, the hosts file, the rule."""

    def __init__(self, workdir: Path) -> None:
        tag = f"{os.getpid() % 100000}"
        self.client, self.server = f"lsc{tag}", f"lss{tag}"
        self.hosts_dir = Path("/etc/netns") / self.client
        self.made_etc_netns = not self.hosts_dir.parent.exists()
        self.workdir = workdir
        self.processes: list[Background] = []

    def setup(self) -> None:
        c, s = self.client, self.server
        _run("ip", "netns", "add", c)
        _run("ip", "netns", "add", s)
        _run("ip", "-n", c, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", s)
        _run("ip", "-n", c, "addr", "add", f"{CLIENT_IP}/30", "dev", "veth0")
        _run("ip", "-n", s, "addr", "add", f"{SERVER_IP}/30", "dev", "veth1")
        for ns, dev in ((c, "veth0"), (s, "veth1")):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", dev, "up")
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        (self.hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{SERVER_IP} {LLM_HOST} {OTHER_HOST}\n")
        self.add_redirect_rule()

    def add_redirect_rule(self) -> None:
        """The recipe: redirect the application's outbound HTTPS to the proxy port."""
        self.exec(
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-m",
            "owner",
            "--gid-owner",
            str(CLIENT_GID),
            "-j",
            "REDIRECT",
            "--to-ports",
            str(PROXY_PORT),
        )

    def exec(self, *args: str, ns: str | None = None) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", ns or self.client, *args)

    def start(self, ns: str, args: list[str], env: dict[str, str] | None = None) -> Background:
        process = Background(["ip", "netns", "exec", ns, *args], env=env)
        self.processes.append(process)
        return process

    def run_client(self, *args: str, ca_bundle: Path) -> dict:
        done = self.exec(
            "setpriv",
            f"--regid={CLIENT_GID}",
            "--clear-groups",
            "env",
            "-i",
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME=/tmp",
            f"SSL_CERT_FILE={ca_bundle}",
            sys.executable,
            str(ROOT / "tests" / "netns_client.py"),
            *args,
        )
        return json.loads(done.stdout)

    def redirected_connections(self) -> int:
        """How many connections the NAT rule has redirected (one packet counted per connection)."""
        listing = self.exec("iptables", "-t", "nat", "-L", "OUTPUT", "-n", "-v", "-x").stdout
        rule = next(line for line in listing.splitlines() if f"redir ports {PROXY_PORT}" in line)
        return int(rule.split()[0])

    def teardown(self) -> None:
        for process in self.processes:
            process.stop()
        for ns in (self.client, self.server):
            _run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.hosts_dir, ignore_errors=True)
        if self.made_etc_netns:
            shutil.rmtree(self.hosts_dir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="llm-shadow-netns-"))
    workdir.chmod(0o755)  # the client runs as nobody and reads the CA bundle from here
    nets = Namespaces(workdir)
    try:
        nets.setup()
        public_ca, server_certs = _make_certs(workdir)
        server = nets.start(
            nets.server,
            [sys.executable, str(ROOT / "tests" / "netns_https_server.py"), "--cert-dir", str(workdir / "server")],
        )
        server.wait_for("ready")
        confdir = workdir / "confdir"
        data = workdir / "data"
        proxy = nets.start(nets.client, _proxy_command(confdir, public_ca, data), env=_proxy_env())
        proxy.wait_for("Transparent Proxy listening at")
        bundle = workdir / "client-bundle.pem"
        bundle.write_bytes(public_ca.read_bytes() + (confdir / "mitmproxy-ca-cert.pem").read_bytes())
        bundle.chmod(0o644)
        yield {
            "nets": nets,
            "bundle": bundle,
            "server_certs": server_certs,
            "server_log": workdir / "server" / "requests.log",
            "proxy": proxy,
            "data": data,
        }
    finally:
        nets.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


def _proxy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("http_proxy", "https_proxy"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _proxy_command(confdir: Path, upstream_ca: Path, data: Path) -> list[str]:
    """`llm-shadow proxy --transparent`, as a user runs it."""
    # mitmproxy reads config.yaml from its confdir: there the test tells the proxy that the
    # "real" servers' certificates come from the test's public CA.
    confdir.mkdir(mode=0o700)
    (confdir / "config.yaml").write_text(f"ssl_verify_upstream_trusted_ca: {upstream_ca}\n")
    return [
        sys.executable,
        str(ROOT / "cli.py"),
        "proxy",
        "--transparent",
        "--port",
        str(PROXY_PORT),
        "--confdir",
        str(confdir),
        "--data",
        str(data),
        "--flush-interval",
        "0.2",
        "--verbose",
    ]


def _records(data: Path, at_least: int = 1, timeout: float = 15) -> list[dict]:
    """The recorded calls, once there are at least `at_least` (the recorder flushes every 0.2 s)."""
    from analysis.store.datadir import Store
    from tests.conftest import wait_for

    def read():
        rows = Store(data).requests_frame().to_dicts() if (data / "records").exists() else []
        return rows if len(rows) >= at_least else None

    rows = wait_for(read, timeout)
    assert rows, f"fewer than {at_least} records appeared"
    return rows


def test_unmodified_openai_client_is_captured_and_answered_byte_for_byte(world):
    nets = world["nets"]
    before = nets.redirected_connections()
    result = nets.run_client("openai", ca_bundle=world["bundle"])
    assert result["status"] == 200
    assert base64.b64decode(result["body_b64"]) == PROVIDER_BODY
    assert nets.redirected_connections() > before  # the call went through the redirect
    assert f"{LLM_HOST} POST /v1/chat/completions" in world["server_log"].read_text()
    # The proxy decrypted and recorded it, under the host name the client used (in
    # transparent mode mitmproxy knows the server by the address it was redirected from).
    [row] = _records(world["data"])
    assert (row["provider"], row["endpoint"], row["host"], row["path"]) == (
        "openai",
        "chat",
        LLM_HOST,
        "/v1/chat/completions",
    )
    assert (row["status"], row["outcome"], row["model_requested"], row["model"]) == (
        200,
        "ok",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (9, 3, "provider")
    assert row["cost_usd"] > 0


def test_llm_host_sees_the_proxy_certificate(world):
    nets = world["nets"]
    result = nets.run_client("tls", LLM_HOST, ca_bundle=world["bundle"])
    cert = x509.load_der_x509_certificate(base64.b64decode(result["cert_b64"]))
    assert cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mitmproxy"


def test_non_llm_tls_passes_through_with_the_real_certificate(world):
    nets = world["nets"]
    before = nets.redirected_connections()
    result = nets.run_client("tls", OTHER_HOST, ca_bundle=world["bundle"])
    shown = base64.b64decode(result["cert_b64"])
    assert hashlib.sha256(shown).hexdigest() == hashlib.sha256(world["server_certs"][OTHER_HOST]).hexdigest()
    assert result["response"].endswith(f"hello from {OTHER_HOST}")
    assert nets.redirected_connections() == before + 1  # it did go through the proxy


def test_nftables_recipe_redirects_the_same_way(world):
    """The nftables form of the recipe (docs/transparent.md), in place of the iptables rule."""
    nets = world["nets"]
    if shutil.which("nft") is None:
        pytest.skip("`nft` is not installed (run .ci/install-system-deps)")
    recorded_before = len(_records(world["data"]))
    nets.exec("iptables", "-t", "nat", "-F", "OUTPUT")
    try:
        nets.exec("nft", "add", "table", "inet", "llm_shadow")
        nets.exec("nft", "add", "chain", "inet", "llm_shadow", "output", "{ type nat hook output priority -100; }")
        nets.exec(
            "nft",
            "add",
            "rule",
            "inet",
            "llm_shadow",
            "output",
            "meta",
            "skgid",
            str(CLIENT_GID),
            "tcp",
            "dport",
            "443",
            "redirect",
            "to",
            f":{PROXY_PORT}",
        )
        result = nets.run_client("openai", ca_bundle=world["bundle"])
        assert base64.b64decode(result["body_b64"]) == PROVIDER_BODY
        rows = _records(world["data"], at_least=recorded_before + 1)
        assert rows[-1]["host"] == LLM_HOST
    finally:
        nets.exec("nft", "delete", "table", "inet", "llm_shadow")
        nets.add_redirect_rule()
