"""`llm-shadow proxy --metrics-port`: Prometheus scrapes what the recorder counted, summed over
the proxy process and its worker process; scraped with a real HTTP GET and read with
prometheus_client's own parser."""

import socket
import subprocess
from collections import defaultdict

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analysis.store.datadir import Store
from tests.conftest import llm_shadow_proxy_command, subprocess_env, wait_for
from tests.test_import import make_calls
from tests.test_proxy_openai import API_KEY, MESSAGES, records


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple, float]:
    """Every sample of /metrics as {(sample name, sorted labels): value}."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_prometheus_sees_every_recorded_call(provider, start_proxy, data_dir):
    port = free_port()
    proxy = start_proxy("--upstream", f"{provider.url}@0", "--metrics-port", str(port))
    make_calls(proxy.url)
    rows = records(data_dir, 5)

    def counted():
        samples = scrape(port)
        total = sum(v for (name, _), v in samples.items() if name == "llm_shadow_calls_total")
        return samples if total == len(rows) else None

    samples = wait_for(counted, 15)
    assert samples is not None, "the worker's counts did not reach /metrics"

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["provider"], row["model"], row["team"] or "")].append(row)
    assert len(groups) >= 3  # chat with and without a team, embeddings
    for (provider_name, model, team), group in groups.items():
        labels = {"provider": provider_name, "model": model, "team": team}
        for outcome in {r["outcome"] for r in group}:
            expected = sum(r["outcome"] == outcome for r in group)
            assert value(samples, "llm_shadow_calls_total", **labels, outcome=outcome) == expected
        for direction in ("input", "output"):
            tokens = sum(r[f"{direction}_tokens"] or 0 for r in group)
            assert value(samples, "llm_shadow_tokens_total", **labels, direction=direction) == (tokens or None)
        cost = sum(r["cost_usd"] or 0 for r in group)
        assert (value(samples, "llm_shadow_cost_usd_total", **labels) or 0) == pytest.approx(cost)
    assert any(r["outcome"] == "rate_limited" for r in rows)

    streams = [r for r in rows if r["stream"] and r["ttft_ms"] is not None]
    assert len(streams) == 2
    ttft_count = sum(v for (name, _), v in samples.items() if name == "llm_shadow_ttft_seconds_count")
    assert ttft_count == len(streams)
    latency_count = sum(v for (name, _), v in samples.items() if name == "llm_shadow_latency_seconds_count")
    assert latency_count == len(rows)
    assert value(samples, "llm_shadow_dropped_rows_total") == 0
    assert value(samples, "llm_shadow_worker_restarts_total") == 0
    assert value(samples, "llm_shadow_spooled_rows") is not None


def test_a_metrics_port_in_use_stops_the_proxy_with_a_clear_error(provider, data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = llm_shadow_proxy_command(["--upstream", f"{provider.url}@0", "--metrics-port", str(port)], data_dir)
        result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stdout + result.stderr


SHADOW_POLICY = """
[cache.exact]
name = "exact"
ttl = "1h"
scope = "global"

[[routing]]
name = "to-mini"
model = "gpt-4o"
to = "gpt-4o-mini"
"""


def test_prometheus_counts_the_decisions_of_shadow_mode(provider, start_proxy, data_dir, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(SHADOW_POLICY)
    port = free_port()
    proxy = start_proxy(
        "--upstream", f"{provider.url}@0", "--metrics-port", str(port), "--policy", str(policy), "--mode", "shadow"
    )
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0)
    for model in ("gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"):
        client.chat.completions.create(model=model, messages=MESSAGES, temperature=0)
    rows = records(data_dir, 4)
    with Store(data_dir).connect() as con:
        decided = con.execute(
            "SELECT mode, policy, kind, action, count(*) FROM decisions GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert sum(n for *_, n in decided) >= len(rows)

    def counted():
        samples = scrape(port)
        total = sum(v for (name, _), v in samples.items() if name == "llm_shadow_decisions_total")
        return samples if total == sum(n for *_, n in decided) else None

    samples = wait_for(counted, 15)
    assert samples is not None, "the decisions did not reach /metrics"
    for mode, policy_name, kind, action, n in decided:
        labels = {"mode": mode, "policy": policy_name, "kind": kind, "action": action}
        assert value(samples, "llm_shadow_decisions_total", **labels) == n
    assert value(samples, "llm_shadow_decisions_total", mode="shadow", policy="exact", kind="exact_cache", action="hit")
    assert value(samples, "llm_shadow_decisions_total", mode="shadow", policy="to-mini", kind="routing", action="route")
