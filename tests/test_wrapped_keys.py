"""Wrapped keys: the registry (data directory or Redis) and the `llm-shadow keys` commands."""

import json
import stat
import subprocess
import sys
import time

import pytest

from analysis.shared_state.backend import RedisBackend
from analysis.shared_state.keys import FileKeys, KeyRegistry, RedisKeys, WrappedKeyError, split_key
from tests.conftest import ROOT, subprocess_env


@pytest.fixture(params=["data-dir", "redis"])
def source(request, data_dir):
    """A function making a registry reader (one per proxy process) on one shared store."""
    if request.param == "data-dir":
        return lambda: FileKeys(data_dir)
    url = request.getfixturevalue("redis_server").url
    return lambda: RedisKeys(RedisBackend(url).link)


def test_key_lifecycle(source):
    admin, proxy = KeyRegistry(source()), KeyRegistry(source())
    record, text = admin.create("support", "OPENAI_API_KEY", feature="faq", user="ann", budget_usd=5.0, window="day")
    assert split_key(text) == (record.id, text.split("-", 2)[2])
    resolved = proxy.resolve(text)
    assert resolved.status == "active" and resolved.key.team == "support" and resolved.key.feature == "faq"
    assert resolved.key.key_id == f"lsk-{record.id}" and resolved.key.provider_key_env == "OPENAI_API_KEY"
    assert proxy.resolve(text[:-1] + ("A" if text[-1] != "A" else "B")).status == "unknown"  # wrong secret
    assert proxy.resolve("sk-proj-raw-provider-key").status == "unknown"

    _, new_text = admin.rotate(record.key_id)
    proxy.refresh(force=True)
    assert proxy.resolve(text).status == "unknown" and proxy.resolve(new_text).status == "active"

    admin.revoke(record.id)
    proxy.refresh(force=True)
    assert proxy.resolve(new_text).status == "revoked"
    with pytest.raises(WrappedKeyError, match="revoked"):
        admin.rotate(record.id)
    with pytest.raises(WrappedKeyError, match="no wrapped key"):
        admin.revoke("lsk-000000000000")


def test_expired_key(source):
    registry = KeyRegistry(source())
    _, text = registry.create("t", "K", expires_in_s=30, now=time.time() - 60)
    assert registry.resolve(text).status == "expired"


def test_revocation_reaches_another_reader_within_a_second(source):
    admin, proxy = KeyRegistry(source()), KeyRegistry(source())
    record, text = admin.create("t", "K")
    assert proxy.resolve(text).status == "active"
    admin.revoke(record.id)
    revoked_at = time.monotonic()
    while proxy.resolve(text).status == "active":
        time.sleep(0.01)
        assert time.monotonic() - revoked_at < 1.0
    assert proxy.resolve(text).status == "revoked"


def test_a_key_created_just_after_a_read_is_accepted_at_once(data_dir):
    """A proxy that has just read the registry (another key's call) sees a key created a moment
    later on its first use: with the data directory a miss looks for a changed file every time."""
    admin, proxy = KeyRegistry(FileKeys(data_dir)), KeyRegistry(FileKeys(data_dir))
    _, first = admin.create("t", "K")
    assert proxy.resolve(first).status == "active"  # the proxy's registry was read just now
    _, second = admin.create("t", "K")
    assert proxy.resolve(second).status == "active"


def test_only_salted_hashes_are_stored(data_dir):
    registry = KeyRegistry(FileKeys(data_dir))
    texts = [registry.create("t", "K")[1] for _ in range(2)]
    stored = (data_dir / "keys.json").read_text()
    assert stat.S_IMODE((data_dir / "keys.json").stat().st_mode) == 0o600
    for text in texts:
        assert split_key(text)[1] not in stored
    salts = {r["salt"] for r in json.loads(stored).values()}
    assert len(salts) == 2  # one salt per key


def test_keys_commands(data_dir):
    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "cli.py"), "keys", *args, "--data", str(data_dir)]
        return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=60)

    created = run("create", "--team", "support", "--provider-key-env", "OPENAI_API_KEY", "--budget-usd", "5")
    assert created.returncode == 1 and created.stderr.startswith("Error: --budget-usd needs --window")
    assert "Traceback" not in created.stderr
    created = run("create", "--team", "support", "--provider-key-env", "OPENAI_API_KEY", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    text = created.stdout.strip()
    key_id = "lsk-" + split_key(text)[0]
    listed = run("list", "--format", "json")
    rows = json.loads(listed.stdout)
    assert [(r["key_id"], r["team"], r["status"]) for r in rows] == [(key_id, "support", "active")]
    assert text not in listed.stdout
    rotated = run("rotate", key_id)
    assert rotated.returncode == 0 and rotated.stdout.strip() != text and rotated.stdout.startswith(key_id + "-")
    assert run("revoke", key_id).returncode == 0
    assert json.loads(run("list", "--format", "json").stdout)[0]["status"] == "revoked"
    bad = run("revoke", "lsk-nothere")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: no wrapped key")
    bad = run("create", "--team", "t", "--provider-key-env", "K", "--expires", "soon")
    assert bad.returncode == 1 and "expected a duration" in bad.stderr


def test_keys_commands_on_redis(data_dir, redis_server):
    command = [sys.executable, str(ROOT / "cli.py"), "keys", "create", "--team", "t", "--provider-key-env", "K"]
    env = subprocess_env(LLM_SHADOW_STATE=redis_server.url)
    created = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    registry = KeyRegistry(RedisKeys(RedisBackend(redis_server.url).link))
    assert registry.resolve(created.stdout.strip()).status == "active"
    assert not (data_dir / "keys.json").exists()
    redis_server.stop()
    down = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert down.returncode == 1 and down.stderr.startswith("Error: Redis:") and "Traceback" not in down.stderr
