"""Model names as users and APIs write them -> the price entry llm-shadow uses."""

import pytest

from analysis.pricing.names import clean_model_name, home_provider, name_variants
from analysis.pricing.rates import ModelPrice
from analysis.pricing.table import PriceTable


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


RESOLUTION = [
    # (model as written, provider, expected "<provider>/<entry>", why)
    ("gpt-4o-mini-2024-07-18", "openai", "openai/gpt-4o-mini-2024-07-18", "dated snapshot present: exact"),
    ("gpt-4o-mini-2099-01-01", "openai", "openai/gpt-4o-mini", "dated snapshot absent: undated entry"),
    ("gpt-4-0613", "openai", "openai/gpt-4-0613", "short date, exact"),
    ("GPT-4o", "openai", "openai/gpt-4o", "case does not matter"),
    ("openai/gpt-4o", "openai", "openai/gpt-4o", "vendor prefix"),
    ("ft:gpt-4o-mini-2024-07-18:acme:support:abc123", "openai", "openai/ft:gpt-4o-mini-2024-07-18", "fine-tune id"),
    ("gpt-4o", None, "openai/gpt-4o", "no provider: the model's maker"),
    ("gpt-4o", "openai_compatible", "openai/gpt-4o", "unknown gateway serving a first-party model"),
    ("claude-sonnet-4-5-20250929", "anthropic", "anthropic/claude-sonnet-4-5-20250929", "exact"),
    ("claude-sonnet-4-5-latest", "anthropic", "anthropic/claude-sonnet-4-5", "-latest alias"),
    ("claude-opus-4-7-20990101", "anthropic", "anthropic/claude-opus-4-7", "unknown date suffix"),
    ("claude-opus-4-6-latest", "anthropic", "anthropic/claude-opus-4-6", "-latest alias"),
    ("claude-haiku-4-5", None, "anthropic/claude-haiku-4-5", "no provider"),
    ("anthropic/claude-sonnet-4.5", "openrouter", "anthropic/claude-sonnet-4-5", "OpenRouter slug, dots"),
    ("anthropic/claude-4.6-sonnet-20260217", "openrouter", "anthropic/claude-sonnet-4-6", "OpenRouter served name"),
    ("anthropic/claude-sonnet-4.5:nitro", "openrouter", "anthropic/claude-sonnet-4-5", "routing variant"),
    ("openai/o3", "openrouter", "openai/o3", "OpenRouter slug"),
    ("x-ai/grok-4.3", "openrouter", "xai/grok-4.3", "x-ai vendor"),
    ("google/gemini-2.5-flash", "openrouter", "gemini/gemini-2.5-flash", "google vendor"),
    ("models/gemini-2.5-flash", "gemini", "gemini/gemini-2.5-flash", "models/ prefix"),
    ("gemini-2.5-pro", "gemini", "gemini/gemini-2.5-pro", "Gemini API entry before Vertex"),
    ("gemini-2.5-flash-lite-001", "gemini", "gemini/gemini-2.5-flash-lite", "-001 version suffix"),
    (
        "gemini-2.5-flash-lite-preview-06-17",
        "gemini",
        "gemini/gemini-2.5-flash-lite-preview-09-2025",
        "preview date: the newest preview of that name",
    ),
    ("gemini-3-flash-preview", "gemini", "gemini/gemini-3-flash-preview", "preview exact"),
    ("gpt-4o", "azure", "azure/gpt-4o", "Azure's own price"),
    ("gpt-35-turbo", "azure", "azure/gpt-35-turbo", "Azure spelling, exact"),
    ("gpt-6-rosalind", "azure", "openai/gpt-6-rosalind", "not in Azure's list: OpenAI's price"),
    ("openai/gpt-oss-120b", "groq", "groq/openai/gpt-oss-120b", "host's own price for an open model"),
    ("gpt-oss-120b", "cerebras", "cerebras/gpt-oss-120b", "host's own price"),
    (
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together",
        "together/meta-llama/llama-3.3-70b-instruct-turbo",
        "case-insensitive, slashes kept",
    ),
    ("deepseek-v4-flash", "deepseek", "deepseek/deepseek-v4-flash", "exact"),
    ("mistral-large-latest", "mistral", "mistral/mistral-large-latest", "-latest present: exact"),
    ("grok-4.3", "xai", "xai/grok-4.3", "exact"),
]


@pytest.mark.parametrize(
    ("model", "provider", "expected", "why"), RESOLUTION, ids=[r[3] + ":" + r[0] for r in RESOLUTION]
)
def test_resolves(table, model, provider, expected, why):
    price = table.resolve(model, provider)
    assert price is not None, why
    assert price.label.lower() == expected.lower(), why


