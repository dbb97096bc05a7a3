"""The fault suite: the real `llm-shadow proxy` against a hostile upstream (tests/hostile_upstream.py).

Pass-through already holds under all of these (other tests show it); what is checked here is the
record: one bad byte, one huge event or one gzip bomb must never cost us a row, stall the rows
behind it, or take a process's memory beyond a bound.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from analysis.recording.status import stale_after
from analysis.store.datadir import Store
from tests.conftest import ROOT, subprocess_env, wait_for
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
    problems = wait_for(lambda: (p := status_of(data_dir).get("problems", {})) and p.get("row_quarantined") and p)
    assert problems and problems.get("row_quarantined") == 1, status_of(data_dir)
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
    worker = status_of(data_dir)["worker_pid"]
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

    assert status_of(data_dir)["worker_pid"] == worker
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
    problems = wait_for(lambda: (p := status_of(data_dir)["problems"]).get("body_too_large") and p)
    assert problems and problems.get("sse_event_too_large") == 1 and problems.get("body_too_large") == 1, problems
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


# --- 6. every loss is told: the proxy process owns the status file ---------------------------------


def status_age(data_dir) -> float:
    """Seconds since the proxy last rewrote its status file."""
    return time.time() - status_of(data_dir)["updated"]


def stats_warnings(data_dir) -> str:
    result = run_cli("stats", "--data", str(data_dir))
    assert result.exit_code == 0, result.output
    return result.stderr


def test_a_killed_worker_is_counted_replaced_and_its_counts_kept(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    assert chat(proxy, json=CHAT).status_code == 200
    records(data_dir, 1)
    first = wait_for(lambda: (s := status_of(data_dir)) and s["recorded"] == 1 and s)
    os.kill(first["worker_pid"], signal.SIGKILL)
    # The proxy sees it at once, without waiting for a call, and starts a new worker.
    replaced = wait_for(lambda: (s := status_of(data_dir)) and s["worker_pid"] != first["worker_pid"] and s)
    assert replaced["problems"].get("worker_died") == 1, replaced
    assert chat(proxy, json=CHAT).status_code == 200
    records(data_dir, 2)
    # The new worker's counts add to the dead one's.
    assert wait_for(lambda: status_of(data_dir)["recorded"] == 2), status_of(data_dir)
    assert "worker_died=1" in stats_warnings(data_dir)
    assert proxy.stop() == 0
    final = status_of(data_dir)
    assert final["stopped"] and final["recorded"] == 2, final
    assert any("stopping: flushing" in line for line in proxy.output), proxy.output


def test_calls_dropped_on_a_full_queue_are_in_the_status_file(hostile, start_mitmdump, data_dir):
    proxy = start_mitmdump(
        "-s",
        str(ROOT / "addons" / "recorder.py"),
        "--mode",
        f"reverse:{hostile.url}@0",
        "--set",
        f"shadow_data={data_dir}",
        "--set",
        "shadow_flush_interval=0.2",
        "--set",
        "shadow_queue_limit=1",
    )
    worker = wait_for(lambda: status_of(data_dir).get("worker_pid"))
    os.kill(worker, signal.SIGSTOP)  # a worker that cannot keep up
    try:
        for _ in range(3):
            assert chat(proxy, json=CHAT).status_code == 200
        # Written by the proxy process while its worker is stopped.
        status = wait_for(lambda: (s := status_of(data_dir)) and s["problems"].get("queue_full") == 2 and s)
        assert status, status_of(data_dir)
    finally:
        os.kill(worker, signal.SIGCONT)
    records(data_dir, 1)
    assert "queue_full=2" in stats_warnings(data_dir)


def test_an_unwritable_status_file_is_said_once_and_stats_calls_it_late(hostile, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{hostile.url}@0")
    assert chat(proxy, json=CHAT).status_code == 200
    records(data_dir, 1)
    [path] = (data_dir / "status").glob("*.json")
    # The temporary file's name taken by a directory: every rewrite fails, even for root.
    blocker = path.with_name(f".{path.name}.tmp")
    blocker.mkdir()
    assert wait_for(lambda: status_age(data_dir) > stale_after(0.2) + 0.5, timeout=20)
    late = stats_warnings(data_dir)
    assert "not updated for" in late and path.stem in late, late
    failures = [line for line in proxy.output if "cannot write the status file" in line]
    assert len(failures) == 1, proxy.output
    assert chat(proxy, json=CHAT).status_code == 200  # calls go on, and are recorded
    records(data_dir, 2)
    blocker.rmdir()
    counted = wait_for(lambda: status_of(data_dir)["problems"].get("status_write_failed:EISDIR", 0) > 1)
    assert counted, status_of(data_dir)
    assert "not updated for" not in stats_warnings(data_dir)


def test_a_full_disk_is_told_even_when_the_status_file_cannot_be_written(hostile, tmp_path):
    """The data directory on a 1 MB tmpfs of the proxy's own (a mount namespace), filled up."""
    from tests.conftest import RunningProxy, llm_shadow_proxy_command

    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    inside = tmp_path / "data"
    inside.mkdir()
    mount = 'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"'
    command = llm_shadow_proxy_command(["--upstream", f"{hostile.url}@0"], inside)
    proxy = RunningProxy(["unshare", "-m", "sh", "-c", mount, "sh", str(inside), *command])
    try:
        data_dir = Path(f"/proc/{proxy.process.pid}/root") / inside.relative_to("/")  # the tmpfs, seen from here
        assert chat(proxy, json=CHAT).status_code == 200
        records(data_dir, 1)
        with open(data_dir / "filler", "wb") as filler:  # the disk fills up
            with pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
        assert chat(proxy, headers={"x-shadow-team": "while-full"}, json=CHAT).status_code == 200
        assert wait_for(lambda: status_age(data_dir) > stale_after(0.2) + 0.5, timeout=20)
        assert "not updated for" in stats_warnings(data_dir)
        said = [line for line in proxy.output if "cannot write the status file" in line]
        assert len(said) == 1 and "No space left on device" in said[0], proxy.output
        (data_dir / "filler").unlink()  # space again: the spooled call is written, the status says what happened
        rows = records(data_dir, 2)
        assert rows[-1]["team"] == "while-full"
        problems = wait_for(lambda: (p := status_of(data_dir)["problems"]).get("status_write_failed:ENOSPC") and p)
        assert problems and problems.get("store_write_failed") and "row_quarantined" not in problems, problems
    finally:
        proxy.stop()


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


