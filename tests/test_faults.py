"""The fault suite: the real `llm-shadow proxy` against a hostile upstream (tests/hostile_upstream.py).

Pass-through already holds under all of these (other tests show it); what is checked here is the
record: one bad byte, one huge event or one gzip bomb must never cost us a row, stall the rows
behind it, or take a process's memory beyond a bound.
"""

import json
import socket
import time

import httpx
import pytest

from analysis.store.datadir import Store
from tests.hostile_upstream import HostileProvider
from tests.test_proxy_openai import API_KEY, MESSAGES, records

CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.fixture
def hostile():
    with HostileProvider() as p:
        yield p


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send one HTTP/1.1 request as raw bytes (for what httpx refuses to send); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        answer = b""
        while data := s.recv(65536):
            answer += data
    return answer


def chat(proxy, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
    return httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, timeout=60, **kwargs)


def status_of(data_dir) -> dict:
    files = list((data_dir / "status").glob("*.json"))
    return json.loads(files[0].read_text()) if files else {}


# --- 1. one bad string never stops recording ---------------------------------------------------


def test_bad_bytes_and_lone_surrogates_are_recorded_with_replacement(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    # A non-UTF-8 byte in an attribution header.
    assert chat(proxy, headers={"x-shadow-team": b"caf\xe9"}, json=CHAT).status_code == 200
    # ... in the URL path (httpx will not send that: raw bytes).
    body = json.dumps(CHAT).encode()
    answer = raw_request(
        proxy.port,
        b"POST /v1/caf\xe9/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
        body,
    )
    assert answer.startswith(b"HTTP/1.1 200")
    answer = raw_request(
        proxy.port,
        b"POST /v1/chat/completions?q=\xff HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-shadow-feature: f\xc3\r\n",
        body,
    )
    assert answer.startswith(b"HTTP/1.1 200")
    # A lone surrogate in a body field and in message text (valid JSON, invalid Unicode).
    surrogates = (
        b'{"model": "gpt-4o-mini", "user": "u\\ud800", "messages": [{"role": "user", "content": "hi \\udfff"}]}'
    )
    assert chat(proxy, content=surrogates, headers={"content-type": "application/json"}).status_code == 200
    # A call after them is recorded, and so are they.
    assert chat(proxy, headers={"x-shadow-team": "after"}, json=CHAT).status_code == 200
    rows = records(data_dir, 5)
    by_team = {r["team"]: r for r in rows}
    assert "after" in by_team
    assert by_team["caf\ufffd"]["outcome"] == "ok"
    assert any(r["feature"] == "f\ufffd" for r in rows)
    assert any(r["path"] == "/v1/caf\ufffd/chat/completions" for r in rows)
    surrogate_row = next(r for r in rows if r["user"] == "u\ufffd")
    assert surrogate_row["input_tokens"] and surrogate_row["prompt_hash"]
    [content] = [c for c in Store(data_dir).contents_frame().to_dicts() if c["id"] == surrogate_row["id"]]
    assert "hi \ufffd" in content["prompt_text"]
    assert not status_of(data_dir).get("problems"), status_of(data_dir)


def test_attribution_values_are_length_capped(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    assert chat(proxy, headers={"x-shadow-team": "t" * 50_000}, json=CHAT).status_code == 200
    [row] = records(data_dir, 1)
    assert 0 < len(row["team"]) <= 256


def test_a_row_that_cannot_be_written_is_quarantined_and_blocks_nothing(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    # A usage figure no BIGINT holds: the row cannot become Parquet, whatever we clean.
    huge = json.dumps({"prompt_tokens": 10**30, "total_tokens": 10**30})
    assert chat(proxy, headers={"x-fake-usage": huge, "x-shadow-team": "huge"}, json=CHAT).status_code == 200
    assert chat(proxy, headers={"x-shadow-team": "after"}, json=CHAT).status_code == 200
    [row] = records(data_dir, 1)
    assert row["team"] == "after"
    [quarantined] = [json.loads(line) for f in (data_dir / "quarantine").glob("*.jsonl") for line in f.open()]
    assert quarantined["row"]["team"] == "huge" and quarantined["reason"]
    problems = status_of(data_dir).get("problems", {})
    assert problems.get("row_quarantined") == 1, problems
    assert not any(k.startswith("store_write_failed") for k in problems), problems


# --- 2. a huge event or a gzip bomb: linear time, bounded memory ---------------------------------


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of a process so far (VmHWM), in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def seconds_until_recorded(proxy, data_dir, n: int, team: str) -> float:
    """Make one ordinary call; seconds from its answer until its row is in the store."""
    assert chat(proxy, headers={"x-shadow-team": team}, json=CHAT).status_code == 200
    answered = time.monotonic()
    rows = records(data_dir, n, timeout=60)
    assert rows[-1]["team"] == team
    return time.monotonic() - answered


def test_a_huge_event_and_a_gzip_bomb_delay_no_row_and_memory_stays_bounded(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    baseline = seconds_until_recorded(proxy, data_dir, 1, "warm-up")  # an ordinary call, for comparison
    worker = status_of(data_dir)["pid"]
    rss_before = {"proxy": peak_rss_mb(proxy.process.pid), "worker": peak_rss_mb(worker)}
    # One 8 MB stream event, sent in 16 KB writes.
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        headers={"x-hostile": f"big-event:{8 * 1024 * 1024}", "x-shadow-team": "big-event"},
        json={**CHAT, "stream": True},
        timeout=60,
    ) as r:
        assert r.status_code == 200 and sum(len(c) for c in r.iter_raw()) > 8 * 1024 * 1024
    after_event = seconds_until_recorded(proxy, data_dir, 3, "after-event")
    # A gzip bomb: 300 MB of JSON in about 300 KB on the wire.
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        headers={"x-hostile": f"bomb:{300 * 1024 * 1024}", "x-shadow-team": "bomb"},
        json=CHAT,
        timeout=60,
    ) as r:
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        wire = sum(len(c) for c in r.iter_raw())
    after_bomb = seconds_until_recorded(proxy, data_dir, 5, "after-bomb")

    assert status_of(data_dir)["pid"] == worker
    rss = {"proxy": peak_rss_mb(proxy.process.pid), "worker": peak_rss_mb(worker)}
    print(
        f"\nnext row recorded {after_event:.2f} s after an 8 MB event, {after_bomb:.2f} s after a bomb, "
        f"{baseline:.2f} s after an ordinary call"
    )
    print(f"gzip bomb: {wire:,} bytes on the wire; peak RSS MB before {rss_before}, after {rss}")
    rows = {r["team"]: r for r in Store(data_dir).requests_frame().to_dicts()}
    big = rows["big-event"]
    assert (big["outcome"], big["usage_source"], big["output_tokens"]) == ("ok", "provider", 11)
    assert "1 stream event over" in big["error"]
    bomb = rows["bomb"]
    assert "response body over" in bomb["error"] and bomb["status"] == 200
    problems = status_of(data_dir)["problems"]
    assert problems.get("sse_event_too_large") == 1 and problems.get("body_too_large") == 1, problems
    assert all(mb < 500 for mb in rss.values()), rss
