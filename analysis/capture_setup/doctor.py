"""`llm-shadow doctor`: the checks for what goes wrong when capturing, each with its fix.

Every check is a small function returning a `CheckResult`: a status, one sentence saying
what was found, and, when it is not "ok", the command or change that fixes it. The checks
take what they inspect as arguments (a directory, a port, a rule-set text, an environment),
so tests run them on prepared inputs; `run_checks` gathers those inputs from this machine.
Status "fail" makes `llm-shadow doctor` exit non-zero; "warn" is something that breaks only
some setups; "skip" means this machine cannot tell (no root to read the firewall, say).
"""

import errno
import hashlib
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from analysis.capture_setup.ca import CaFiles, load_cert, loose_key_files, trusting_sources
from analysis.capture_setup.netfilter import (
    LoopFinding,
    ProxyConnection,
    iptables_loop_findings,
    nft_loop_findings,
)
from analysis.parsers.tokens import BUNDLED_CACHE_DIR, CACHE_FILE_NAMES

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    fix: str = ""


# The sha256 tiktoken checks each encoding file against (tiktoken_ext/openai_public.py).
TIKTOKEN_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
DOCS = "docs/transparent.md"


def tiktoken_files(user_dir: Path | None, bundled_dir: Path = BUNDLED_CACHE_DIR) -> dict[str, Path]:
    """The file each encoding is loaded from, as analysis.parsers.tokens chooses it: the user's
    TIKTOKEN_CACHE_DIR when it holds the file, else the copy llm-shadow ships."""
    files = {}
    for encoding, name in CACHE_FILE_NAMES.items():
        user_file = user_dir / name if user_dir else None
        files[encoding] = user_file if user_file and user_file.is_file() else bundled_dir / name
    return files


def check_ca_key(files: CaFiles) -> CheckResult:
    name = "CA private key"
    if not files.exists():
        return CheckResult(name, "fail", f"no CA in {files.confdir} yet", "llm-shadow ca  (creates it, key mode 0600)")
    loose = loose_key_files(files)
    if loose:
        listed = ", ".join(f"{path.name} is {mode:04o}" for path, mode in loose)
        paths = " ".join(str(path) for path, _ in loose)
        return CheckResult(name, "fail", f"the CA key can be read by others: {listed}", f"chmod 600 {paths}")
    repo = _enclosing_git_repo(files.confdir)
    if repo is not None:
        return CheckResult(
            name,
            "warn",
            f"the CA key is inside the git work tree {repo}: one `git add .` from being committed",
            f"add {files.confdir.name}/ to {repo}/.gitignore, or use --confdir outside the repository",
        )
    return CheckResult(name, "ok", f"{files.key_files[0]} is readable by its owner only")


def _enclosing_git_repo(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def check_ca_trusted(files: CaFiles, env: Mapping[str, str] | None = None) -> CheckResult:
    name = "CA trusted by clients"
    if not files.cert.is_file():
        return CheckResult(name, "skip", "no CA certificate yet", "llm-shadow ca")
    try:
        cert = load_cert(files.cert)
    except ValueError as e:
        return CheckResult(
            name, "fail", f"{files.cert} is not a PEM certificate: {e}", "delete it and run: llm-shadow ca"
        )
    results = trusting_sources(cert, env)
    trusted = [f"{s.client} ({s.source})" for s, ok in results if ok]
    untrusted = [f"{s.client} ({s.source})" for s, ok in results if not ok]
    fix = "llm-shadow ca  (prints how to trust it for each kind of client)"
    if not trusted:
        return CheckResult(
            name,
            "fail",
            "no trust store in this environment holds the CA: clients will reject intercepted LLM calls",
            fix,
        )
    if untrusted:
        return CheckResult(name, "warn", f"trusted by {'; '.join(trusted)}; not by {'; '.join(untrusted)}", fix)
    return CheckResult(name, "ok", f"trusted by {'; '.join(trusted)}")


def check_port_free(port: int, host: str = "0.0.0.0") -> CheckResult:
    name = f"port {port} free"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return CheckResult(
                    name,
                    "fail",
                    f"something already listens on {host}:{port} (an llm-shadow proxy already running is fine)",
                    f"find it: ss -ltnp 'sport = :{port}' ; or start the proxy with --port <another port>",
                )
            if e.errno == errno.EACCES:
                return CheckResult(name, "fail", f"not allowed to listen on port {port}", "use a port above 1023")
            return CheckResult(name, "fail", f"cannot listen on {host}:{port}: {e.strerror}")
    return CheckResult(name, "ok", f"{host}:{port} can be listened on")


def check_data_dir_writable(data_dir: Path) -> CheckResult:
    """Whether the proxy can write `data_dir`, or create it; creates nothing that stays (a data
    directory not there yet is judged by the directory it would be made in)."""
    name = "data directory writable"
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), Path("/"))
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".doctor-"):
            pass
    except OSError as e:
        return CheckResult(
            name,
            "fail",
            f"cannot write in {existing}: {e.strerror}",
            f"chown $(id -u) {existing}, or pass --data a writable directory",
        )
    if existing != data_dir:
        return CheckResult(name, "ok", f"{data_dir} does not exist yet; the proxy can create it in {existing}")
    return CheckResult(name, "ok", f"{data_dir} is writable")