UNRESOLVED = [
    ("llama3", "openai_compatible", "a self-hosted model has no list price"),
    ("gpt-oss-120b", "openai_compatible", "open model on an unknown host"),
    ("meta-llama/llama-4-scout", "openrouter", "no vendor price to borrow"),
    ("gpt-unknown-9", "openai", "unknown model"),
    ("gpt-4o", "groq", "a host does not borrow another provider's price"),
    ("my-gpt4o-prod", "azure", "deployment name without a deployment map"),
    ("", "openai", "empty name"),
    (None, "openai", "no name"),
]


@pytest.mark.parametrize(("model", "provider", "why"), UNRESOLVED, ids=[r[2] for r in UNRESOLVED])
def test_does_not_resolve(table, model, provider, why):
    assert table.resolve(model, provider) is None, why


def test_azure_deployment_map():
    version, prices = (
        PriceTable.load().version,
        {
            "azure": {
                "gpt-4o": ModelPrice("azure", "gpt-4o", "chat", "t", {("standard", 0): {"input": 1.0, "output": 2.0}})
            },
        },
    )
    table = PriceTable(version, prices, azure_deployments={"my-gpt4o-prod": "gpt-4o"})
    assert table.resolve("my-gpt4o-prod", "azure").label == "azure/gpt-4o"
    assert table.resolve("my-gpt4o-prod", "openai") is None  # deployments are Azure's only


def test_dated_alias_picks_newest_snapshot():
    def price(name):
        return ModelPrice("anthropic", name, "chat", "t", {("standard", 0): {"input": 1.0, "output": 1.0}})

    prices = {"anthropic": {n: price(n) for n in ("claude-x-1-20240101", "claude-x-1-20250101")}}
    table = PriceTable("t", prices)
    assert table.resolve("claude-x-1-latest", "anthropic").name == "claude-x-1-20250101"
    assert table.resolve("claude-x-1", "anthropic").name == "claude-x-1-20250101"


def test_resolution_is_cached(table):
    first = table.resolve("anthropic/claude-sonnet-4.5", "openrouter")
    assert table.resolve("anthropic/claude-sonnet-4.5", "openrouter") is first
    assert ("anthropic/claude-sonnet-4.5", "openrouter") in table._resolved


def test_name_variants_most_exact_first():
    variants = name_variants("claude-4.6-sonnet-20260217")
    assert variants[0] == "claude-4.6-sonnet-20260217"
    assert variants.index("claude-sonnet-4-6-20260217") < variants.index("claude-sonnet-4-6")
    assert name_variants("claude-sonnet-4-0")[-1] == "claude-sonnet-4"
    assert "gpt-3.5-turbo" in name_variants("gpt-35-turbo")


def test_clean_model_name():
    assert clean_model_name(" models/gemini-2.5-pro ") == "gemini-2.5-pro"
    assert clean_model_name("~anthropic/claude-opus-latest") == "anthropic/claude-opus-latest"
    assert clean_model_name("x-ai/grok-4:online") == "x-ai/grok-4"
    assert clean_model_name("minimax/minimax-m2:free") == "minimax/minimax-m2:free"  # priced apart


def test_home_provider():
    assert [
        home_provider(n)
        for n in (
            "gpt-5",
            "o3-mini",
            "claude-x",
            "gemini-2.5-pro",
            "grok-4",
            "codestral-latest",
            "deepseek-chat",
            "llama-3",
        )
    ] == ["openai", "openai", "anthropic", "gemini", "xai", "mistral", "deepseek", None]


def test_model_identity_knows_served_snapshots_and_aliases():
    from analysis.pricing.identity import model_identity, same_model, serves_endpoint

    assert same_model("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    assert same_model("claude-3-5-sonnet-20241022", "claude-3.5-sonnet")
    assert same_model("claude-sonnet-4-5-20250929", "claude-sonnet-4-5")
    assert same_model("gemini-2.0-flash-001", "models/gemini-2.0-flash")
    assert same_model("gpt-35-turbo", "gpt-3.5-turbo")
    assert not same_model("gpt-4o-mini", "gpt-4o")
    assert not same_model("gpt-4.1-mini", "gpt-4.1-nano")
    assert model_identity(None) is None
    assert serves_endpoint("embedding", "embeddings") and not serves_endpoint("chat", "embeddings")
    assert serves_endpoint("chat", "chat") and not serves_endpoint("embedding", "messages")
