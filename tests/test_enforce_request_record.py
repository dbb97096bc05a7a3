"""Enforce mode reads a request before it is sent (analysis.enforce.request_record) into the
columns its `requests` row will have: on every recorded exchange, they equal the recorder's row
for the same call, with the headers an SDK sends around the API key and the attribution
headers (named in any case), a key in the query string, a wrapped key's identity, and a
gzip-encoded request body. Of the headers, the record reads only the key, the attribution
headers and the content-encoding (capture.read_head with all_headers False)."""

import gzip
from pathlib import Path

import pytest

from analysis.enforce.request_record import ParseFailure, request_record
from analysis.parsers.detect import detect
from analysis.parsers.exchange import Exchange
from analysis.pricing.check import Pricing
from analysis.recording.capture import Capture, Identity
from analysis.recording.settings import RecorderSettings
from analysis.simulate.cacheability import exclusion_reason, may_store
from analysis.simulate.policy import CacheRules
from tests.cassettes import cassette_files, cassette_id, recorded_exchanges
from tests.enforce_support import decided_record, recorded_row

SALT = "request-record"

# The request-side columns of `requests` that a record carries.
COLUMNS = (
    "provider",
    "endpoint",
    "host",
    "path",
    "method",
    "stream",
    "model_requested",
    "key_id",
    "team",
    "feature",
    "user",
    "prompt_hash",
    "temperature",
    "n",
    "has_tools",
    "has_images",
    "service_tier",
    "batch",
)

# What the OpenAI Python SDK sends besides the body's headers, as mitmproxy holds them.
SDK_HEADERS = (
    (b"Accept-Encoding", b"gzip, deflate"),
    (b"Connection", b"keep-alive"),
    (b"Accept", b"application/json"),
    (b"User-Agent", b"OpenAI/Python 1.54.0"),
    (b"X-Stainless-Lang", b"python"),
    (b"X-Stainless-Package-Version", b"1.54.0"),
    (b"X-Stainless-Retry-Count", b"0"),
    (b"Cookie", b"session=abc"),
)


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing.load(None)


def _variants(exchange: Exchange) -> list[tuple[str, tuple[tuple[bytes, bytes], ...], str, Identity | None]]:
    """(name, header fields, query string, identity): the exchange's own headers, and around them
    an SDK's, a key and attribution headers in other cases, a key in the query, a wrapped key."""
    own = tuple((name.encode(), value.encode()) for name, value in exchange.request_headers.items())
    query = "&".join(f"{name}={value}" for name, value in exchange.query.items())
    attributed = (
        *SDK_HEADERS,
        *own,
        (b"Authorization", b"Bearer sk-proj-record"),
        (b"X-Shadow-Team", b"search"),
        (b"x-shadow-feature", b"answers"),
        (b"X-SHADOW-USER", b"u-7"),
    )
    in_query = "&".join(part for part in (query, "key=AIza-record") if part)
    wrapped = Identity(key_id="wk_record", team="wrapped-team", user="wrapped-user")
    return [
        ("own headers", own, query, None),
        ("SDK headers, key, attribution", attributed, query, None),
        ("key in the query", (*SDK_HEADERS, *own), in_query, None),
        ("wrapped key", attributed, query, wrapped),
    ]


def _assert_record_is_row(capture: Capture, pricing: Pricing, settings: RecorderSettings, where: str) -> None:
    try:
        record, _ = decided_record(capture, SALT, settings)
    except ParseFailure:
        return  # a request enforce mode cannot read passes undecided
    row = recorded_row(capture, pricing, SALT, settings)
    assert {c: record[c] for c in COLUMNS} == {c: row[c] for c in COLUMNS}, where
    assert record["ts"] == row["ts"], where