def check_tiktoken_files(files: dict[str, Path]) -> CheckResult:
    """`files`: encoding -> the file it is loaded from (see `tiktoken_files`)."""
    name = "tiktoken files"
    missing, corrupt = [], []
    for encoding, path in files.items():
        if not path.is_file():
            missing.append(f"{encoding} ({path})")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != TIKTOKEN_SHA256[encoding]:
            corrupt.append(f"{encoding} ({path})")
    if missing or corrupt:
        problems = [f"missing: {', '.join(missing)}"] if missing else []
        problems += [f"corrupt: {', '.join(corrupt)}"] if corrupt else []
        return CheckResult(
            name,
            "fail",
            f"{'; '.join(problems)}; token estimates would try to download them",
            "delete the corrupt files, or reinstall llm-shadow (it ships both in analysis/tiktoken_cache)",
        )
    return CheckResult(name, "ok", f"{', '.join(files)} present and intact")


def check_redirect_loop(port: int, conn: ProxyConnection, rule_sets: Mapping[str, str | None]) -> CheckResult:
    """`rule_sets` maps "iptables"/"nftables" to the tool's output, None when unreadable."""
    name = "redirect loop"
    readable = {source: text for source, text in rule_sets.items() if text is not None}
    if not readable:
        return CheckResult(
            name,
            "skip",
            "cannot read the firewall rules here (iptables-save / nft missing, or not root)",
            "run `sudo llm-shadow doctor` in the network namespace the redirect lives in",
        )
    findings: list[LoopFinding] = []
    for dport in (443, 80):
        probe = ProxyConnection(conn.uid, conn.gid, dport, conn.mark)
        if "iptables" in readable:
            findings += iptables_loop_findings(readable["iptables"], port, probe)
        if "nftables" in readable:
            findings += nft_loop_findings(readable["nftables"], port, probe)
    fix = (
        f"exclude the proxy's user from the redirect: iptables ... -m owner ! --uid-owner {conn.uid} ..., "
        f"nft ... meta skuid != {conn.uid} ... (see {DOCS})"
    )
    certain = sorted({f.rule for f in findings if f.certain})
    if certain:
        return CheckResult(
            name,
            "fail",
            f"the proxy (uid {conn.uid}) would be redirected to itself by: {certain[0]}",
            fix,
        )
    uncertain = sorted({f.rule for f in findings})
    if uncertain:
        return CheckResult(
            name,
            "warn",
            f"cannot tell whether this rule spares the proxy (uid {conn.uid}): {uncertain[0]}",
            fix,
        )
    if not _mentions_port(readable.values(), port):
        return CheckResult(
            name,
            "skip",
            f"no NAT rule redirects to port {port} in this network namespace",
            f"fine if the redirect lives elsewhere (a pod, a gateway); otherwise see {DOCS}",
        )
    return CheckResult(name, "ok", f"the proxy's own connections (uid {conn.uid}) are not redirected")


def _mentions_port(texts, port: int) -> bool:
    pattern = re.compile(rf"(--to-ports|redirect to|dnat[^\n]*to|--to-destination)\s*\S*:?{port}\b")
    return any(pattern.search(text) for text in texts)


def read_nat_rules() -> dict[str, str | None]:
    """This network namespace's NAT rules, per tool; None where the tool is missing or refused."""
    commands = {"iptables": ["iptables-save", "-t", "nat"], "nftables": ["nft", "list", "ruleset"]}
    rules: dict[str, str | None] = {}
    for source, command in commands.items():
        if shutil.which(command[0]) is None:
            rules[source] = None
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            rules[source] = None
            continue
        rules[source] = done.stdout if done.returncode == 0 else None
    return rules


