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


# --- 3. how a call ended: refused, timed out, abandoned -------------------------------------------


def test_a_refused_upstream_gets_502_and_a_connect_error_row(start_proxy, data_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    proxy = start_proxy("--upstream", f"http://127.0.0.1:{closed_port}@0")
    r = chat(proxy, json=CHAT)
    assert r.status_code == 502
    [row] = records(data_dir, 1)
    assert (row["outcome"], row["status"]) == ("connect_error", None)
    assert row["error"]


def test_an_idle_upstream_is_recorded_as_timeout(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0", "--timeout", "2")
    with pytest.raises(httpx.HTTPError):
        chat(proxy, headers={"x-hostile": "hang"}, json=CHAT)
    [row] = records(data_dir, 1)
    assert row["outcome"] == "timeout", row


def test_an_aborted_upload_is_recorded_as_client_disconnected(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"model": '
        )
        time.sleep(0.5)
    [row] = records(data_dir, 1)
    assert row["outcome"] == "client_disconnected", row


# --- 4. secrets are never stored or printed -------------------------------------------------------

OPENAI_SHAPED = "sk-proj-" + "A1b2C3d4E5" * 5
GOOGLE_SHAPED = "AIza" + "Sy0123456789abcdefghijklmnopqrstuvw"


def test_credentials_in_bodies_and_error_messages_are_not_stored(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    body = {
        **CHAT,
        "api_key": "hunter2-not-key-shaped",
        "metadata": {"client_secret": "also-secret"},
        "messages": [{"role": "user", "content": f"my key is {OPENAI_SHAPED}, and {GOOGLE_SHAPED}"}],
    }
    assert chat(proxy, json=body, headers={"x-shadow-team": "body"}).status_code == 200
    r = chat(proxy, json=CHAT, headers={"x-hostile": "echo-key", "x-shadow-team": "echo"})
    assert r.status_code == 401 and API_KEY in r.text  # the client gets the upstream's bytes
    rows = {row["team"]: row for row in records(data_dir, 2)}
    assert "Incorrect API key" in rows["echo"]["error"]
    stored = json.dumps(rows, default=str) + json.dumps(Store(data_dir).contents_frame().to_dicts(), default=str)
    for secret in (API_KEY, OPENAI_SHAPED, GOOGLE_SHAPED, "hunter2-not-key-shaped", "also-secret"):
        assert secret not in stored
    assert "[redacted]" in stored


def test_verbose_prints_one_line_per_call_and_never_a_key(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0", "-v")
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.0-flash:generateContent?key={GOOGLE_SHAPED}",
        json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        timeout=30,
    )
    assert r.status_code == 200
    records(data_dir, 1)
    lines = [line for line in proxy.output if "generateContent" in line]
    assert len(lines) == 1, proxy.output
    assert "200" in lines[0]
    assert GOOGLE_SHAPED not in "".join(proxy.output)


# --- 7. `llm-shadow sql` reads, and writes only when asked ----------------------------------------


def run_cli(*args: str):
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT * FROM requests) TO '{data}/records/x-L0-000000000000-000000000000.parquet'",
        "COPY (SELECT 1) TO '{tmp}/out.csv'",
        "ATTACH '{tmp}/other.duckdb'",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW requests",
        "INSTALL httpfs",
        "SELECT 1; DROP VIEW requests",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SET enable_external_access = true",
        "",
    ],
)
def test_sql_is_read_only_by_default(statement, tmp_path, data_dir):
    Store(data_dir)
    before = sorted(p.name for p in data_dir.rglob("*"))
    result = run_cli("sql", statement.format(data=data_dir, tmp=tmp_path), "--data", str(data_dir))
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error:")
    assert sorted(p.name for p in data_dir.rglob("*")) == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_sql_reads_and_exports_with_allow_write(tmp_path, data_dir):
    Store(data_dir)
    result = run_cli("sql", "SELECT count(*) AS n FROM requests", "--data", str(data_dir), "--format", "csv")
    assert (result.exit_code, result.stdout) == (0, "n\n0\n")
    out = tmp_path / "export.csv"
    result = run_cli("sql", f"COPY (SELECT 1 AS one) TO '{out}'", "--data", str(data_dir), "--allow-write")
    assert result.exit_code == 0, result.output
    assert out.read_text().strip() == "one\n1"
