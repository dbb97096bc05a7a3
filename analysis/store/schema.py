"""The columns of the relations llm-shadow records, in one place.

`REQUESTS` is the `requests` relation: one row per LLM API call. `CONTENTS` is the `contents`
relation: what was said (kept apart so it can be turned off and purged). Every other module
(the recorder, the store, the simulator, the reports, the README table) takes column names and
types from here, so a column has one name everywhere.
"""

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    description: str

    @property
    def polars_type(self) -> pl.DataType:
        return _POLARS_TYPES[self.sql_type]


_POLARS_TYPES = {
    "VARCHAR": pl.Utf8(),
    "BIGINT": pl.Int64(),
    "INTEGER": pl.Int32(),
    "DOUBLE": pl.Float64(),
    "BOOLEAN": pl.Boolean(),
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
}

REQUESTS = [
    Column("id", "VARCHAR", "Unique id of the call (time-ordered)."),
    Column("ts", "TIMESTAMPTZ", "When the request started, UTC."),
    Column(
        "provider",
        "VARCHAR",
        "openai, azure, anthropic, gemini, vertex, openrouter, groq, mistral, deepseek, xai, ..., or "
        "`openai_compatible` (`anthropic_compatible`, `gemini_compatible`) for an unknown host speaking that shape.",
    ),
    Column(
        "endpoint",
        "VARCHAR",
        "chat, responses, responses_compact, completions, embeddings, messages, generate_content, batches, ...",
    ),
    Column("host", "VARCHAR", "Upstream host name."),
    Column("path", "VARCHAR", "Request path, query string removed."),
    Column("method", "VARCHAR", "HTTP method."),
    Column("status", "INTEGER", "HTTP status from the upstream; NULL when none arrived."),
    Column(
        "outcome",
        "VARCHAR",
        "ok, client_error, rate_limited, server_error, timeout, upstream_cut, client_disconnected, "
        "connect_error; in enforce mode also cached (answered from the exact cache), blocked (budget), "
        "throttled (rate limit), refused (a wrapped key unknown, revoked or expired), "
        "none of which reached the upstream.",
    ),
    Column("stream", "BOOLEAN", "The response was streamed (SSE)."),
    Column(
        "finish_reasons",
        "VARCHAR",
        "Why the model stopped, as the provider said it, one per choice, comma-separated (stop, length, "
        "tool_calls, end_turn, max_tokens, STOP, MAX_TOKENS, completed, ...); NULL when the answer gave none "
        "(an error, a cut stream, embeddings, or a call recorded before this column existed).",
    ),
    Column(
        "model_requested",
        "VARCHAR",
        "Model named in the request (or the URL, or the Azure deployment) as sent upstream: in enforce mode, after "
        "a routing rule or budget downgrade rewrote it (`decisions.model_from` keeps the one the client named).",
    ),
    Column("model", "VARCHAR", "Model as served, from the response; the requested one when the response does not say."),
    Column("input_tokens", "BIGINT", "Every input token processed, cache reads and cache writes included."),
    Column("output_tokens", "BIGINT", "Every output token, reasoning included."),
    Column("cached_input_tokens", "BIGINT", "Part of input_tokens read from the provider's prompt cache."),
    Column("cache_write_tokens", "BIGINT", "Part of input_tokens written to the provider's prompt cache."),
    Column("cache_write_1h_tokens", "BIGINT", "Part of cache_write_tokens written with a 1-hour TTL (Anthropic)."),
    Column("reasoning_tokens", "BIGINT", "Part of output_tokens spent on reasoning / thinking."),
    Column("audio_input_tokens", "BIGINT", "Part of input_tokens that is audio (not cached), priced at audio rates."),
    Column("audio_output_tokens", "BIGINT", "Part of output_tokens that is audio, priced at audio rates."),
    Column(
        "image_input_tokens", "BIGINT", "Part of input_tokens that is images, where the provider prices them apart."
    ),
    Column("image_output_tokens", "BIGINT", "Part of output_tokens that is images (image generation)."),
    Column(
        "usage_other_models",
        "VARCHAR",
        "Tokens the call spent on models other than `model` (Anthropic's advisor iterations), as JSON [{model, "
        "input_tokens, output_tokens, ...}]: included in cost_usd at their own model's price, not in the token "
        "columns.",
    ),
    Column("usage_source", "VARCHAR", "provider (reported by the API), estimated (counted by llm-shadow), none."),
    Column("cost_usd", "DOUBLE", "Cost of the call in USD; NULL when unpriced."),
    Column(
        "cost_source",
        "VARCHAR",
        "computed (from the price table), provider (reported by the API), unpriced (model not in the price table: "
        "cost_usd is NULL), none (no token counts, e.g. an error before any output), "
        "not_sent (enforce mode answered without the upstream: cost_usd is 0).",
    ),
    Column("price_version", "VARCHAR", "Version of the price table the cost was computed with."),
    Column(
        "price_check",
        "VARCHAR",
        "The cost priced again by the other price table (see docs/pricing.md): agree (within 1%), differ (by "
        "more than 1%), one-sided (only one table prices the model); NULL when there is nothing to check "
        "(provider-reported cost, no token counts, or neither table knows the model).",
    ),
    Column("price_check_cost_usd", "DOUBLE", "Cost of the call by the other price table; NULL when it has no price."),
    Column("price_check_version", "VARCHAR", "Version of the other price table."),
    Column("latency_ms", "DOUBLE", "Request start to last response byte, milliseconds."),
    Column("ttft_ms", "DOUBLE", "Request start to the first output token (streams), milliseconds."),
    Column("request_bytes", "BIGINT", "Request body size as sent."),
    Column("response_bytes", "BIGINT", "Response body size as received (after content decoding)."),
    Column("key_id", "VARCHAR", "Salted fingerprint of the API key; the key itself is never stored."),
    Column("team", "VARCHAR", "Attribution: team (header or request body)."),
    Column("feature", "VARCHAR", "Attribution: feature (header or request body)."),
    Column("user", "VARCHAR", "Attribution: end user (header or request body)."),
    Column("prompt_hash", "VARCHAR", "Hash of the canonical request: equal requests hash the same."),
    Column("temperature", "DOUBLE", "Sampling temperature requested; NULL when unset."),
    Column("n", "INTEGER", "Number of choices requested; NULL when unset."),
    Column("has_tools", "BOOLEAN", "The request offered tools / functions."),
    Column("has_images", "BOOLEAN", "The request contained images."),
    Column("service_tier", "VARCHAR", "Service tier requested or served (default, priority, flex, ...)."),
    Column("batch", "BOOLEAN", "The call belongs to a batch API."),
    Column(
        "usage_key",
        "VARCHAR",
        "What usage the call reported when other calls report it again (openai-batch:ID, anthropic-batch:ID): only "
        "the first such call keeps the tokens.",
    ),
    Column("error", "VARCHAR", "Short description of what went wrong, when something did."),
    Column("instance", "VARCHAR", "Recorder instance that wrote the row."),
    Column(
        "import_key",
        "VARCHAR",
        "What identifies an imported call (flow:ID for a mitmproxy flow, har:HASH of request, response and time for "
        "a HAR entry); a second import of it is skipped. NULL for live calls.",
    ),
]

