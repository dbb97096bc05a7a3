"""Which provider and endpoint an HTTP request is, from its host, path and headers.

Known provider hosts are recognised by name; any other host (a local vLLM, Ollama, LM Studio,
a company gateway) is recognised by the shape of its path and headers. A request that matches
nothing is not an LLM call: the recorder lets it pass unrecorded.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    provider: str
    endpoint: str
    wire_format: str  # module in analysis.parsers that reads this exchange


KNOWN_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "api.cerebras.ai": "cerebras",
    "api.perplexity.ai": "perplexity",
}
HOST_SUFFIXES = {
    "aiplatform.googleapis.com": "vertex",  # aiplatform... and <region>-aiplatform...
    ".openai.azure.com": "azure",
    ".cognitiveservices.azure.com": "azure",
    ".services.ai.azure.com": "azure",
}

# (path regex, endpoint, wire format). Checked in order; the path has no query string.
# Prefixes such as /api/v1 (OpenRouter), /openai/v1 (Groq) or /v1beta are allowed.
_PATHS = [
    # Claude on Vertex AI: the Messages format, the model in the path.
    (r"/publishers/anthropic/models/[^/:]+:(?:rawPredict|streamRawPredict)$", "messages", "anthropic_messages"),
    (r"/openai/deployments/[^/]+/chat/completions$", "chat", "openai_chat"),
    (r"/openai/deployments/[^/]+/completions$", "completions", "openai_completions"),
    (r"/openai/deployments/[^/]+/embeddings$", "embeddings", "openai_embeddings"),
    (r"/openai/(?:v1/)?responses$", "responses", "openai_responses"),
    (r"/responses/compact$", "responses_compact", "openai_responses"),
    (r"/chat/completions$", "chat", "openai_chat"),
    (r"/responses$", "responses", "openai_responses"),
    (r"/embeddings$", "embeddings", "openai_embeddings"),
    (r"/completions$", "completions", "openai_completions"),
    (r"/messages/batches(?:/.*)?$", "batches", "anthropic_messages"),
    (r"/messages$", "messages", "anthropic_messages"),
    (r"/models/[^/:]+:(?:generateContent|streamGenerateContent)$", "generate_content", "gemini"),
    (r"/models/[^/:]+:(?:embedContent|batchEmbedContents)$", "embeddings", "gemini"),
    (r"/models/[^/:]+:batchGenerateContent$", "batches", "gemini"),
    (r"/batches(?:/.*)?$", "batches", "openai_batches"),
]
_PATH_PATTERNS = [(re.compile(p), endpoint, fmt) for p, endpoint, fmt in _PATHS]

LLM_PATH_HINTS = ("/v1/", "/v1beta/", "/openai/", "/api/")


def provider_for_host(host: str) -> str | None:
    host = host.lower().rstrip(".")
    if host in KNOWN_HOSTS:
        return KNOWN_HOSTS[host]
    for suffix, provider in HOST_SUFFIXES.items():
        if host.endswith(suffix):
            return provider
    return None


def detect(host: str, path: str, headers: Mapping[str, str] | None = None, method: str = "POST") -> Target | None:
    """Return what this request is, or None when it is not an LLM API call.

    `headers` is looked up by lower-case name (a dict with lower-case keys, or a case-insensitive
    mapping such as mitmproxy's Headers). `path` may carry a query string; it is ignored.
    """
    headers = headers or {}
    path = path.split("?", 1)[0]
    provider = provider_for_host(host)
    for pattern, endpoint, fmt in _PATH_PATTERNS:
        if not pattern.search(path):
            continue
        if path.endswith("/messages") and provider is None and "anthropic-version" not in headers:
            continue  # an unknown host's /messages is Anthropic only with its version header
        if fmt == "gemini" and provider is None and "/v1" not in path:
            continue
        if endpoint != "batches" and method.upper() != "POST":
            return None
        if provider is None:
            provider = _provider_for_unknown_host(fmt)
        return Target(provider, endpoint, fmt)
    return None


def _provider_for_unknown_host(wire_format: str) -> str:
    if wire_format == "anthropic_messages":
        return "anthropic_compatible"
    if wire_format == "gemini":
        return "gemini_compatible"
    return "openai_compatible"
