"""The unmodified client of tests/test_transparent.py: it knows nothing about any proxy.

`openai`: one chat completion through the official SDK with its default base_url
(https://api.openai.com/v1), trusting whatever SSL_CERT_FILE names, as a user's service
would. `tls HOST`: a TLS handshake with HOST:443 and a GET /, reporting the certificate the
client was shown. Prints one JSON object on stdout.
"""

import base64
import json
import socket
import ssl
import sys


def openai_call() -> dict:
    import openai

    client = openai.OpenAI(api_key="sk-test-not-a-real-key", timeout=20, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}]
    )
    return {"status": raw.status_code, "body_b64": base64.b64encode(raw.http_response.content).decode()}


def tls_get(host: str) -> dict:
    context = ssl.create_default_context()  # honours SSL_CERT_FILE
    with socket.create_connection((host, 443), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            cert = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    return {"cert_b64": base64.b64encode(cert).decode(), "response": response.decode(errors="replace")}


if __name__ == "__main__":
    result = openai_call() if sys.argv[1] == "openai" else tls_get(sys.argv[2])
    print(json.dumps(result))
