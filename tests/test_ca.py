"""The interception CA: created ahead of time with a private key, found in trust stores."""

import stat

from typer.testing import CliRunner

from addons.ca import ensure_ca
from analysis.capture_setup.ca import (
    CaFiles,
    bundle_contains,
    default_confdir,
    load_cert,
    loose_key_files,
    trusting_sources,
    write_bundle,
)
from cli import app
from tests.certs import TestCA


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_created_with_owner_only_key_and_directory(tmp_path):
    confdir = tmp_path / "conf"
    files, tightened = ensure_ca(confdir)
    assert files.exists() and tightened == []
    assert mode(confdir) == 0o700
    for key_file in files.key_files:
        assert mode(key_file) == 0o600, key_file
    assert b"PRIVATE KEY" in files.key_files[0].read_bytes()
    assert b"PRIVATE KEY" not in files.cert.read_bytes()
    # A second call keeps the same CA.
    again, _ = ensure_ca(confdir)
    assert load_cert(again.cert) == load_cert(files.cert)


def test_loose_key_files_are_tightened(tmp_path):
    files, _ = ensure_ca(tmp_path / "conf")
    files.key_files[0].chmod(0o644)
    assert loose_key_files(files) == [(files.key_files[0], 0o644)]
    _, tightened = ensure_ca(tmp_path / "conf")
    assert tightened == [files.key_files[0]]
    assert mode(files.key_files[0]) == 0o600 and loose_key_files(files) == []


def test_confdir_default_and_env():
    assert default_confdir({}).name == ".mitmproxy"
    assert str(default_confdir({"LLM_SHADOW_CONFDIR": "/srv/shadow-ca"})) == "/srv/shadow-ca"


def test_bundle_holds_system_cas_and_ours(tmp_path):
    files, _ = ensure_ca(tmp_path / "conf")
    other = TestCA("some public CA")
    base = tmp_path / "system.pem"
    base.write_bytes(other.pem)
    bundle = tmp_path / "out" / "bundle.pem"
    write_bundle(bundle, files.cert, base)
    ours = load_cert(files.cert)
    assert bundle_contains(bundle, ours)
    assert bundle_contains(bundle, other.cert)
    assert not bundle_contains(base, ours)
    assert not bundle_contains(tmp_path / "missing.pem", ours)


def test_trust_sources_follow_the_environment(tmp_path):
    files, _ = ensure_ca(tmp_path / "conf")
    ours = load_cert(files.cert)
    bundle = tmp_path / "bundle.pem"
    write_bundle(bundle, files.cert, None)
    env = {"SSL_CERT_FILE": str(bundle), "NODE_EXTRA_CA_CERTS": str(files.cert)}
    found = {source.client: (source.source, ok) for source, ok in trusting_sources(ours, env)}
    assert found["Python httpx (openai, anthropic, google-genai SDKs)"] == ("SSL_CERT_FILE", True)
    assert found["Node.js"] == ("NODE_EXTRA_CA_CERTS", True)
    assert found["Python requests"] == ("certifi", False)
    assert found["curl, Go, most other programs"][1] is False


def test_ca_command_prints_paths_trust_commands_and_key_warning(tmp_path):
    confdir = tmp_path / "conf"
    bundle = tmp_path / "bundle.pem"
    result = CliRunner().invoke(app, ["ca", "--confdir", str(confdir), "--bundle", str(bundle)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    files = CaFiles(confdir)
    assert str(files.cert) in result.output
    assert f"SSL_CERT_FILE={bundle}" in result.output
    assert f"NODE_EXTRA_CA_CERTS={files.cert}" in result.output
    assert "update-ca-certificates" in result.output
    assert "never commit it" in result.output and str(files.key_files[0]) in result.output
    assert bundle_contains(bundle, load_cert(files.cert))


def test_ca_command_unwritable_confdir_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["ca", "--confdir", str(blocker / "conf")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
