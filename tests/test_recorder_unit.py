"""The recorder's pure helpers and its options, with mitmproxy's own test helpers."""

import pytest
from mitmproxy.http import Headers
from mitmproxy.test import taddons

from addons.recorder import RECORDER_OPTIONS, Recorder, is_streamed, outcome_for_error
from analysis.recording.capture import key_fingerprint, split_secrets


def test_recorder_options_are_the_ones_it_declares():
    with taddons.context(Recorder()) as tctx:
        declared = {name for name in tctx.options.keys() if name.startswith("shadow_")}
    assert declared == RECORDER_OPTIONS


def test_secrets_are_split_from_headers():
    headers, key = split_secrets(
        [
            (b"Authorization", b"Bearer sk-abc"),
            (b"Cookie", b"c=1"),
            (b"X-Shadow-Team", b"t"),
            (b"Content-Type", b"application/json"),
        ]
    )
    assert key == "sk-abc"
    assert headers == {"x-shadow-team": "t", "content-type": "application/json"}
    assert split_secrets([("x-api-key", "sk-ant")])[1] == "sk-ant"
    assert split_secrets([("x-goog-api-key", "AIza")])[1] == "AIza"


def test_key_fingerprint_is_salted_and_stable():
    assert key_fingerprint("sk-1", "salt") == key_fingerprint("sk-1", "salt")
    assert key_fingerprint("sk-1", "salt") != key_fingerprint("sk-1", "other-salt")
    assert key_fingerprint("sk-1", "salt") != key_fingerprint("sk-2", "salt")
    assert "sk-1" not in key_fingerprint("sk-1", "salt")


@pytest.mark.parametrize(
    ("message", "started", "outcome"),
    [
        ("Client disconnected.", True, "client_disconnected"),
        ("server closed connection", True, "upstream_cut"),
        ("Connection timed out", False, "timeout"),
        ("[Errno 111] Connection refused", False, "connect_error"),
    ],
)
def test_outcome_for_error(message, started, outcome):
    assert outcome_for_error(message, started) == outcome


def test_outcome_for_error_idle_and_abandoned_calls():
    # mitmproxy says "Client disconnected." when its inactivity timeout closes the connection.
    assert outcome_for_error("Client disconnected.", False, idle_seconds=600.1, idle_timeout=600) == "timeout"
    assert outcome_for_error("Client disconnected.", False, idle_seconds=3, idle_timeout=600) == "client_disconnected"
    message = "HTTP/1 protocol error: peer closed connection without sending complete message body"
    assert outcome_for_error(message, False, request_complete=False) == "client_disconnected"


@pytest.mark.parametrize(
    ("path", "headers", "streamed"),
    [
        ("/v1/chat/completions", {"content-type": "text/event-stream", "transfer-encoding": "chunked"}, True),
        ("/v1beta/models/g:streamGenerateContent", {"content-type": "application/json", "content-length": "10"}, True),
        ("/v1/chat/completions", {"content-type": "application/json", "transfer-encoding": "chunked"}, True),
        ("/v1/chat/completions", {"content-type": "application/json", "content-length": "120"}, False),
    ],
)
def test_which_responses_are_streamed(path, headers, streamed):
    assert is_streamed(path, Headers(**{k.replace("-", "_"): v for k, v in headers.items()})) is streamed
