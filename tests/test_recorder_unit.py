"""The recorder's pure helpers and its options, with mitmproxy's own test helpers."""

from dataclasses import fields
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.http import Headers
from mitmproxy.test import taddons

from addons.recorder import (
    RECORDER_OPTIONS,
    Recorder,
    is_streamed,
    options_from_settings,
    outcome_for_error,
    settings_from_options,
)
from analysis.recording.capture import key_fingerprint, request_side_names, split_secrets
from analysis.recording.settings import RecorderSettings


def test_recorder_options_are_the_ones_it_declares():
    with taddons.context(Recorder()) as tctx:
        declared = {name for name in tctx.options.keys() if name.startswith("shadow_")}
    assert declared == RECORDER_OPTIONS


def test_every_setting_is_the_option_of_the_same_name():
    names = {f"shadow_{f.name}" for f in fields(RecorderSettings)}
    assert names == RECORDER_OPTIONS - {"shadow_flush_ms"}  # the one compatibility alias


def test_option_defaults_are_the_settings_defaults():
    with taddons.context(Recorder()) as tctx:
        from_options = settings_from_options(tctx.options)
    assert from_options == RecorderSettings(data=from_options.data)


def test_settings_survive_the_trip_through_options():
    settings = RecorderSettings(
        data=Path("/tmp/somewhere"),
        content=False,
        flush_interval=0.1 + 0.2,
        team_header="x-team",
        feature_header="x-feature",
        user_header="x-user",
        spool_limit=7,
        queue_limit=0,
        max_body=1234,
    )
    with taddons.context(Recorder()) as tctx:
        tctx.options.update(**options_from_settings(settings))
        assert settings_from_options(tctx.options) == settings


def test_flush_interval_is_seconds_on_the_command_line_and_shadow_flush_ms_still_works():
    with taddons.context(Recorder()) as tctx:
        tctx.options.set("shadow_flush_interval=0.25")
        assert settings_from_options(tctx.options).flush_interval == 0.25
        tctx.options.set("shadow_flush_ms=200")
        assert settings_from_options(tctx.options).flush_interval == 0.2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("shadow_flush_interval=soon", "shadow_flush_interval: 'soon' is not a number of seconds"),
        ("shadow_flush_interval=0", "shadow_flush_interval must be a positive number of seconds"),
        ("shadow_flush_interval=inf", "shadow_flush_interval must be a positive number of seconds"),
        ("shadow_flush_ms=0", "shadow_flush_interval must be a positive number of seconds"),
        ("shadow_queue_limit=-1", "shadow_queue_limit must not be negative"),
    ],
)
def test_a_bad_setting_is_an_options_error_naming_it(option, message):
    with taddons.context(Recorder()) as tctx:
        tctx.options.set(option)
        with pytest.raises(exceptions.OptionsError, match=message):
            settings_from_options(tctx.options)


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


def test_secrets_split_from_only_the_request_side_names_are_the_full_splits_of_those_names():
    only = request_side_names("X-Team", "x-feature", "X-\u00dcser")
    fields = [
        (b"X-API-Key", b"sk-first"),
        (b"Authorization", b"Bearer sk-second"),
        (b"X-TEAM", b"t\xc3\xa9am"),
        (b"Content-Encoding", b"gzip"),
        (b"X-Stainless-OS", b"Linux"),
        ("X-\u00dcSER".encode(), b"u"),  # a name that is not ASCII is decoded, then compared
        ("x-feature", "str fields"),
        (b"Cookie", b"c=1"),
    ]
    headers, key = split_secrets(fields, only)
    assert key == "sk-first"
    assert headers == {"x-team": "t\u00e9am", "content-encoding": "gzip", "x-\u00fcser": "u", "x-feature": "str fields"}
    everything, _ = split_secrets(fields)
    assert headers == {name: value for name, value in everything.items() if name in only}


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


def test_every_key_shape_is_redacted_with_or_without_other_text():
    from analysis.recording.secrets import REDACTED, redact_text

    shapes = [
        "sk-proj-" + "A1b2C3d4E5" * 3,
        "sk-ant-api03-" + "x" * 20,
        "pk-" + "a" * 16,
        "rk-" + "b" * 16,
        "AIza" + "Sy0123456789abcdefghijklmnopqrstuvw",
        "ya29." + "c" * 24,
        "gsk_" + "d" * 16,
        "xai_" + "e" * 16,
        "xai-" + "f" * 16,
        "hf_" + "g" * 16,
        "r8_" + "h" * 16,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "ASIA" + "ABCDEFGHIJKLMNOP",
    ]
    for shape in shapes:
        assert redact_text(shape) == REDACTED, shape
        assert redact_text(f"my key is {shape}.") == f"my key is {REDACTED}.", shape
    assert redact_text("Authorization: Bearer abcdefgh12345") == f"Authorization: Bearer {REDACTED}"
    assert redact_text("https://x/v1?alt=sse&key=secretvalue1") == f"https://x/v1?alt=sse&key={REDACTED}"
    assert redact_text("https://x/v1?api_key=secretvalue1") == f"https://x/v1?api_key={REDACTED}"
    assert redact_text("a risky task-list, skipped") == "a risky task-list, skipped"
