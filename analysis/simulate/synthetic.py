"""Synthetic `requests` and `contents` frames shaped like real LLM traffic, for benchmarks and
property tests (never for results shown to a user).

A seeded generator draws, vectorised with numpy: timestamps over a number of days with a
day/night rhythm; teams, features, keys and users with skewed popularity; five priced models
and one unpriced local model; prompts from a few thousand topics with Zipf popularity, each
topic worded a few ways (so there are exact repeats, near repeats and unrelated prompts);
temperature, streaming, tools and images in realistic shares; lognormal token counts, a share
of provider prompt-cache reads, and a cost priced with the bundled price table.
"""

from datetime import UTC, datetime

import numpy as np
import polars as pl

from analysis.pricing.table import PriceTable
from analysis.store.schema import CONTENTS, REQUESTS, polars_schema

MODELS = [  # (provider, model, share)
    ("openai", "gpt-4o", 0.30),
    ("openai", "gpt-4o-mini", 0.20),
    ("openai", "gpt-4.1", 0.15),
    ("anthropic", "claude-sonnet-4-5", 0.20),
    ("gemini", "gemini-2.5-flash", 0.13),
    ("openai_compatible", "local-llama-3-70b", 0.02),  # no price: cost_usd NULL
]
TEAMS = ["search", "support", "growth", "platform", "research"]
FEATURES = ["chat", "summarize", "classify", "extract", "report", "autocomplete", "translate", "agent"]
SYSTEM_PROMPTS = [
    "You are a helpful banking assistant.",
    "Summarize the text for an executive.",
    "Classify the customer message into one intent.",
    "",
]
_SUBJECTS = (
    "card transfer payment refund account pin fee cash exchange balance statement loan deposit limit app".split()
)
_ACTIONS = "cancel activate check dispute increase reset verify change order track close open explain".split()
_DETAILS = "today abroad online twice pending declined missing wrong late new old blocked".split()
_OPENERS = ["", "hi,", "hello,", "please", "quick question:", "help:"]
_CLOSERS = ["", "thanks", "asap", "please help", "?"]


def _topic_texts(rng: np.random.Generator, topics: int) -> list[str]:
    return [
        f"{rng.choice(_ACTIONS)} my {rng.choice(_SUBJECTS)} {rng.choice(_DETAILS)} {rng.choice(_SUBJECTS)} "
        f"{rng.choice(_DETAILS)}"
        for _ in range(topics)
    ]