# --- 7b. what the data says is printed, never obeyed ----------------------------------------------

EVIL = "\x1b]0;pwned\x07[bold red]x[/]:AB:\u202eevil"


def test_stored_values_cannot_drive_the_terminal_and_csv_json_stay_faithful(data_dir):
    from datetime import UTC, datetime

    from analysis.store.datadir import SegmentWriter

    row = {"id": "0" * 22, "ts": datetime.now(UTC), "team": EVIL, "model": "gpt-4o-mini", "outcome": "ok"}
    SegmentWriter(Store(data_dir)).write([row], [])
    for command in (["stats", "--by", "team"], ["sql", "SELECT team FROM requests"]):
        table = run_cli(*command, "--data", str(data_dir))
        assert table.exit_code == 0, table.output
        assert "\x1b" not in table.stdout and "\u202e" not in table.stdout and "\x07" not in table.stdout
        assert "\\x1b]0;pwned\\x07[bold red]x[/]:AB:\\u202eevil" in table.stdout, table.stdout
    csv_out = run_cli("stats", "--by", "team", "--format", "csv", "--data", str(data_dir)).stdout
    assert EVIL in csv_out
    [json_row] = json.loads(
        run_cli("sql", "SELECT team FROM requests", "--format", "json", "--data", str(data_dir)).stdout
    )
    assert json_row["team"] == EVIL


