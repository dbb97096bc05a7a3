"""prompt_hash: equal requests hash the same, answer-changing ones do not."""

import hashlib
import json

from analysis.parsers import parse
from analysis.parsers.exchange import Exchange
from analysis.parsers.hashing import canonical_request, prompt_hash

REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Réponds en français."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
}


def chat_hash(body: bytes) -> str:
    exchange = Exchange(
        provider="openai",
        endpoint="chat",
        wire_format="openai_chat",
        method="POST",
        host="api.openai.com",
        path="/v1/chat/completions",
        request_body=body,
        status=200,
        response_chunks=[(0.1, b'{"choices": []}')],
    )
    return prompt_hash(parse(exchange).canonical_request)


def test_key_order_and_whitespace_do_not_change_the_hash():
    compact = json.dumps(REQUEST, separators=(",", ":"), ensure_ascii=False).encode()
    reordered = {k: REQUEST[k] for k in reversed(list(REQUEST))}
    reordered["messages"] = [dict(reversed(list(m.items()))) for m in REQUEST["messages"]]
    spaced = json.dumps(reordered, indent=4, ensure_ascii=True).encode()
    assert chat_hash(compact) == chat_hash(spaced)


def test_user_stream_and_metadata_do_not_change_the_hash():
    plain = chat_hash(json.dumps(REQUEST).encode())
    decorated = dict(
        REQUEST,
        user="alice",
        stream=True,
        stream_options={"include_usage": True},
        metadata={"team": "search"},
        store=True,
        service_tier="flex",
    )
    assert chat_hash(json.dumps(decorated).encode()) == plain


def test_answer_changing_fields_change_the_hash():
    plain = chat_hash(json.dumps(REQUEST).encode())
    for change in (
        {"temperature": 0.3},
        {"model": "gpt-4o"},
        {"seed": 1},
        {"max_tokens": 10},
        {"tool_choice": "none"},
        {"messages": REQUEST["messages"][1:]},
    ):
        assert chat_hash(json.dumps(dict(REQUEST, **change)).encode()) != plain, change


def test_hash_shape():
    value = prompt_hash(canonical_request(REQUEST))
    assert len(value) == 32 and int(value, 16) >= 0


def test_model_from_elsewhere_fills_in_only_when_the_body_has_none():
    assert canonical_request({"contents": []}, model="gemini-2.5-flash")["model"] == "gemini-2.5-flash"
    assert canonical_request({"model": "a"}, model="b")["model"] == "a"


def test_the_hash_is_hashlibs_sha256_of_the_canonical_json():
    # prompt_hash takes CPython's builtin sha256 (_sha2) where there is one: its digests are
    # hashlib's (OpenSSL's), for short and multi-block texts, non-ASCII and lone surrogates alike.
    canonicals = [
        canonical_request(REQUEST),
        {"model": "m", "messages": [{"role": "user", "content": "\ud800 lone surrogate, \u00e9t\u00e9, \u4f60\u597d"}]},
        {"model": "m", "prompt": "x" * 1000, "temperature": 0.7},
        {},
    ]
    for canonical in canonicals:
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        assert prompt_hash(canonical) == expected
