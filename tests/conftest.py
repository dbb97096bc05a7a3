import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fake_provider import FakeProvider
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the checkout (or $LLM_SHADOW_SHARED), where the test data lives."""
    candidate = Path(os.environ.get("LLM_SHADOW_SHARED", ROOT.parent / "shared"))
    return candidate if candidate.is_dir() else None


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch, tmp_path):
    """Tests never read or write a real data directory or a real tiktoken cache."""
    monkeypatch.setenv("LLM_SHADOW_DATA", str(tmp_path / "default-data"))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def feature(request) -> str:
    """This test's own x-shadow-feature value (header-safe), so its rows can be told apart
    from other tests' in a proxy they share."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")


@pytest.fixture
def provider():
    with FakeProvider() as p:
        yield p


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of this test's own on a free loopback port (killed afterwards)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def subprocess_env(project_on_path: bool = True, **extra) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))
    }
    if project_on_path:
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


START_TIMEOUT_S = 90

MITMDUMP = [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]


def llm_shadow_proxy_command(args: list[str], data_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "proxy", *args, "--data", str(data_dir), "--flush-interval", "0.2"]


class RunningProxy:
    """A proxy command (`llm-shadow proxy`, or bare mitmdump) in a subprocess, on a free port."""

    def __init__(self, command: list[str], cwd: Path = ROOT, project_on_path: bool = True, **env: str):
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=subprocess_env(project_on_path, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._listening = threading.Event()
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # Generous: a loaded 2-core CI machine can take tens of seconds to import mitmproxy.
        # A proxy that exits early is reported at once, not after the whole wait.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("proxy did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            m = re.search(r"listening at .*:(\d+)", line)
            if m and self.port is None:
                self.port = int(m[1])
                self._listening.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int | None = None) -> int:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        return self.process.returncode


@pytest.fixture
def start_proxy(data_dir):
    """Start `llm-shadow proxy ARGS` (recording into data_dir); stopped after the test."""
    proxies: list[RunningProxy] = []

    def start(*args: str, data: Path | None = None) -> RunningProxy:
        p = RunningProxy(llm_shadow_proxy_command(list(args), data or data_dir))
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.stop()


@pytest.fixture
def start_mitmdump():
    """Start bare mitmdump with ARGS; stopped after the test."""
    proxies: list[RunningProxy] = []

    def start(*args: str, cwd: Path = ROOT, project_on_path: bool = True) -> RunningProxy:
        p = RunningProxy([*MITMDUMP, *args], cwd, project_on_path)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.stop()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value (returned) or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- report and demo fixtures --------------------------------------------------------------------


class DemoRun:
    """`llm-shadow demo` as run once for the whole test session, in a fresh directory."""

    def __init__(self, workdir: Path, result: subprocess.CompletedProcess):
        self.workdir, self.result = workdir, result
        self.out = workdir / "shadow-demo"
        self.data = self.out / "data"
        self.report = self.out / "report.html"


DEMO_TEST_SCALE = 1


@pytest.fixture(scope="session")
def sample_demo(tmp_path_factory) -> DemoRun:
    """The demo on a small company month (`--scale 1`, about 1,500 calls; generated and recorded
    once, shared by the demo and report tests: recording the month is the slow part)."""
    workdir = tmp_path_factory.mktemp("fresh")
    env = subprocess_env()
    env.pop("TIKTOKEN_CACHE_DIR", None)  # as in every test: the tiktoken files llm-shadow ships
    # As `./run.sh demo` runs it: the installed program, which the PATH of a new shell lacks.
    program = Path(sys.executable).with_name("llm-shadow")
    result = subprocess.run(
        [str(program), "demo", "--scale", str(DEMO_TEST_SCALE)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return DemoRun(workdir, result)


# Upstreams of the fallback tests (test_enforce_fallback, test_enforce_rescue): two fake
# providers, a port that never answers and a port that refuses connections.
@pytest.fixture(scope="module")
def primary():
    with FakeProvider() as p:
        yield p


@pytest.fixture(scope="module")
def backup():
    with FakeProvider() as p:
        yield p


@pytest.fixture(scope="module")
def silent():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def closed():
    """A port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
