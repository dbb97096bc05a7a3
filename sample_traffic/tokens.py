"""Token counts and latencies that agree with the texts on the wire.

OpenAI models are counted exactly with tiktoken (o200k_base; cl100k_base for the embedding model),
with OpenAI's published per-message overhead for chat. Anthropic and Google do not publish their
tokenizers: their counts are o200k counts times a fixed factor (Claude's tokenizer needs about 12%
more tokens for English text, Gemini's about the same), which keeps them plausible and consistent.

Latency: time to first token = a per-model base (jittered) + prefill of the uncached input + hidden
reasoning at the model's speed; then the output at the model's tokens per second.
"""

import json
import math
import os
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tiktoken

REPO = Path(__file__).resolve().parents[1]
CACHE_FILE = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
}


def _tiktoken_cache_dir(name: str) -> str:
    """Where the encoding file is: $TIKTOKEN_CACHE_DIR, the shared data folder, or the project's copy."""
    candidates = [os.environ.get("TIKTOKEN_CACHE_DIR")]
    shared = os.environ.get("LLM_SHADOW_SHARED")
    candidates += [
        shared and str(Path(shared) / "data" / "tiktoken-cache"),
        str(REPO.parent / "shared" / "data" / "tiktoken-cache"),
        str(REPO / "analysis" / "tiktoken_cache"),
    ]
    for candidate in filter(None, candidates):
        if (Path(candidate) / CACHE_FILE[name]).is_file():
            return candidate
    raise FileNotFoundError(f"{name}: no tiktoken cache file (set TIKTOKEN_CACHE_DIR or LLM_SHADOW_SHARED)")


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """Load a tiktoken encoding offline: TIKTOKEN_CACHE_DIR points at the files while it loads."""
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = _tiktoken_cache_dir(name)
    try:
        return tiktoken.get_encoding(name)
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


@cache
def count(text: str, encoding_name: str = "o200k_base") -> int:
    return len(encoding(encoding_name).encode_ordinary(text))


def split_tokens(text: str) -> list[str]:
    """The text as o200k token strings (for streaming deltas); joins back to `text`."""
    enc = encoding("o200k_base")
    pieces: list[str] = []
    pending = b""
    for token in enc.encode_ordinary(text):
        pending += enc.decode_single_token_bytes(token)
        try:
            pieces.append(pending.decode("utf-8"))
            pending = b""
        except UnicodeDecodeError:
            continue  # a multi-byte character split across tokens: wait for the rest
    if pending:
        pieces.append(pending.decode("utf-8", errors="replace"))
    return pieces


# Provider tokenizers relative to o200k_base (see module docstring).
PROVIDER_FACTOR = {"openai": 1.0, "anthropic": 1.12, "gemini": 1.03}


def provider_count(provider: str, text: str) -> int:
    n = count(text)
    return n if provider == "openai" else math.ceil(n * PROVIDER_FACTOR[provider])


def openai_chat_prompt_tokens(messages: list[dict], tools: list[dict] | None = None) -> int:
    """prompt_tokens of a chat completion: 3 per message + its text + 3 priming the reply."""
    total = 3
    for message in messages:
        total += 3 + count(message["role"])
        content = message.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            total += sum(count(part.get("text", "")) for part in content)
        for call in message.get("tool_calls") or []:
            total += 3 + count(call["function"]["name"]) + count(call["function"]["arguments"])
    if tools:
        total += 12 + sum(count(json.dumps(tool["function"], separators=(",", ":"))) for tool in tools)
    return total


# --- Latency ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speed:
    ttft_s: float  # median time to first token for a short prompt
    tokens_per_s: float  # output speed
    prefill_tokens_per_s: float = 25_000.0


SPEEDS = {
    "gpt-4o-mini": Speed(0.35, 85),
    "gpt-4o": Speed(0.45, 70),
    "gpt-4.1": Speed(0.5, 65),
    "gpt-4.1-mini": Speed(0.4, 80),
    "o4-mini": Speed(0.6, 110),
    "o3": Speed(0.9, 160),
    "gpt-5": Speed(0.8, 150),
    "text-embedding-3-small": Speed(0.12, 1, 200_000),
    "claude-sonnet-4-5": Speed(1.1, 60, 15_000),
    "claude-haiku-4-5": Speed(0.55, 110, 30_000),
    "gemini-2.5-flash": Speed(0.45, 190, 40_000),
    "gemini-2.5-pro": Speed(0.9, 150, 30_000),
}


@dataclass(frozen=True)
class Timing:
    ttft_s: float  # request start to first output token (or to the headers of a JSON reply)
    total_s: float  # request start to the last byte


def timing(
    rng: random.Random, model: str, uncached_input: int, output_tokens: int, reasoning_tokens: int = 0
) -> Timing:
    speed = SPEEDS[model]
    tps = speed.tokens_per_s * rng.lognormvariate(0, 0.15)
    ttft = (
        speed.ttft_s * rng.lognormvariate(0, 0.3) + uncached_input / speed.prefill_tokens_per_s + reasoning_tokens / tps
    )
    return Timing(round(ttft, 4), round(ttft + output_tokens / tps, 4))
