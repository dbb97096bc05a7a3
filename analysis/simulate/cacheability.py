"""Which requests a cache may answer, and if not, why not.

A cache that replays an answer is only honest for requests that would have got the same
answer again: by default temperature 0, n 1 or unset, no tools (a tool call can have effects
in the caller's world), not streamed (a streaming client expects tokens as they come). A
request that sets no temperature is sampled by the provider (OpenAI, Anthropic and Gemini
default to about 1.0), so it counts as sampling too (`temperature_unset`), except on the
embeddings endpoint, which does not sample. Each rule can be relaxed in the policy
(`allow_sampling`, `allow_unset_temperature`, `allow_tools`, `allow_streaming`).
The first failing rule, in the order of EXCLUSION_REASONS, is the one reported, so the results
can say how many repeated requests were excluded and why. The sampling and tools rules come
before `no_prompt_hash`: they exclude a request whatever its hash, so enforce mode need not hash
the prompt of a request that every cache excludes by them (`reason_before_hash`; a live proxy
decides each request on its event loop, where the hash costs ~12 us). A request with no prompt
hash that also fails one of them (a batch API call sets no temperature) is reported under that
rule.

A streamed answer is complete once recorded, and enforce mode can replay it as a stream: a
request excluded only because it streamed cannot be answered from the cache, but its answer is
stored (`may_store`) for later streamed requests (the caches are keyed by form, streamed or not:
enforce mode replays the stored bytes as they came).
"""

import polars as pl

from analysis.pricing.identity import EMBEDDING_ENDPOINTS
from analysis.simulate.matching import Record
from analysis.simulate.policy import CacheRules

EXCLUSION_REASONS = ("temperature", "temperature_unset", "n", "tools", "no_prompt_hash", "streaming")


def may_store(reason: str | None) -> bool:
    """Whether the answer of a request excluded for `reason` is still stored as a source."""
    return reason is None or reason == "streaming"


def reason_before_hash(record: Record, rules: CacheRules) -> str | None:
    """The first rule before `no_prompt_hash` (sampling, tools) that excludes `record`, or None:
    a cache with `rules` reads the request's prompt hash only when this is None."""
    if not rules.allow_sampling:
        temperature = record.get("temperature")
        if temperature is not None and temperature != 0:
            return "temperature"
        if temperature is None and not rules.allow_unset_temperature:
            if record.get("endpoint") not in EMBEDDING_ENDPOINTS:
                return "temperature_unset"
        n = record.get("n")
        if n is not None and n != 1:
            return "n"
    if not rules.allow_tools and record.get("has_tools"):
        return "tools"
    return None


def exclusion_reason(record: Record, rules: CacheRules) -> str | None:
    """Why `record` may not be answered from a cache, or None when it may."""
    reason = reason_before_hash(record, rules)
    if reason is not None:
        return reason
    if not record.get("prompt_hash"):
        return "no_prompt_hash"
    if not rules.allow_streaming and record.get("stream"):
        return "streaming"
    return None


def exclusion_reasons(frame: pl.DataFrame, rules: CacheRules) -> pl.Series:
    """`exclusion_reason` for every row of a `requests` frame."""
    tests: list[tuple[str, pl.Expr]] = []
    if not rules.allow_sampling:
        tests.append(("temperature", pl.col("temperature").is_not_null() & (pl.col("temperature") != 0)))
        if not rules.allow_unset_temperature:
            sampled = ~pl.col("endpoint").is_in(list(EMBEDDING_ENDPOINTS)).fill_null(False)
            tests.append(("temperature_unset", pl.col("temperature").is_null() & sampled))
        tests.append(("n", pl.col("n").is_not_null() & (pl.col("n") != 1)))
    if not rules.allow_tools:
        tests.append(("tools", pl.col("has_tools").fill_null(False)))
    tests.append(("no_prompt_hash", pl.col("prompt_hash").is_null() | (pl.col("prompt_hash") == "")))
    if not rules.allow_streaming:
        tests.append(("streaming", pl.col("stream").fill_null(False)))
    reason = pl.lit(None, dtype=pl.Utf8)
    for name, test in reversed(tests):
        reason = pl.when(test.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    return frame.select(pl.col("id"), reason.alias("r"))["r"]
