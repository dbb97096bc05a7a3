"""Hand-built traffic for the simulator tests: requests whose right answer is known."""

from datetime import UTC, datetime, timedelta

import polars as pl

from analysis.simulate.policy import parse_policy
from analysis.simulate.simulator import simulate
from analysis.store.schema import CONTENTS, REQUESTS, polars_schema

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

DEFAULTS = {
    "provider": "openai",
    "endpoint": "chat",
    "host": "api.openai.com",
    "path": "/v1/chat/completions",
    "method": "POST",
    "status": 200,
    "outcome": "ok",
    "stream": False,
    "model_requested": "gpt-4o",
    "model": "gpt-4o",
    "input_tokens": 1000,
    "output_tokens": 100,
    "cached_input_tokens": 0,
    "cache_write_tokens": 0,
    "cache_write_1h_tokens": 0,
    "reasoning_tokens": 0,
    "usage_source": "provider",
    "cost_usd": 0.01,
    "cost_source": "computed",
    "latency_ms": 1000.0,
    "key_id": "k1",
    "team": "search",
    "feature": "chat",
    "user": "u1",
    "prompt_hash": "p1",
    "temperature": 0.0,
    "has_tools": False,
    "has_images": False,
    "batch": False,
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requests_frame(rows: list[dict]) -> pl.DataFrame:
    """A `requests` frame: each row is DEFAULTS updated with the row; "t" is seconds after
    T0 (row order when absent); ids are r0, r1, ... unless given."""
    full = []
    for i, row in enumerate(rows):
        row = dict(row)
        seconds = row.pop("t", i)
        full.append({"id": f"r{i}", "ts": at(seconds), **DEFAULTS, **row})
    schema = polars_schema(REQUESTS)
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in full], schema=schema)


def contents_frame(
    requests: pl.DataFrame, prompts: dict[str, str], system: dict[str, str] | None = None
) -> pl.DataFrame:
    """Contents for the requests named in `prompts` (id -> prompt text)."""
    system = system or {}
    rows = [
        {
            "id": r["id"],
            "ts": r["ts"],
            "system_prompt": system.get(r["id"], ""),
            "prompt_text": prompts[r["id"]],
            "request_json": None,
            "response_text": f"answer to {prompts[r['id']]}",
        }
        for r in requests.iter_rows(named=True)
        if r["id"] in prompts
    ]
    return pl.DataFrame(rows, schema=polars_schema(CONTENTS))


def run(policy_text: str, rows: list[dict], contents: pl.DataFrame | None = None, **kwargs):
    """Simulate `policy_text` over hand-built rows; the SimulationResult."""
    return simulate(parse_policy(policy_text, "policy.toml"), requests_frame(rows), contents, **kwargs)


def decisions_by_id(result) -> dict[str, dict]:
    return {row["id"]: row for row in result.decisions.iter_rows(named=True)}
