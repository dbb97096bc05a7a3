"""Token estimation: offline, from the bundled encodings, with the right encoding per model."""

import os
import subprocess
import sys
import textwrap

import pytest

from analysis.parsers import tokens
from tests.conftest import subprocess_env


def test_tiktoken_cache_dir_is_unset_in_tests():
    assert "TIKTOKEN_CACHE_DIR" not in os.environ


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5-2025-08-07", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("openai/gpt-oss-120b", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", "cl100k_base"),
        ("gemini-2.5-flash", "cl100k_base"),
        (None, "cl100k_base"),
    ],
)
def test_encoding_for_model(model, encoding):
    assert tokens.encoding_name_for_model(model) == encoding


def test_exact_counts():
    # "tiktoken is great!" is 6 tokens in both encodings (tiktoken's README example).
    assert tokens.count_tokens("tiktoken is great!", "gpt-4") == 6
    assert tokens.count_tokens("tiktoken is great!", "gpt-4o") == 6
    # Japanese text splits differently: 8 cl100k tokens, 6 o200k tokens.
    assert tokens.count_tokens("日本語のテキスト", "claude-3-haiku") == 8
    assert tokens.count_tokens("日本語のテキスト", "gpt-4o") == 6
    assert tokens.count_tokens("", "gpt-4o") == 0


def test_special_token_text_is_counted_as_plain_text():
    assert tokens.count_tokens("<|endoftext|>", "gpt-4o") > 1


def test_user_cache_dir_without_the_files_falls_back_to_the_bundled_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokens.get_encoding.cache_clear()
    try:
        assert tokens.count_tokens("tiktoken is great!", "gpt-4") == 6
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)  # restored
        assert list(tmp_path.iterdir()) == []  # nothing written to the user's folder
    finally:
        tokens.get_encoding.cache_clear()


def test_counting_needs_no_network(tmp_path):
    """A fresh interpreter whose sockets all fail, with an empty temp dir (where tiktoken keeps
    its default cache), still loads both encodings."""
    script = textwrap.dedent(
        """
        import socket

        class NoNetwork(socket.socket):
            def connect(self, *args):
                raise OSError("network used")

        socket.socket = NoNetwork
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network used"))
        from analysis.parsers import tokens
        print(tokens.count_tokens("tiktoken is great!", "gpt-4"),
              tokens.count_tokens("日本語のテキスト", "gpt-4o"))
        """
    )
    env = subprocess_env()
    env.pop("TIKTOKEN_CACHE_DIR", None)
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6", "6"]


def test_bundled_files_are_the_ones_tiktoken_expects():
    import hashlib

    expected = {
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    }
    for name, file_name in tokens.CACHE_FILE_NAMES.items():
        data = (tokens.BUNDLED_CACHE_DIR / file_name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected[name]
    assert (tokens.BUNDLED_CACHE_DIR / "SOURCE.txt").is_file()
