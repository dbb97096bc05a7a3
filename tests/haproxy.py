"""A real HAProxy (the Debian package) for tests and benchmarks: a round-robin HTTP balancer on a
free loopback port in front of the given backend ports, as a platform team would run in front of
several llm-shadow proxies. Started in the foreground, stopped after; nothing else of the
machine's HAProxy is touched.
"""

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.redis_server import free_port

HAPROXY_CONFIG = """
global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend front
    bind 127.0.0.1:{port}
    default_backend proxies
backend proxies
    balance roundrobin
{servers}
"""


class HAProxy:
    """`haproxy` in the foreground on a free loopback port, balancing over `backends`."""

    def __init__(self, scratch: Path, name: str, backends: list[int]):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError(
                "haproxy is not installed (.ci/install-system-deps installs it: apt-get install haproxy)"
            )
        self.port = free_port()
        servers = "\n".join(f"    server p{i} 127.0.0.1:{port}" for i, port in enumerate(backends))
        config = scratch / f"{name}.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its configuration: {check.stderr.strip()}")
        self.process = subprocess.Popen([binary, "-db", "-q", "-f", str(config)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"haproxy did not start on port {self.port}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
