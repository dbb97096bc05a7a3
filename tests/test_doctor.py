"""`llm-shadow doctor`: each check on prepared inputs, then the command itself."""

import asyncio
import logging
import os
import shutil
import socket
from pathlib import Path

from mitmproxy.test import taddons
from typer.testing import CliRunner

from addons.ca import ensure_ca
from addons.local_capture import LocalCaptureWatch, summarize_redirector_output
from analysis.capture_setup.ca import CaFiles, write_bundle
from analysis.capture_setup.doctor import (
    check_ca_key,
    check_ca_trusted,
    check_data_dir_writable,
    check_local_capture,
    check_port_free,
    check_redirect_loop,
    check_tiktoken_files,
    local_capture_unavailable_reason,
    tiktoken_files,
)
from analysis.capture_setup.netfilter import ProxyConnection
from cli import app

LOOPING = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 8080\nCOMMIT\n"
SAFE = LOOPING.replace("-j REDIRECT", "-m owner ! --uid-owner 0 -j REDIRECT")
ROOT_PROXY = ProxyConnection(uid=0, gid=0)


def test_ca_key_missing_loose_and_fine(tmp_path):
    files = CaFiles(tmp_path / "conf")
    assert check_ca_key(files).status == "fail"
    ensure_ca(files.confdir)
    assert check_ca_key(files).status == "ok"
    files.key_files[0].chmod(0o640)
    result = check_ca_key(files)
    assert result.status == "fail" and "0640" in result.message and result.fix.startswith("chmod 600")


def test_ca_key_inside_a_git_work_tree_is_a_warning(tmp_path):
    (tmp_path / ".git").mkdir()
    files, _ = ensure_ca(tmp_path / "project" / ".mitmproxy")
    result = check_ca_key(files)
    assert result.status == "warn" and ".gitignore" in result.fix


def test_ca_trust_depends_on_the_clients_environment(tmp_path):
    files, _ = ensure_ca(tmp_path / "conf")
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    nothing = {"SSL_CERT_FILE": str(empty), "REQUESTS_CA_BUNDLE": str(empty), "CURL_CA_BUNDLE": str(empty)}
    assert check_ca_trusted(files, nothing).status == "fail"
    bundle = tmp_path / "bundle.pem"
    write_bundle(bundle, files.cert, None)
    some = dict(nothing, SSL_CERT_FILE=str(bundle))
    result = check_ca_trusted(files, some)
    assert result.status == "warn" and "SSL_CERT_FILE" in result.message
    everywhere = {
        k: str(bundle) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
    }
    assert check_ca_trusted(files, everywhere).status == "ok"


def test_port_in_use_is_found():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = check_port_free(port, "127.0.0.1")
        assert result.status == "fail" and f"sport = :{port}" in result.fix
    assert check_port_free(port, "127.0.0.1").status == "ok"


def test_data_dir_writable(tmp_path):
    assert check_data_dir_writable(tmp_path / "new" / "data").status == "ok"
    assert not (tmp_path / "new").exists()  # judged, not created
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert check_data_dir_writable(blocker / "data").status == "fail"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert check_data_dir_writable(locked).status == "fail"


def test_tiktoken_files(tmp_path):
    shipped = tiktoken_files(None)
    assert check_tiktoken_files(shipped).status == "ok"  # the copy llm-shadow ships
    assert tiktoken_files(tmp_path) == shipped  # an empty TIKTOKEN_CACHE_DIR is not used
    assert check_tiktoken_files(tiktoken_files(None, bundled_dir=tmp_path)).status == "fail"
    for f in shipped.values():
        shutil.copy(f, tmp_path / f.name)
    user = tiktoken_files(tmp_path)
    assert set(user.values()) == {tmp_path / f.name for f in shipped.values()}
    assert check_tiktoken_files(user).status == "ok"
    user["o200k_base"].write_bytes(b"truncated")
    result = check_tiktoken_files(user)
    assert result.status == "fail" and "corrupt: o200k_base" in result.message


def test_redirect_loop():
    result = check_redirect_loop(8080, ROOT_PROXY, {"iptables": LOOPING, "nftables": None})
    assert result.status == "fail" and "--uid-owner 0" in result.fix
    assert check_redirect_loop(8080, ROOT_PROXY, {"iptables": SAFE}).status == "ok"
    assert check_redirect_loop(9999, ROOT_PROXY, {"iptables": LOOPING}).status == "skip"
    assert check_redirect_loop(8080, ROOT_PROXY, {"iptables": None, "nftables": None}).status == "skip"


