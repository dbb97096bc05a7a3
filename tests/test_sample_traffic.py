"""The sample month, sample_traffic/month.flows: reproducible from its generator, readable by
mitmproxy and by `llm-shadow import`, and holding every provider, format and failure it claims."""

import hashlib
import json
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from mitmproxy import http, io
from typer.testing import CliRunner

from analysis.parsers.tokens import get_encoding
from analysis.store.datadir import Store
from cli import app
from sample_traffic.generate import DEFAULT_OUT, generate, main
from tests.conftest import MITMDUMP, ROOT, subprocess_env

SHIPPED = DEFAULT_OUT
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
MONTH_END = datetime(2026, 10, 31, tzinfo=UTC).timestamp()
RUNAWAY_DAY = "2026-10-21"


def read_flows(path: Path) -> list[http.HTTPFlow]:
    with open(path, "rb") as f:
        return [flow for flow in io.FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]


@pytest.fixture(scope="module")
def shipped() -> list[http.HTTPFlow]:
    return read_flows(SHIPPED)


def streamed(flow: http.HTTPFlow) -> bool:
    return "text/event-stream" in flow.response.headers.get("content-type", "")


def day_of(flow: http.HTTPFlow) -> str:
    return datetime.fromtimestamp(flow.request.timestamp_start, UTC).strftime("%Y-%m-%d")


def o200k(text: str) -> int:
    return len(get_encoding("o200k_base").encode_ordinary(text))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- reproducible --------------------------------------------------------------------------------


def test_same_seed_and_scale_give_the_same_bytes(tmp_path):
    first, second, other = tmp_path / "a.flows", tmp_path / "b.flows", tmp_path / "c.flows"
    generate(first, seed=7, scale=0.05)
    generate(second, seed=7, scale=0.05)
    generate(other, seed=8, scale=0.05)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    small = read_flows(first)
    assert 20 < len(small) < len(read_flows(SHIPPED)) / 5


def test_default_settings_reproduce_the_shipped_file(tmp_path):
    """If this fails after a generator change, regenerate: python -m sample_traffic.generate"""
    out = tmp_path / "month.flows"
    generate(out)
    assert sha256(out) == sha256(SHIPPED)


def test_shipped_file_fits_in_the_repository():
    assert SHIPPED.stat().st_size <= 8_000_000


