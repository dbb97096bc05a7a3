"""A tiny HTTPS server standing in for real servers in tests/test_transparent.py.

Run inside the test's "server" network namespace, it listens on port 443 and answers with
the certificate whose name the client asked for (SNI): `<cert-dir>/<host>.pem` holds that
host's certificate chain and key. POST to any path returns the bytes of `<cert-dir>/body`
as application/json (a provider's response); GET returns "hello from <host>". Each request
is appended to `<cert-dir>/requests.log` as one line: host, method, path, body length.
It prints "ready" once listening and stops after --lifetime seconds at the latest.
"""

import argparse
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--lifetime", type=float, default=120)
    args = parser.parse_args()
    cert_dir: Path = args.cert_dir

    contexts = {}
    for pem in cert_dir.glob("*.pem"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        contexts[pem.stem] = context
    default = next(iter(contexts.values()))

    def pick_certificate(sslobj, server_name, _context):
        sslobj.context = contexts.get(server_name or "", default)

    default.sni_callback = pick_certificate
    body = (cert_dir / "body").read_bytes()
    log = cert_dir / "requests.log"
    log_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _log_request(self, length: int) -> None:
            host = self.headers.get("host", "")
            with log_lock, log.open("a") as f:
                f.write(f"{host} {self.command} {self.path} {length}\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            self.rfile.read(length)
            self._log_request(length)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._log_request(0)
            reply = f"hello from {self.headers.get('host', '')}".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    server.socket = default.wrap_socket(server.socket, server_side=True)
    stopper = threading.Timer(args.lifetime, server.shutdown)
    stopper.daemon = True
    stopper.start()
    print("ready", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
