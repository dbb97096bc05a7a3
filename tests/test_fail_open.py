"""Fail-open: our failures never break a call; they are counted, and rows wait in the spool."""

import json
import os
import shutil
import signal

import httpx
import openai
import polars as pl
import pytest

from analysis.store.datadir import Store
from tests.conftest import ROOT, subprocess_env, wait_for
from tests.test_proxy_openai import API_KEY, MESSAGES, records


def status_of(data_dir) -> dict:
    """The recorder's status file (one instance per proxy)."""
    files = list((data_dir / "status").glob("*.json"))
    return json.loads(files[0].read_text()) if files else {}


def test_store_outage_is_spooled_and_written_when_it_recovers(provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    records(data_dir, 1)

    # The records directory disappears (a full or unmounted disk looks the same to a writer).
    shutil.move(data_dir / "records", data_dir / "records.away")
    (data_dir / "records").write_text("not a directory")
    answers = [client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES) for _ in range(3)]
    assert all(a.choices[0].message.content for a in answers)  # the calls were not affected
    status = wait_for(lambda: (s := status_of(data_dir)) and s.get("spooled") == 3 and s)
    assert status["problems"]["store_write_failed"] >= 1
    assert status["recorded"] == 1

    (data_dir / "records").unlink()
    shutil.move(data_dir / "records.away", data_dir / "records")
    rows = records(data_dir, 4)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert wait_for(lambda: status_of(data_dir).get("spooled") == 0)
    # ... and `stats` says loudly that recording had a problem.
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["stats", "--data", str(data_dir)])
    assert result.exit_code == 0
    assert "recording had problems: store_write_failed=" in result.stderr


def test_an_unreadable_body_passes_through_and_is_still_recorded(provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    garbage = '{"id": "chatcmpl-1", "choices": [ truncated'
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"x-fake-body": garbage},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert (r.status_code, r.text) == (200, garbage)
    [row] = records(data_dir, 1)
    assert (row["usage_source"], row["cost_usd"], row["outcome"]) == ("none", None, "ok")
    assert row["error"]


def test_a_parser_that_raises_never_breaks_the_call(provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    # Labelled gzip but not gzip: decoding raises inside the recorder's worker.
    body = '{"not": "gzip"}'
    headers = {"x-fake-body": body, "x-fake-encoding": "gzip"}
    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            headers=headers,
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        ) as r,
    ):
        assert (r.status_code, b"".join(r.iter_raw())) == (200, body.encode())
    [row] = records(data_dir, 1)
    assert row["error"].startswith("openai_chat: DecodeError")
    assert (row["usage_source"], row["status"], row["provider"]) == ("none", 200, "openai_compatible")
    assert wait_for(lambda: status_of(data_dir).get("problems", {}).get("parse_error:openai_chat") == 1)


def test_kill_9_keeps_what_was_flushed_and_the_dir_stays_usable(provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    for _ in range(5):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    records(data_dir, 5)  # flushed within the interval (0.2 s in tests)
    proxy.stop(signal.SIGKILL)
    assert Store(data_dir).requests_frame().height == 5
    # A new proxy on the same directory goes on writing beside the dead one's segments.
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert len(records(data_dir, 6)) == 6


@pytest.mark.parametrize("make_bad", ["file", "newer"])
def test_an_unusable_data_dir_stops_the_proxy_at_start_with_one_line(tmp_path, make_bad):
    import subprocess
    import sys

    bad = tmp_path / "data"
    if make_bad == "file":
        bad.write_text("x")
    else:
        Store(bad)
        (bad / "meta.json").write_text(json.dumps({"migrations": ["m001_initial", "m999_future"]}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "proxy", "--upstream", "http://127.0.0.1:9", "--data", str(bad)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error:") and str(bad) in line


def test_a_dead_worker_is_replaced_and_calls_go_on(provider, start_proxy, data_dir):
    proxy = start_proxy("--upstream", f"{provider.url}@0")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    records(data_dir, 1)
    worker_pid = wait_for(lambda: status_of(data_dir).get("worker_pid"))
    assert worker_pid != proxy.process.pid
    os.kill(worker_pid, signal.SIGKILL)
    # The proxy notices at its next call (a call handed over as the worker died is lost with
    # it, as in any crash), counts it, and starts a new worker; calls are never affected.
    for _ in range(20):
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content
        if wait_for(lambda: any("worker_died" in line for line in proxy.output), timeout=0.5):
            break
    assert any("worker_died" in line for line in proxy.output)
    after = openai.OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key=API_KEY,
        max_retries=0,
        default_headers={"x-shadow-feature": "after-restart"},
    )
    for _ in range(2):
        after.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    recorded_after = wait_for(
        lambda: Store(data_dir).requests_frame().filter(pl.col("feature") == "after-restart").height == 2
    )
    assert recorded_after, "".join(proxy.output)