@pytest.mark.parametrize("path", cassette_files(), ids=cassette_id)
def test_a_request_is_read_as_its_row_records_it(path: Path, pricing: Pricing, tmp_path: Path):
    settings = RecorderSettings(data=tmp_path)
    for recorded in recorded_exchanges(path):
        exchange = recorded.exchange
        target = detect(exchange.host, exchange.path, exchange.request_headers, exchange.method)
        assert target is not None
        for name, fields, query, identity in _variants(exchange):
            capture = Capture(
                target=target,
                method=exchange.method,
                host=exchange.host,
                path=exchange.path + (f"?{query}" if query else ""),
                request_headers=fields,
                request_body=exchange.request_body,
                status=None,
                response_headers=(),
                chunks=[],
                started=exchange.started_at,
                ended=exchange.started_at,
                outcome="ok",
                id="recorded",
                identity=identity,
            )
            where = f"{cassette_id(path)} #{recorded.position} ({name})"
            _assert_record_is_row(capture, pricing, settings, where)
            if exchange.request_body and "content-encoding" not in exchange.request_headers:
                capture.request_headers = (*fields, (b"Content-Encoding", b"gzip"))
                capture.request_body = gzip.compress(exchange.request_body)
                _assert_record_is_row(capture, pricing, settings, f"{where}, gzip-encoded body")


def test_a_record_reads_the_key_and_the_attribution_headers(pricing: Pricing, tmp_path: Path):
    """The comparison above compares what matters: a record of a call with a key and
    attribution headers has them (so equal rows are not equal by being empty)."""
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    fields = (*SDK_HEADERS, (b"Authorization", b"Bearer sk-proj-record"), (b"X-Shadow-Team", b"search"))
    target = detect("api.openai.com", "/v1/chat/completions", {}, "POST")
    assert target is not None

    def read(fields):
        return request_record(
            "r",
            target,
            "POST",
            "api.openai.com",
            "/v1/chat/completions",
            fields,
            gzip.compress(body),
            1_790_000_000.0,
            salt=SALT,
            settings=RecorderSettings(data=tmp_path),
        )

    record, side = read(fields)
    assert record["model_requested"] is None, "a gzip body without its content-encoding is not read as JSON"
    record, side = read((*fields, (b"content-encoding", b"gzip")))
    assert record["key_id"] is not None and record["key_id"].startswith("key_")
    assert (record["team"], record["model_requested"], record["prompt_text"]) == ("search", "gpt-4o-mini", "user: hi")
    assert side is not None


# Cache rules of a policy's caches: each relaxes what the one before excludes.
CACHE_RULES = (
    (CacheRules(),),
    (CacheRules(allow_unset_temperature=True),),
    (CacheRules(), CacheRules(allow_sampling=True, allow_tools=True)),
    (CacheRules(allow_tools=True, allow_streaming=True),),
)


def _read(exchange: Exchange, settings: RecorderSettings, caches: tuple[CacheRules, ...] | None) -> dict:
    target = detect(exchange.host, exchange.path, exchange.request_headers, exchange.method)
    assert target is not None
    fields = tuple((name.encode(), value.encode()) for name, value in exchange.request_headers.items())
    record, _ = request_record(
        "r",
        target,
        exchange.method,
        exchange.host,
        exchange.path,
        fields,
        exchange.request_body,
        exchange.started_at,
        salt=SALT,
        settings=settings,
        caches=caches,
    )
    return record


def test_a_prompt_no_cache_can_use_is_not_hashed_and_decides_the_same(tmp_path: Path):
    """Given the caches' rules, a record carries the prompt hash only when a cache may answer
    or store the request; every cache still finds the same reason to exclude it (or none), and
    one that may use the hash gets the recorder's."""
    settings = RecorderSettings(data=tmp_path)
    skipped = kept = 0
    for path in cassette_files():
        for recorded in recorded_exchanges(path):
            where = f"{cassette_id(path)} #{recorded.position}"
            try:
                full = _read(recorded.exchange, settings, None)
            except ParseFailure:
                continue
            for caches in CACHE_RULES:
                record = _read(recorded.exchange, settings, caches)
                reasons = [exclusion_reason(record, rules) for rules in caches]
                assert reasons == [exclusion_reason(full, rules) for rules in caches], where
                if any(may_store(reason) for reason in reasons):
                    assert record["prompt_hash"] == full["prompt_hash"] is not None, where
                    kept += 1
                else:
                    assert record["prompt_hash"] is None and full["prompt_hash"] is not None, where
                    skipped += 1
                assert {**record, "prompt_hash": None} == {**full, "prompt_hash": None}, where
    assert skipped > 100 and kept > 100, (skipped, kept)  # both cases are exercised