def test_local_capture_preflight(tmp_path):
    cgroup2 = tmp_path / "cgroup"
    cgroup2.mkdir()
    (cgroup2 / "cgroup.controllers").write_text("cpu memory\n")
    ok = dict(
        system="Linux",
        kernel_release="6.8.0-45-generic",
        has_sudo=True,
        cgroup2_root=cgroup2,
        proc_version="Linux version 6.8.0",
    )
    assert local_capture_unavailable_reason(**ok) is None
    assert "6.8" in local_capture_unavailable_reason(**dict(ok, kernel_release="5.15.0-91-generic"))
    assert "cgroup v2" in local_capture_unavailable_reason(**dict(ok, cgroup2_root=tmp_path / "v1"))
    assert "sudo" in local_capture_unavailable_reason(**dict(ok, has_sudo=False))
    assert "WSL" in local_capture_unavailable_reason(
        **dict(ok, proc_version="Linux version 5.15.153.1-microsoft-standard-WSL2")
    )
    assert local_capture_unavailable_reason(system="Darwin") is None
    assert check_local_capture("no sudo").status == "warn"


# What mitmproxy logged here when the kernel refused the redirector (cgroup v1 host).
REDIRECTOR_OUTPUT = [
    "[aya::bpf] object BTF couldn't be loaded in the kernel: the BPF_BTF_LOAD syscall returned Invalid argument (os "
    "error 22). Verifier output: magic: 0xeb9f",
    "    version: 1",
    "Error: eBPF initialization failed",
    "",
    "Caused by:",
    "    0: failed to attach cgroup_sock_create program",
    "    1: `bpf_link_create` failed",
    "    2: Bad file descriptor (os error 9)",
    "",
    "Stack backtrace:",
    "   0: <unknown>",
]


def test_redirector_failure_is_summarized():
    assert summarize_redirector_output(REDIRECTOR_OUTPUT) == (
        "eBPF initialization failed: failed to attach cgroup_sock_create program: "
        "`bpf_link_create` failed: Bad file descriptor (os error 9)"
    )


def test_local_capture_watch_stops_the_proxy_with_the_reason():
    async def scenario() -> LocalCaptureWatch:
        watch = LocalCaptureWatch()
        with taddons.context(watch) as tctx:
            redirector = logging.getLogger("mitmproxy.packet_sources.linux")
            for line in REDIRECTOR_OUTPUT:
                redirector.warning(line)
            redirector.error("[linux-redirector] exited during shutdown: Ok(())")
            assert watch.failure is None
            redirector.error("[linux-redirector] exited: Ok(ExitStatus(unix_wait_status(256)))")
            await asyncio.wait_for(tctx.master.should_exit.wait(), 5)  # it asked the proxy to stop
        watch.done()
        return watch

    watch = asyncio.run(scenario())
    assert "eBPF initialization failed" in watch.failure and "--transparent" in watch.failure


def test_doctor_command_reports_and_fails(tmp_path):
    result = CliRunner().invoke(
        app,
        ["doctor", "--confdir", str(tmp_path / "conf"), "--data", str(tmp_path / "data"), "--port", "0"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 1  # no CA yet
    for name in ("CA private key", "redirect loop", "data directory writable", "tiktoken files"):
        assert name in result.output
    assert "llm-shadow ca" in result.output
    assert not Path(tmp_path / "conf").exists()  # doctor only looks


def test_doctor_unknown_proxy_user_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--proxy-user", "no-such-user-llm-shadow"])
    assert result.exit_code == 1 and "no-such-user-llm-shadow" in result.output
    assert "Traceback" not in result.output


def test_doctor_for_reverse_mode_skips_the_ca_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLM_SHADOW_DATA")  # the default, ./shadow-data
    conf = tmp_path / "conf"
    result = CliRunner().invoke(
        app, ["doctor", "--mode", "reverse", "--confdir", str(conf), "--port", "0"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert "not used in reverse mode" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ./shadow-data, no CA
    bad = CliRunner().invoke(app, ["doctor", "--mode", "sideways"])
    assert bad.exit_code == 1 and "choose one of reverse" in bad.stderr
