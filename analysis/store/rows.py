"""The rows the recorder writes, as types whose fields are the schema's columns.

`RequestRow` is one row of `requests`, `ContentRow` one of `contents`: their fields have the
names, order and types of `analysis.store.schema.REQUESTS` / `CONTENTS` (a test checks), so a
misspelt column is a TypeError where the row is made, not a NULL in the store. The writer
(`analysis.store.datadir.rows_to_frame`) takes these rows, or dicts whose keys are columns (an
unknown key is an error there too). The recorder hands rows on as dicts (`as_dict`), which the
cleaning and quarantine steps of the sink work on.
"""

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


@dataclass(slots=True, kw_only=True)
class RequestRow:
    id: str
    ts: datetime
    provider: str | None = None
    endpoint: str | None = None
    host: str | None = None
    path: str | None = None
    method: str | None = None
    status: int | None = None
    outcome: str | None = None
    stream: bool | None = None
    finish_reasons: str | None = None
    model_requested: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    audio_input_tokens: int | None = None
    audio_output_tokens: int | None = None
    image_input_tokens: int | None = None
    image_output_tokens: int | None = None
    usage_other_models: str | None = None
    usage_source: str | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    price_version: str | None = None
    price_check: str | None = None
    price_check_cost_usd: float | None = None
    price_check_version: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    key_id: str | None = None
    team: str | None = None
    feature: str | None = None
    user: str | None = None
    prompt_hash: str | None = None
    temperature: float | None = None
    n: int | None = None
    has_tools: bool | None = None
    has_images: bool | None = None
    service_tier: str | None = None
    batch: bool | None = None
    usage_key: str | None = None
    error: str | None = None
    instance: str | None = None
    import_key: str | None = None


@dataclass(slots=True, kw_only=True)
class ContentRow:
    id: str
    ts: datetime
    system_prompt: str | None = None
    prompt_text: str | None = None
    request_json: str | None = None
    response_text: str | None = None


def as_dict(row: "RequestRow | ContentRow") -> dict[str, Any]:
    """The row as a dict of every column, in the schema's order."""
    names = _NAMES.get(type(row))
    if names is None:
        names = _NAMES[type(row)] = tuple(f.name for f in fields(row))
    return {name: getattr(row, name) for name in names}


_NAMES: dict[type, tuple[str, ...]] = {}  # the field names of each row type, read once
