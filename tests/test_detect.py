"""Which calls are LLM calls, and of which provider and wire format."""

import pytest

from analysis.parsers.detect import Target, detect

VERTEX = "/v1/projects/p/locations/us-east5/publishers"


@pytest.mark.parametrize(
    ("host", "path", "headers", "target"),
    [
        ("api.openai.com", "/v1/chat/completions", {}, Target("openai", "chat", "openai_chat")),
        ("api.openai.com", "/v1/responses", {}, Target("openai", "responses", "openai_responses")),
        (
            "my.openai.azure.com",
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            {},
            Target("azure", "chat", "openai_chat"),
        ),
        ("api.anthropic.com", "/v1/messages", {}, Target("anthropic", "messages", "anthropic_messages")),
        (
            "api.anthropic.com",
            "/v1/messages/batches/msgbatch_1/results",
            {},
            Target("anthropic", "batches", "anthropic_messages"),
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            {},
            Target("gemini", "generate_content", "gemini"),
        ),
        # google-genai 3.6 and later call the v1 API; earlier releases v1beta.
        (
            "generativelanguage.googleapis.com",
            "/v1/models/gemini-2.5-flash:generateContent",
            {},
            Target("gemini", "generate_content", "gemini"),
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1/models/gemini-embedding-001:batchEmbedContents",
            {},
            Target("gemini", "embeddings", "gemini"),
        ),
        (
            "localhost",
            "/v1/models/gemini-2.5-flash:streamGenerateContent",
            {},
            Target("gemini_compatible", "generate_content", "gemini"),
        ),
        ("openrouter.ai", "/api/v1/chat/completions", {}, Target("openrouter", "chat", "openai_chat")),
        (
            "us-east5-aiplatform.googleapis.com",
            f"{VERTEX}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
            {},
            Target("vertex", "messages", "anthropic_messages"),
        ),
        (
            "aiplatform.googleapis.com",
            f"{VERTEX}/google/models/gemini-2.5-flash:generateContent",
            {},
            Target("vertex", "generate_content", "gemini"),
        ),
        # Unknown hosts (a local vLLM, Ollama, a gateway) by the shape of path and headers.
        ("localhost", "/v1/chat/completions", {}, Target("openai_compatible", "chat", "openai_chat")),
        (
            "localhost",
            "/v1/messages",
            {"anthropic-version": "2023-06-01"},
            Target("anthropic_compatible", "messages", "anthropic_messages"),
        ),
        ("localhost", "/v1/messages", {}, None),  # a chat app's own /messages is not Anthropic's
        ("localhost", "/health", {}, None),
        ("example.com", "/index.html", {}, None),
    ],
)
def test_detect(host, path, headers, target):
    assert detect(host, path, headers) == target
