"""Turn a LiteLLM price map into llm-shadow's price snapshot.

LiteLLM's `model_prices_and_context_window.json` is the de-facto community price list: one
entry per model key with USD-per-token fields (`input_cost_per_token`,
`cache_read_input_token_cost`, `..._above_200k_tokens`, `..._batches`, `..._priority`, ...).
`snapshot_from_litellm` keeps only what llm-shadow prices (text models of the providers it
records) and rewrites each entry in llm-shadow's own words: a table per provider, model names
as the provider's API spells them (LiteLLM's `gemini/`, `azure/`, `groq/` key prefixes
removed), and rate sets keyed "<service>" or "<service>.above_<N>k" mapping a token kind
(`input`, `cached_input`, `cache_write`, `cache_write_1h`, `output`, `reasoning_output`, and the
audio and image rates `input_audio`, `output_audio`, `input_image`, `output_image`) to USD per
million tokens. The same function builds the bundled snapshot
(analysis/pricing/snapshot/build_snapshot.py) and reads a map a user imports (`llm-shadow prices import`).
"""

import json
import re
from typing import Any

# LiteLLM's `litellm_provider` -> llm-shadow provider (the names analysis.parsers.detect gives).
# Earlier entries win when two LiteLLM keys give the same provider and model name: the
# Gemini API's own prices before Vertex AI's.
PROVIDER_OF_LITELLM = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "azure_text": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex_ai-language-models": "gemini",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "xai": "xai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "fireworks_ai-embedding-models": "fireworks",
    "cerebras": "cerebras",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    # LiteLLM files some Gemini models (gemini-2.0-flash, gemini-3-pro-preview, ...) only under
    # `vertex_ai/...` with this provider; Google charges the same list prices on Vertex AI and
    # the Gemini API, so its Gemini entries fill what the Gemini API entries lack (last rank).
    "vertex_ai": "gemini",
}
# LiteLLM providers of which only some model families are kept: the rest are other vendors'
# models (Claude, Grok, Mistral OCR on Vertex AI) or not text models.
_FAMILIES_KEPT = {"vertex_ai": ("gemini", "gemma")}
_LITELLM_RANK = {name: rank for rank, name in enumerate(PROVIDER_OF_LITELLM)}

MODES = ("chat", "completion", "responses", "embedding")

# Key prefixes LiteLLM puts in front of a provider's own model name.
_KEY_PREFIXES = (
    "azure/",
    "gemini/",
    "vertex_ai/",
    "groq/",
    "mistral/",
    "deepseek/",
    "xai/",
    "together_ai/",
    "fireworks_ai/",
    "cerebras/",
    "perplexity/",
    "openrouter/",
    "openai/",
    "anthropic/",
    "text-completion-openai/",
)

KINDS = (
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning_output",
    "input_audio",
    "output_audio",
    "input_image",
    "output_image",
)
SERVICES = ("standard", "batch", "priority", "flex")

_FIELD_KIND = {
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_token": "output",
    "output_cost_per_reasoning_token": "reasoning_output",
    "input_cost_per_audio_token": "input_audio",
    "output_cost_per_audio_token": "output_audio",
    "input_cost_per_image_token": "input_image",
    "output_cost_per_image_token": "output_image",
}
_SERVICE_OF_SUFFIX = {None: "standard", "batches": "batch", "priority": "priority", "flex": "flex"}
_FIELD = re.compile(
    r"^(?P<field>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost|output_cost_per_reasoning_token"
    r"|input_cost_per_audio_token|output_cost_per_audio_token|input_cost_per_image_token|output_cost_per_image_token)"
    r"(?P<one_hour>_above_1hr)?"
    r"(?:_above_(?P<above>\d+)k_tokens)?"
    r"(?:_(?P<service>batches|priority|flex))?$"
)


def rate_set_key(service: str, above_tokens: int) -> str:
    """'standard', 'batch', 'standard.above_200k', ...: how a rate set is named in files."""
    if above_tokens == 0:
        return service
    return f"{service}.above_{above_tokens // 1000}k"


def parse_rate_set_key(key: str) -> tuple[str, int]:
    """Inverse of rate_set_key; raises ValueError on a name it does not know."""
    service, _, above = key.partition(".")
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r} in rate set {key!r}")
    if not above:
        return service, 0
    match = re.fullmatch(r"above_(\d+)k", above)
    if not match:
        raise ValueError(f"unknown rate set {key!r} (expected e.g. 'standard.above_200k')")
    return service, int(match.group(1)) * 1000