def test_decision_rows_are_cleaned_like_requests_rows(data_dir):
    from datetime import UTC, datetime

    from analysis.parsers.detect import detect
    from analysis.pricing.check import Pricing
    from analysis.recording.capture import Capture
    from analysis.recording.settings import RecorderSettings
    from analysis.recording.sink import RecordSink

    store = Store(data_dir)
    settings = RecorderSettings(data=data_dir, flush_interval=0.05)
    sink = RecordSink(store, Pricing.load(data_dir), settings).start()
    decision = {
        "id": "1" * 22,
        "ts": datetime.now(UTC),
        "mode": "shadow",
        "policy": "rule\ud800",
        "kind": "exact_cache",
        "action": "miss",
        "reason": "r" * 100_000,
    }
    now = time.time()
    sink.submit(
        Capture(
            target=detect("api.openai.com", "/v1/chat/completions", {}, "POST"),
            method="POST",
            host="api.openai.com",
            path="/v1/chat/completions",
            request_headers=(),
            request_body=json.dumps(CHAT).encode(),
            status=200,
            response_headers=(),
            chunks=[],
            started=now,
            ended=now,
            outcome="ok",
            id="1" * 22,
            decisions=(decision,),
        )
    )
    sink.close()
    [row] = store.decisions_frame().to_dicts()
    assert row["policy"] == "rule\ufffd" and len(row["reason"]) == 1024
    assert store.requests_frame().height == 1
    assert not sink.problems.counts, sink.problems.counts


# --- 9. read-only analysts; data readable by its owner only ---------------------------------------


def write_calls(data_dir, n: int = 12) -> None:
    from analysis.store.datadir import SegmentWriter
    from tests.simulate_helpers import DEFAULTS, at

    rows = [{**DEFAULTS, "id": f"r{i:02d}", "ts": at(60 * i), "prompt_hash": f"p{i % 3}"} for i in range(n)]
    said = [{"id": r["id"], "ts": r["ts"], "prompt_text": f"user: question {i % 4}"} for i, r in enumerate(rows)]
    SegmentWriter(Store(data_dir)).write(rows, said)


def read_only_run(data_dir, *args: str, cwd) -> subprocess.CompletedProcess:
    """`llm-shadow ARGS` with the data directory mounted read-only (its own mount namespace):
    what an analyst on a read-only mount, or without write permission, gets (root included)."""
    mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", mount, "sh", str(data_dir), sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=120,
    )