def local_capture_unavailable_reason(
    system: str | None = None,
    kernel_release: str | None = None,
    has_sudo: bool | None = None,
    cgroup2_root: Path = Path("/sys/fs/cgroup"),
    proc_version: str | None = None,
) -> str | None:
    """Why mitmproxy's local capture mode (`--mode local:NAME`) cannot work here, or None.

    On Linux it loads an eBPF program through a `sudo` helper and attaches it to the root of
    the unified cgroup v2 hierarchy; mitmproxy supports kernels 6.8 and newer.
    """
    system = system or platform.system()
    if system != "Linux":
        return None  # macOS and Windows have their own redirectors; mitmproxy reports on them
    kernel_release = kernel_release or platform.release()
    if proc_version is None:
        try:
            proc_version = Path("/proc/version").read_text()
        except OSError:
            proc_version = ""
    if "microsoft" in proc_version.lower():
        return "local capture does not work under WSL, which disables eBPF"
    version = re.match(r"(\d+)\.(\d+)", kernel_release)
    if version and (int(version[1]), int(version[2])) < (6, 8):
        return f"local capture needs Linux 6.8 or newer for its eBPF redirector; this kernel is {kernel_release}"
    if not (cgroup2_root / "cgroup.controllers").exists():
        return (
            f"local capture attaches its eBPF program to the cgroup v2 hierarchy, but {cgroup2_root} "
            "is not a unified cgroup v2 mount (this system uses cgroup v1 or a hybrid layout)"
        )
    if has_sudo is None:
        has_sudo = shutil.which("sudo") is not None
    if not has_sudo:
        return "local capture starts its redirector with sudo (even as root), and sudo is not installed"
    return None


def check_local_capture(reason: str | None) -> CheckResult:
    name = "local capture mode"
    if reason:
        return CheckResult(name, "warn", reason, f"use --transparent with a redirect rule instead ({DOCS})")
    return CheckResult(name, "ok", "the requirements of --local NAME are met (it still asks sudo)")


class UnknownUserError(LookupError):
    """--proxy-user names no user of this system."""


def proxy_connection_for(user: str | None) -> ProxyConnection:
    """The proxy's upstream connection when it runs as `user` (name or uid; None: as us)."""
    if user is None:
        return ProxyConnection(uid=os.getuid(), gid=os.getgid())
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError as e:
        raise UnknownUserError(f"no user {user!r} on this system") from e
    return ProxyConnection(uid=entry.pw_uid, gid=entry.pw_gid)


# The ways to capture (`llm-shadow proxy --upstream/--forward/--transparent/--local`) and the
# checks that do not apply to each: reverse mode decrypts nothing and needs no redirect rule.
CAPTURE_MODES = ("reverse", "forward", "transparent", "local")
NOT_APPLICABLE = {
    "reverse": ("CA private key", "CA trusted by clients", "redirect loop", "local capture mode"),
    "forward": ("redirect loop", "local capture mode"),
    "transparent": (),
    "local": (),
}


def run_checks(
    files: CaFiles,
    data_dir: Path,
    port: int,
    env: Mapping[str, str] | None = None,
    conn: ProxyConnection | None = None,
    mode: str = "transparent",
) -> list[CheckResult]:
    """Every check that applies to capture `mode`, on this machine's files, ports, firewall and
    environment (the others are "skip"). `conn` is the proxy's own upstream connection (its uid
    and gid), by default that of this process."""
    conn = conn or proxy_connection_for(None)
    env = os.environ if env is None else env
    user_tiktoken_dir = env.get("TIKTOKEN_CACHE_DIR")
    skipped = NOT_APPLICABLE[mode]
    checks = [
        ("CA private key", lambda: check_ca_key(files)),
        ("CA trusted by clients", lambda: check_ca_trusted(files, env)),
        (f"port {port} free", lambda: check_port_free(port)),
        ("redirect loop", lambda: check_redirect_loop(port, conn, read_nat_rules())),
        ("data directory writable", lambda: check_data_dir_writable(data_dir)),
        (
            "tiktoken files",
            lambda: check_tiktoken_files(tiktoken_files(Path(user_tiktoken_dir) if user_tiktoken_dir else None)),
        ),
        ("local capture mode", lambda: check_local_capture(local_capture_unavailable_reason())),
    ]
    return [
        CheckResult(name, "skip", f"not used in {mode} mode") if name in skipped else check() for name, check in checks
    ]
