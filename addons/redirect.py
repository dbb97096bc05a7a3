"""Redirect a request: to another model, or to another upstream speaking the same wire format.

Used by the enforcer (routing rules and budget downgrades) and by fallback chains, so a
routed call and a rescued call are rewritten the same way.
"""

import json
from urllib.parse import urlsplit

from mitmproxy import http


def rewrite_model(request: http.Request, model: str) -> None:
    """Send the request for `model`: in the URL for Gemini (`/models/<model>:...`), else in
    the JSON body's `model`."""
    marker = "/models/"
    path, sep, query = request.path.partition("?")
    if marker in path and ":" in path.rsplit(marker, 1)[1]:
        head, tail = path.rsplit(marker, 1)
        request.path = f"{head}{marker}{model}:{tail.split(':', 1)[1]}{sep}{query}"
        return
    body = json.loads(request.get_content() or b"{}")
    body["model"] = model
    request.content = json.dumps(body, ensure_ascii=False).encode()


KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def send_to(request: http.Request, base_url: str, key: str | None) -> None:
    """Send the request to another upstream speaking the same wire format: its scheme, host and
    port, its path prefix before the request's path, and its own key in place of the client's."""
    target = urlsplit(base_url)
    request.scheme = target.scheme
    request.host = target.hostname or request.host
    request.port = target.port or (443 if target.scheme == "https" else 80)
    request.headers["host"] = target.netloc
    request.path = target.path.rstrip("/") + request.path
    if key is not None:
        for name in KEY_HEADERS:
            if name in request.headers:
                request.headers[name] = f"Bearer {key}" if name == "authorization" else key