def test_command_line_rejects_a_bad_scale(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--scale", "0", "--out", str(tmp_path / "x.flows")])
    assert exit_info.value.code == 2
    assert "--scale must be positive" in capsys.readouterr().err
    assert not (tmp_path / "x.flows").exists()


# --- what the month holds --------------------------------------------------------------------------


def test_every_provider_in_json_and_streamed(shipped):
    kinds = {(f.request.host, streamed(f)) for f in shipped if f.response.status_code == 200}
    hosts = {"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"}
    assert kinds >= {(host, stream) for host in hosts for stream in (True, False)}
    paths = {f.request.path.split(":")[-1] if "googleapis" in f.request.host else f.request.path for f in shipped}
    assert paths >= {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages",
        "generateContent",
        "streamGenerateContent?alt=sse",
    }


def test_errors_look_like_the_providers_errors(shipped):
    by_status = Counter(f.response.status_code for f in shipped)
    assert {429, 500, 503, 529} <= set(by_status)
    assert by_status[200] > 0.9 * len(shipped)
    for flow in shipped:
        status, body = flow.response.status_code, flow.response.content
        if status == 429 and flow.request.host != "generativelanguage.googleapis.com":
            assert int(flow.response.headers["retry-after"]) >= 1
        if status >= 400:
            error = json.loads(body)["error"]
            assert error["type" if "type" in error else "status"]
        if status == 529:
            assert json.loads(body)["error"]["type"] == "overloaded_error"


def test_cut_streams_end_early_with_an_error(shipped):
    cut = [f for f in shipped if f.error]
    assert len(cut) >= 3
    for flow in cut:
        assert streamed(flow) and flow.response.timestamp_end is None
        body = flow.response.content
        assert b"[DONE]" not in body and b"message_stop" not in body and b'"finishReason": "STOP"' not in body
    overloaded = [f for f in shipped if streamed(f) and b"event: error" in f.response.content]
    assert overloaded and all(
        f.request.host == "api.anthropic.com"
        and f.response.status_code == 200
        and b"overloaded_error" in f.response.content
        and b"message_stop" not in f.response.content
        for f in overloaded
    )
    complete = [f for f in shipped if streamed(f) and not f.error and f.request.path == "/v1/chat/completions"]
    assert complete and all(f.response.content.endswith(b"data: [DONE]\n\n") for f in complete)


def test_month_shape(shipped):
    starts = [f.request.timestamp_start for f in shipped]
    assert starts == sorted(starts)
    assert MONTH_START <= starts[0] and starts[-1] < MONTH_END
    per_day = Counter(day_of(f) for f in shipped)
    assert len(per_day) == 30
    weekday = [n for d, n in per_day.items() if datetime.fromisoformat(d).weekday() < 5 and d != RUNAWAY_DAY]
    weekend = [n for d, n in per_day.items() if datetime.fromisoformat(d).weekday() >= 5]
    assert sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)
    nightly = {day_of(f) for f in shipped if f.request.headers.get("x-shadow-feature") == "nightly-digest"}
    assert len(nightly) == 30  # a cron job: every night
    data_per_day = Counter(day_of(f) for f in shipped if f.request.headers.get("x-shadow-team") == "data")
    assert data_per_day[RUNAWAY_DAY] > 10 * sorted(data_per_day.values())[len(data_per_day) // 2]


def test_attribution_and_fake_keys(shipped):
    with_team = sum("x-shadow-team" in f.request.headers for f in shipped)
    assert 0.9 * len(shipped) < with_team < len(shipped)  # most, not all: one notebook sends none
    assert len({f.request.headers["x-shadow-team"] for f in shipped if "x-shadow-team" in f.request.headers}) == 5
    keys = set()
    for f in shipped:
        h = f.request.headers
        key = h.get("authorization", "").removeprefix("Bearer ") or h.get("x-api-key") or h.get("x-goog-api-key")
        assert "FAKE" in key
        keys.add(key)
    assert len(keys) >= 12
    bodies = [json.loads(f.request.content) for f in shipped]
    assert any("user" in b for b in bodies) and any(b.get("metadata", {}).get("user_id") for b in bodies)


def test_repeats_paraphrases_and_caching(shipped):
    classifier = Counter(
        f.request.content for f in shipped if f.request.headers.get("x-shadow-feature") == "intent-classifier"
    )
    assert sum(n - 1 for n in classifier.values()) > 20  # temperature-0 exact repeats
    queries = {json.loads(body)["messages"][-1]["content"] for body in classifier}
    assert len(queries) > 50  # and many different wordings (BANKING77 paraphrases)
    bodies = b"\n".join(f.response.content for f in shipped if f.response.status_code == 200)
    for nonzero in (
        rb'"cached_tokens": [1-9]',
        rb'"cache_read_input_tokens":[1-9]',  # prompt caches
        rb'"cache_creation_input_tokens":[1-9]',
        rb'"thoughtsTokenCount": [1-9]',
        rb'"reasoning_tokens": [1-9]',
    ):
        assert re.search(nonzero, bodies), nonzero
    no_usage = [
        f
        for f in shipped
        if streamed(f)
        and "openai" in f.request.host
        and b"include_usage" not in f.request.content
        and b'"messages"' in f.request.content
    ]
    assert len(no_usage) > 20 and not any(b'"usage"' in f.response.content for f in no_usage)


def test_openai_usage_agrees_with_the_text(shipped):
    """prompt_tokens and completion_tokens are tiktoken counts of what is on the wire."""
    checked = 0
    for flow in shipped:
        if flow.request.path != "/v1/chat/completions" or flow.response.status_code != 200 or flow.error:
            continue
        request = json.loads(flow.request.content)
        if request.get("tools") or not request["model"].startswith(("gpt-4o", "gpt-4.1")):
            continue
        if streamed(flow):
            events = [json.loads(line[6:]) for line in flow.response.text.splitlines() if line.startswith("data: {")]
            text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
            usage = events[-1].get("usage")
            if usage is None:
                continue
        else:
            response = json.loads(flow.response.content)
            text, usage = response["choices"][0]["message"]["content"], response["usage"]
        messages = request["messages"]
        prompt = 3 + sum(3 + o200k(m["role"]) + o200k(m["content"]) for m in messages)
        assert usage["prompt_tokens"] == prompt
        assert usage["completion_tokens"] == o200k(text)
        assert usage["total_tokens"] == prompt + usage["completion_tokens"]
        checked += 1
    assert checked > 300


def test_streams_have_their_first_token_before_their_end(shipped):
    for flow in shipped:
        request, response = flow.request, flow.response
        assert request.timestamp_start <= request.timestamp_end <= response.timestamp_start
        if response.timestamp_end is not None:
            assert response.timestamp_start <= response.timestamp_end
        if streamed(flow) and not flow.error:
            assert response.timestamp_end - response.timestamp_start > 0.05


# --- mitmproxy and llm-shadow read it ----------------------------------------------------------


def test_mitmdump_reads_the_shipped_file(shipped):
    result = subprocess.run(
        [*MITMDUMP, "-n", "-r", str(SHIPPED), "--set", "flow_detail=1"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    errors = sum(1 for f in shipped if f.error)  # mitmdump shows an errored flow again with its error
    assert result.stdout.count(" POST https://") == len(shipped) + errors
    assert result.stdout.count("peer closed connection without sending complete message body") >= 3


def test_llm_shadow_imports_every_call(shipped, tmp_path):
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["import", str(SHIPPED), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert f"recorded {len(shipped):,} LLM calls" in result.stdout
    rows = Store(data).requests_frame()
    assert set(rows["provider"]) == {"openai", "anthropic", "gemini"}
    assert set(rows["endpoint"]) >= {"chat", "responses", "embeddings", "messages", "generate_content"}
    assert set(rows["outcome"]) >= {"ok", "rate_limited", "server_error", "upstream_cut"}
    assert set(rows["usage_source"]) >= {"provider", "estimated"}
    assert set(rows["team"].drop_nulls()) == {"support", "growth", "platform", "data", "eng-tools"}
    cached = rows.group_by("provider").agg(pl.col("cached_input_tokens").sum())
    assert all(n > 0 for p, n in cached.iter_rows() if p in ("openai", "anthropic"))
    answered = rows.filter(pl.col("status") == 200)
    assert answered["cost_usd"].null_count() == 0  # every model has a price