def per_million(usd_per_token: float) -> float:
    """USD per token -> USD per million tokens, without float noise (2.5e-06 -> 2.5)."""
    return round(usd_per_token * 1_000_000, 9)


def model_name_of_key(key: str) -> str:
    for prefix in _KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def rates_of_entry(entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The rate sets of one LiteLLM entry, USD per million tokens."""
    rates: dict[str, dict[str, float]] = {}
    for field, value in entry.items():
        match = _FIELD.match(field)
        if not match or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        kind = _FIELD_KIND[match["field"]]
        if match["one_hour"]:
            if kind != "cache_write":
                continue
            kind = "cache_write_1h"
        if kind.startswith("cache_write") and value == 0:
            # LiteLLM lists 0 for DeepSeek, which bills cache-miss tokens at the input
            # price; no provider writes a cache for free, so leave the price to the fallback.
            continue
        above = int(match["above"]) * 1000 if match["above"] else 0
        key = rate_set_key(_SERVICE_OF_SUFFIX[match["service"]], above)
        rates.setdefault(key, {})[kind] = per_million(float(value))
    # DeepSeek's entries sometimes name the cache-hit price only this way.
    cache_hit = entry.get("input_cost_per_token_cache_hit")
    standard = rates.get("standard", {})
    if isinstance(cache_hit, int | float) and "cached_input" not in standard and standard:
        standard["cached_input"] = per_million(float(cache_hit))
    return rates


def snapshot_from_litellm(litellm_map: dict[str, Any], version: str) -> dict[str, Any]:
    """The llm-shadow snapshot (see module docstring) of a LiteLLM price map.

    Raises ValueError when the map holds no entry llm-shadow can use.
    """
    chosen: dict[tuple[str, str], tuple[tuple[int, int, str], dict[str, Any]]] = {}
    for key, entry in litellm_map.items():
        if not isinstance(entry, dict) or key == "sample_spec":
            continue
        litellm_provider = entry.get("litellm_provider")
        provider = PROVIDER_OF_LITELLM.get(litellm_provider)  # type: ignore[arg-type]
        if provider is None or entry.get("mode") not in MODES:
            continue
        name = model_name_of_key(key)
        families = _FAMILIES_KEPT.get(litellm_provider)  # type: ignore[arg-type]
        if families and not name.startswith(families):
            continue
        rates = rates_of_entry(entry)
        standard = rates.get("standard", {})
        if "input" not in standard:
            continue
        if "output" not in standard and entry["mode"] != "embedding":
            continue
        # Prefer the higher-ranked LiteLLM provider, then the key LiteLLM spells with its
        # provider prefix (its canonical key for every provider but OpenAI/Anthropic).
        rank = (_LITELLM_RANK[litellm_provider], 0 if key != name else 1, key)
        previous = chosen.get((provider, name))
        if previous is None or rank < previous[0]:
            record = {"mode": entry["mode"], "from": key, "rates": rates}
            chosen[(provider, name)] = (rank, record)
    if not chosen:
        raise ValueError("no usable model prices in this map (is it a LiteLLM price map?)")
    models: dict[str, dict[str, Any]] = {}
    for (provider, name), (_, record) in sorted(chosen.items()):
        models.setdefault(provider, {})[name] = record
    return {"version": version, "models": models}


def looks_like_litellm_map(data: Any) -> bool:
    """A JSON object whose values are LiteLLM entries (carry litellm_provider or a cost)."""
    if not isinstance(data, dict) or not data:
        return False
    entries = [v for k, v in data.items() if k != "sample_spec"]
    return (
        bool(entries)
        and all(isinstance(v, dict) for v in entries)
        and any("litellm_provider" in v or "input_cost_per_token" in v for v in entries)
    )


def dump_snapshot(snapshot: dict[str, Any]) -> str:
    """The snapshot as JSON text with one model per line, so a price change is a one-line diff."""
    lines = ["{", f'  "version": {json.dumps(snapshot["version"])},']
    if "source" in snapshot:
        lines.append(f'  "source": {json.dumps(snapshot["source"], sort_keys=True)},')
    lines.append('  "models": {')
    providers = sorted(snapshot["models"])
    for p_index, provider in enumerate(providers):
        lines.append(f"    {json.dumps(provider)}: {{")
        names = sorted(snapshot["models"][provider])
        for n_index, name in enumerate(names):
            record = json.dumps(snapshot["models"][provider][name], sort_keys=True)
            comma = "," if n_index < len(names) - 1 else ""
            lines.append(f"      {json.dumps(name)}: {record}{comma}")
        lines.append("    }" + ("," if p_index < len(providers) - 1 else ""))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