def test_read_only_commands_work_on_a_read_only_data_dir(tmp_path, data_dir):
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    write_calls(data_dir)
    (data_dir / "meta.json").unlink()  # as an older llm-shadow left it: a migration is due
    before = sorted((p.relative_to(data_dir), p.stat().st_mtime_ns) for p in data_dir.rglob("*"))
    data = ["--data", str(data_dir)]
    commands = [
        ["stats", "--by", "team", *data],
        ["sql", "SELECT count(*) AS n FROM requests", "--format", "csv", *data],
        ["report", "--out", str(tmp_path / "report.html"), *data],
        ["simulate", "--no-save", "--policy", str(ROOT / "examples" / "policy.toml"), "--format", "json", *data],
    ]
    for command in commands:
        result = read_only_run(data_dir, *command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert (tmp_path / "report.html").stat().st_size > 0
    saving = read_only_run(
        data_dir, "simulate", "--policy", str(ROOT / "examples" / "policy.toml"), *data, cwd=tmp_path
    )
    assert saving.returncode == 1 and "Traceback" not in saving.stderr
    [line] = saving.stderr.strip().splitlines()
    assert "cannot store the run" in line and "--no-save" in line, line
    policy = ["--policy", str(ROOT / "examples" / "policy.toml")]
    reporting = read_only_run(data_dir, "report", *policy, "--out", str(tmp_path / "r.html"), *data, cwd=tmp_path)
    assert reporting.returncode == 1 and "Traceback" not in reporting.stderr, reporting.stderr
    assert "cannot store the run" in reporting.stderr.strip().splitlines()[-1]
    assert sorted((p.relative_to(data_dir), p.stat().st_mtime_ns) for p in data_dir.rglob("*")) == before


def modes_under(directory) -> set[tuple[str, str]]:
    """The modes of everything in `directory` but the salt (always its owner's only)."""
    paths = (p for p in directory.rglob("*") if p.name != "salt")
    return {("dir" if p.is_dir() else "file", oct(stat.S_IMODE(p.stat().st_mode))) for p in paths}


def test_data_is_readable_by_its_owner_only_unless_the_directory_says_a_group(tmp_path, data_dir):
    from analysis.enforce.mirror import Mirror
    from analysis.pricing.table import PriceTable
    from analysis.recording.status import StatusFile
    from analysis.simulate.embedders import CachedEmbedder, HashingEmbedder
    from analysis.simulate.policy import parse_policy
    from analysis.simulate.runs import save_run
    from tests.simulate_helpers import run

    def write_everything(data_dir) -> None:
        write_calls(data_dir)
        store = Store(data_dir)
        store.quarantine("x", "requests", {"id": "r"}, "a reason")
        StatusFile(data_dir / "status" / "x.json").write({"instance": "x"})
        save_run(data_dir, run("", [{}]))
        CachedEmbedder(HashingEmbedder(), data_dir / "embeddings").embed(["a prompt"])  # vectors of prompts
        mirroring = parse_policy('[[routing]]\nname = "r"\nto = "gpt-4o-mini"\nmirror = 0.1\n')
        Mirror(mirroring, data_dir, PriceTable.load()).close()  # its counts

    write_everything(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert modes_under(data_dir) == {("dir", "0o700"), ("file", "0o600")}
    # A group the owner lets in: new directories and files get the data directory's group bits.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    write_everything(shared)
    assert modes_under(shared) == {("dir", "0o750"), ("file", "0o640")}
    assert stat.S_IMODE((shared / "salt").stat().st_mode) == 0o600


# --- 10. small things, each a one-line message and the right exit code ----------------------------


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error:"), line
    return line


def test_a_port_in_use_or_out_of_range_is_one_line(data_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proxy = ["proxy", "--upstream", "http://127.0.0.1:9", "--data", str(data_dir)]
        assert "already in use" in one_line_error(run_cli(*proxy, "--port", str(port)))
        assert "already in use" in one_line_error(run_cli(*proxy[:2], f"http://127.0.0.1:9@{port}", *proxy[3:]))
    for bad in ("70000", "-1"):
        assert "a port is a number from 1 to 65535" in one_line_error(run_cli(*proxy, "--port", bad))
    assert not data_dir.exists()


def test_stats_on_a_records_path_that_is_not_a_directory_is_one_line(data_dir):
    Store(data_dir)
    shutil.rmtree(data_dir / "records")
    (data_dir / "records").write_text("not a directory")
    assert "records is not a directory" in one_line_error(run_cli("stats", "--data", str(data_dir)))


def test_compact_says_why_it_merged_nothing_and_how_not_to_wait(data_dir):
    from analysis.store.datadir import SegmentWriter, live_segments

    writer = SegmentWriter(Store(data_dir), "stopped")
    for n in range(2):
        writer.write([{"id": f"c{n}", "ts": None, "model": "m"}], [])
    waited = run_cli("compact", "--data", str(data_dir))
    assert waited.exit_code == 0, waited.output
    assert "Merged nothing from 1 recorder" in waited.stdout and "--quiet-for 0s" in waited.stdout
    assert len(live_segments(data_dir / "records")) == 2
    now = run_cli("compact", "--quiet-for", "0s", "--data", str(data_dir))
    assert now.exit_code == 0 and "Merged nothing" not in now.stdout, now.output
    assert len(live_segments(data_dir / "records")) == 1
    assert "is not an age" in one_line_error(run_cli("compact", "--quiet-for", "soon", "--data", str(data_dir)))


def test_ca_prints_the_fingerprint_as_it_is(tmp_path):
    from rich.console import Console

    from addons.ca import ensure_ca
    from analysis.capture_setup.ca import fingerprint_sha256, load_cert

    # A CA whose fingerprint line rich would turn into an emoji (`:AB:`), as about one in twenty.
    line = ""
    for n in range(300):
        files, _ = ensure_ca(tmp_path / f"conf{n}")
        fingerprint = fingerprint_sha256(load_cert(files.cert))
        line = f"  SHA-256 {fingerprint}"
        if Console().render_str(line, highlight=False).plain != line:
            break
    else:
        pytest.fail("no CA with an emoji code in its fingerprint in 300 tries")
    result = run_cli("ca", "--confdir", str(files.confdir))
    assert result.exit_code == 0, result.output
    assert line in result.stdout.splitlines()