def generate(
    n: int,
    *,
    days: int = 30,
    seed: int = 7,
    topics: int = 5000,
    start: datetime | None = None,
    prices: PriceTable | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(requests, contents) frames of `n` synthetic calls, in time order."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 3, 1, tzinfo=UTC)
    start_us = int(start.timestamp() * 1_000_000)
    span_us = days * 86_400_000_000
    # Day/night rhythm: accept times with probability following the hour of day.
    raw = rng.integers(0, span_us, size=int(n * 1.6) + 16)
    hour = (raw // 3_600_000_000) % 24
    keep = rng.random(raw.size) < (0.25 + 0.75 * np.sin(np.pi * hour / 24) ** 2)
    ts = np.sort(raw[keep][:n]) + start_us
    if ts.size < n:  # pragma: no cover - the oversampling makes this practically impossible
        ts = np.sort(np.concatenate([ts, rng.integers(0, span_us, n - ts.size) + start_us]))

    model_index = rng.choice(len(MODELS), size=n, p=[m[2] for m in MODELS])
    providers = np.array([m[0] for m in MODELS])[model_index]
    models = np.array([m[1] for m in MODELS])[model_index]
    team = np.array(TEAMS)[rng.zipf(1.6, n) % len(TEAMS)]
    feature = np.array(FEATURES)[rng.zipf(1.5, n) % len(FEATURES)]
    key_id = np.char.add("key", (rng.zipf(1.4, n) % 40).astype(str))
    user = np.char.add("user", (rng.zipf(1.3, n) % 2000).astype(str))

    topic_texts = _topic_texts(rng, topics)
    topic = (rng.zipf(1.3, n) - 1) % topics
    wording = rng.choice(4, size=n, p=[0.7, 0.15, 0.1, 0.05])
    opener = np.array(_OPENERS)[(topic + wording) % len(_OPENERS) * (wording > 0)]
    closer = np.array(_CLOSERS)[(topic * 3 + wording) % len(_CLOSERS) * (wording > 1)]
    system_index = (topic + (feature == "summarize") + 2 * (feature == "classify")) % len(SYSTEM_PROMPTS)
    system = np.array(SYSTEM_PROMPTS)[system_index]
    prompt = [
        f"user: {' '.join(w for w in (o, topic_texts[t], c) if w)}"
        for o, t, c in zip(opener.tolist(), topic.tolist(), closer.tolist(), strict=True)
    ]

    temperature = rng.choice([0.0, np.nan, 0.7, 1.0], size=n, p=[0.5, 0.25, 0.15, 0.1])
    stream = rng.random(n) < 0.3
    has_tools = rng.random(n) < 0.1
    has_images = rng.random(n) < 0.03
    input_tokens = np.maximum(rng.lognormal(6.5, 1.0, n).astype(np.int64), 5)
    output_tokens = np.maximum(rng.lognormal(5.0, 0.9, n).astype(np.int64), 1)
    cached = np.where(rng.random(n) < 0.25, (input_tokens * rng.uniform(0.3, 0.9, n)).astype(np.int64), 0)
    outcome = rng.choice(["ok", "rate_limited", "server_error", "client_error"], size=n, p=[0.96, 0.02, 0.01, 0.01])
    latency = 250 + output_tokens * rng.uniform(8, 25, n) + rng.exponential(150, n)

    requests = pl.DataFrame(
        {
            "id": [f"{t:012x}{i:010x}" for i, t in enumerate((ts // 1000).tolist())],
            "ts": ts,
            "provider": providers,
            "endpoint": "chat",
            "host": "api.example.com",
            "path": "/v1/chat/completions",
            "method": "POST",
            "status": np.where(outcome == "ok", 200, 429),
            "outcome": outcome,
            "stream": stream,
            "model_requested": models,
            "model": models,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached,
            "cache_write_tokens": np.zeros(n, dtype=np.int64),
            "cache_write_1h_tokens": np.zeros(n, dtype=np.int64),
            "reasoning_tokens": np.zeros(n, dtype=np.int64),
            "usage_source": "provider",
            "latency_ms": latency,
            "key_id": key_id,
            "team": team,
            "feature": feature,
            "user": user,
            "temperature": temperature,
            "has_tools": has_tools,
            "has_images": has_images,
            "batch": np.zeros(n, dtype=bool),
            "instance": "synthetic",
        }
    ).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.col("temperature").fill_nan(None),
        # Equal prompts (same model, text, temperature, tools) hash equal.
        pl.concat_str(
            [
                pl.col("model"),
                pl.Series("p", prompt),
                pl.Series("s", system),
                pl.col("temperature").cast(pl.Utf8).fill_null("-"),
                pl.col("has_tools").cast(pl.Utf8),
            ],
            separator="|",
        )
        .hash(seed=11)
        .cast(pl.Utf8)
        .alias("prompt_hash"),
    )
    requests = _with_costs(requests, prices or PriceTable.load())
    full = {c.name: c.polars_type for c in REQUESTS}
    requests = requests.with_columns(
        [pl.lit(None, dtype=t).alias(name) for name, t in full.items() if name not in requests.columns]
    ).select([pl.col(name).cast(t) for name, t in full.items()])
    contents = pl.DataFrame(
        {
            "id": requests["id"],
            "ts": requests["ts"],
            "system_prompt": system,
            "prompt_text": prompt,
            "request_json": None,
            "response_text": [f"answer to: {t}" for t in prompt],
        },
        schema=polars_schema(CONTENTS),
    )
    return requests, contents


def _with_costs(requests: pl.DataFrame, prices: PriceTable) -> pl.DataFrame:
    """cost_usd (NULL when the model has no price), cost_source and price_version."""
    from analysis.simulate.pricer import USAGE_COLUMNS, Pricer, PricingRows

    pricer = Pricer(prices)
    cost = np.full(requests.height, np.nan)
    usage = [requests[c].fill_null(0).cast(pl.Int64).to_numpy() for c in USAGE_COLUMNS]
    labels = PricingRows(
        {c: np.array(requests[c].to_list(), dtype=object) for c in ("provider", "model")},
        {},
        np.zeros(requests.height, dtype=bool),
        None,
    )
    for (provider, model), rows in labels.groups("provider", "model"):
        price = prices.resolve(model, provider)
        if price is not None:
            cost[rows] = pricer.usage_cost(price, "standard", *(u[rows] for u in usage))
    return requests.with_columns(
        pl.Series("cost_usd", cost).fill_nan(None),
        pl.when(pl.Series(np.isnan(cost))).then(pl.lit("unpriced")).otherwise(pl.lit("computed")).alias("cost_source"),
        pl.lit(prices.version).alias("price_version"),
    )