CONTENTS = [
    Column("id", "VARCHAR", "Id of the call in `requests`."),
    Column("ts", "TIMESTAMPTZ", "When the request started, UTC."),
    Column("system_prompt", "VARCHAR", "System prompt / instructions text."),
    Column("prompt_text", "VARCHAR", "The request's messages as plain text (role: text lines)."),
    Column("request_json", "VARCHAR", "The request body as JSON, secrets never included."),
    Column("response_text", "VARCHAR", "The response's output text."),
]

DECISIONS = [
    Column("id", "VARCHAR", "Id of the call in `requests` the decision is about."),
    Column("ts", "TIMESTAMPTZ", "When the request started, UTC."),
    Column("mode", "VARCHAR", "shadow (decided and logged, traffic untouched) or enforce (the decision acted)."),
    Column("policy", "VARCHAR", "Name of the policy entry that decided."),
    Column("kind", "VARCHAR", "exact_cache, semantic_cache, routing, batch, budget, rate_limit, fallback."),
    Column("action", "VARCHAR", "hit, miss, route, batch, block, downgrade, throttle, retry, fallback."),
    Column(
        "matched_id",
        "VARCHAR",
        "Cache hit: the request whose stored answer was (or would have been) served; retry or fallback: the "
        "attempt's own row in `requests`.",
    ),
    Column(
        "model_to",
        "VARCHAR",
        "Routing, downgrade, retry or fallback: the model the request (or the attempt) was (or would have been) "
        "sent to.",
    ),
    Column(
        "model_from",
        "VARCHAR",
        "Routing or downgrade: the model the request named before it was (or would have been) moved; in enforce "
        "mode the `requests` row records the model it was sent to.",
    ),
    Column("saving_usd", "DOUBLE", "Cache hit: what the answered call had cost (the call not made); NULL otherwise."),
    Column(
        "reason",
        "VARCHAR",
        "Why: the miss kind, the exclusion rule, the window spend against the limit, the failure and the "
        "attempt's result.",
    ),
]

REQUEST_COLUMNS = [c.name for c in REQUESTS]

# Outcomes of calls enforce mode answered itself, without the upstream. They are not failures:
# error counts and rates leave them out (a cached answer is a success, a block a decision).
ANSWERED_BY_PROXY = ("cached", "blocked", "throttled", "refused")
NOT_FAILED = ("ok", *ANSWERED_BY_PROXY)


def polars_schema(columns: list[Column]) -> dict[str, pl.DataType]:
    return {c.name: c.polars_type for c in columns}
