"""Importing prices: override files and LiteLLM maps, stored under <data>/prices/."""

import hashlib
import json
from pathlib import Path

import pytest

from analysis.parsers.exchange import Usage
from analysis.pricing.files import PriceFileError, bundled_snapshot
from analysis.pricing.importing import import_price_file, reset_prices
from analysis.pricing.overrides import document_digest
from analysis.pricing.table import PriceTable

SNAPSHOT_VERSION = bundled_snapshot()[0]

OVERRIDES_TOML = """
[models."gpt-4o"]
provider = "openai"
input_per_mtok = 2.0
output_per_mtok = 8.0
cached_input_per_mtok = 1.0

[models."acme-finetune"]
input_per_mtok = 0.5
output_per_mtok = 1.5
  [models."acme-finetune".batch]
  input_per_mtok = 0.25
  output_per_mtok = 0.75
  [models."acme-finetune".above_100k]
  input_per_mtok = 1.0
  output_per_mtok = 3.0

[models."claude-sonnet-4-5"]
provider = "anthropic"
inherit = true
output_per_mtok = 12.0

[azure_deployments]
"my-gpt4o-prod" = "gpt-4o"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def stored_files(data_dir: Path) -> dict[str, bytes]:
    prices = data_dir / "prices"
    return {p.name: p.read_bytes() for p in sorted(prices.iterdir())} if prices.exists() else {}


def test_toml_override_round_trip(tmp_path, data_dir):
    result = import_price_file(write(tmp_path / "prices.toml", OVERRIDES_TOML), data_dir)
    assert result.kind == "overrides" and result.models == 3

    table = PriceTable.load(data_dir)
    assert table.version == result.version
    assert table.version.startswith(SNAPSHOT_VERSION + "+") and len(table.version) == len(SNAPSHOT_VERSION) + 9

    # gpt-4o at OpenAI: 600 x 2.0 + 400 x 1.0 + 200 x 8.0 (negotiated prices)
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    cost = table.cost(provider="openai", model="gpt-4o-2024-08-06", usage=usage)
    assert cost.cost_usd == pytest.approx((600 * 2.0 + 400 * 1.0 + 200 * 8.0) / 1e6)
    assert cost.price_version == table.version and cost.priced_as == "openai/gpt-4o"

    # the override names provider openai: Azure keeps its own list price (2.50 / 1.25 / 10)
    azure = table.cost(provider="azure", model="my-gpt4o-prod", usage=usage)
    assert azure.cost_usd == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6)
    assert azure.priced_as == "azure/gpt-4o"


def test_override_without_provider_applies_everywhere_with_service_and_tier(tmp_path, data_dir):
    import_price_file(write(tmp_path / "prices.toml", OVERRIDES_TOML), data_dir)
    table = PriceTable.load(data_dir)
    small = Usage(input_tokens=10_000, output_tokens=1_000)
    for provider in ("openai_compatible", "together", None):
        cost = table.cost(provider=provider, model="acme-finetune", usage=small)
        assert cost.cost_usd == pytest.approx((10_000 * 0.5 + 1_000 * 1.5) / 1e6)
    batch = table.cost(provider=None, model="acme-finetune", usage=small, batch=True)
    assert batch.cost_usd == pytest.approx((10_000 * 0.25 + 1_000 * 0.75) / 1e6)
    long_prompt = table.cost(provider=None, model="acme-finetune", usage=Usage(input_tokens=150_000, output_tokens=0))
    assert long_prompt.cost_usd == pytest.approx(150_000 * 1.0 / 1e6)


def test_inherit_keeps_the_bundled_prices_not_given(tmp_path, data_dir):
    import_price_file(write(tmp_path / "prices.toml", OVERRIDES_TOML), data_dir)
    price = PriceTable.load(data_dir).resolve("claude-sonnet-4-5-20250929", "anthropic")
    assert price.source == "override of litellm:claude-sonnet-4-5"
    assert price.rates[("standard", 0)] == {
        "input": 3.0,
        "cached_input": 0.3,
        "cache_write": 3.75,
        "cache_write_1h": 6.0,
        "output": 12.0,
    }
    assert price.rates[("batch", 0)]["input"] == 1.5


def test_json_override_equals_toml(tmp_path, data_dir):
    document = {
        "models": {"acme-x": {"input_per_mtok": 1, "output_per_mtok": 2}},
        "azure_deployments": {"prod": "gpt-4o"},
    }
    result = import_price_file(write(tmp_path / "o.json", json.dumps(document)), data_dir)
    assert result.version == f"{SNAPSHOT_VERSION}+{document_digest(document)}"
    other = tmp_path / "other"
    toml = '[models."acme-x"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n[azure_deployments]\nprod = "gpt-4o"\n'
    assert import_price_file(write(tmp_path / "o.toml", toml), other).version == result.version


def test_reimport_replaces_overrides_and_changes_version(tmp_path, data_dir):
    first = import_price_file(
        write(tmp_path / "a.toml", "[models.a]\ninput_per_mtok = 1\noutput_per_mtok = 1\n"), data_dir
    )
    second = import_price_file(
        write(tmp_path / "b.toml", "[models.b]\ninput_per_mtok = 1\noutput_per_mtok = 1\n"), data_dir
    )
    assert first.version != second.version
    table = PriceTable.load(data_dir)
    assert table.resolve("a", None) is None and table.resolve("b", None) is not None
    assert reset_prices(data_dir) == [data_dir / "prices" / "overrides.json"]
    assert PriceTable.load(data_dir).version == SNAPSHOT_VERSION


def test_litellm_map_import_replaces_the_snapshot(tmp_path, data_dir):
    litellm_map = {
        "sample_spec": {"litellm_provider": "one of ..."},
        "gpt-4o": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 2e-06,
            "output_cost_per_token": 8e-06,
            "cache_read_input_token_cost": 5e-07,
        },
        "gemini/gemini-9-pro": {
            "litellm_provider": "gemini",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 4e-06,
            "input_cost_per_token_above_200k_tokens": 2e-06,
            "output_cost_per_token_above_200k_tokens": 6e-06,
        },
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
    }
    path = write(tmp_path / "model_prices_and_context_window.json", json.dumps(litellm_map))
    result = import_price_file(path, data_dir)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    assert result.kind == "litellm" and result.models == 2 and result.version == f"litellm-import-{digest}"

    table = PriceTable.load(data_dir)
    assert table.version == result.version
    assert table.resolve("claude-sonnet-4-5", "anthropic") is None  # the bundled table is replaced
    price = table.resolve("models/gemini-9-pro", "gemini")
    assert price.rates == {
        ("standard", 0): {"input": 1.0, "output": 4.0},
        ("standard", 200_000): {"input": 2.0, "output": 6.0},
    }
    cost = table.cost(
        provider="openai", model="gpt-4o", usage=Usage(input_tokens=1_000, cached_input_tokens=1_000, output_tokens=0)
    )
    assert cost.cost_usd == pytest.approx(1_000 * 0.5 / 1e6)

    # overrides stack on an imported map too
    import_price_file(write(tmp_path / "o.toml", "[models.x]\ninput_per_mtok = 1\noutput_per_mtok = 1\n"), data_dir)
    assert PriceTable.load(data_dir).version.startswith(f"litellm-import-{digest}+")


def test_shared_litellm_file_imports(tmp_path, data_dir):
    from tests.conftest import shared_dir

    shared = shared_dir()
    if shared is None:
        pytest.skip("shared data not present")
    result = import_price_file(shared / "data/prices/litellm/model_prices_and_context_window.json", data_dir)
    assert result.models == sum(len(m) for m in bundled_snapshot()[1].values())


BAD_FILES = [
    ("broken.toml", '[models."gpt-4o"\ninput_per_mtok = 1', "not valid TOML"),
    ("broken.json", '{"models": ', "not valid JSON"),
    (
        "typo.toml",
        "[models.x]\ninput_per_mtok = 1\noutput_per_mtok = 1\ninput_per_mtoks = 2\n",
        "unknown key 'input_per_mtoks'",
    ),
    ("negative.toml", "[models.x]\ninput_per_mtok = -1\noutput_per_mtok = 1\n", "expected a price >= 0"),
    ("text.toml", '[models.x]\ninput_per_mtok = "2$"\noutput_per_mtok = 1\n', "expected a number"),
    ("no-output.toml", "[models.x]\ninput_per_mtok = 1\n", "needs output_per_mtok"),
    ("no-input.toml", "[models.x]\noutput_per_mtok = 1\n", "needs input_per_mtok"),
    ("top.toml", "[modles.x]\ninput_per_mtok = 1\n", "unknown top-level key 'modles'"),
    ("inherit.toml", '[models."no-such-model"]\ninherit = true\ninput_per_mtok = 1\n', "nothing"),
    (
        "service.toml",
        "[models.x]\ninput_per_mtok = 1\noutput_per_mtok = 1\n[models.x.turbo]\ninput_per_mtok = 1\n",
        "unknown key 'turbo'",
    ),
    ("deploy.toml", "[azure_deployments]\nprod = 4\n", "expected a model name"),
    ("empty.toml", "", "nothing to import"),
    ("list.json", "[1, 2, 3]", "neither a LiteLLM price map nor an override file"),
    ("empty.json", "{}", "neither a LiteLLM price map nor an override file"),
    (
        "images.json",
        '{"dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 1}}',
        "no usable model prices",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_rejected_and_nothing_changes(tmp_path, data_dir, name, text, message):
    import_price_file(
        write(tmp_path / "good.toml", "[models.kept]\ninput_per_mtok = 1\noutput_per_mtok = 1\n"), data_dir
    )
    before = stored_files(data_dir)
    with pytest.raises(PriceFileError) as raised:
        import_price_file(write(tmp_path / name, text), data_dir)
    if message != "nothing":
        assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert str(tmp_path / name) in str(raised.value)  # says which file
    assert stored_files(data_dir) == before
    assert PriceTable.load(data_dir).resolve("kept", None) is not None


def test_missing_file(tmp_path, data_dir):
    with pytest.raises(PriceFileError, match="cannot read"):
        import_price_file(tmp_path / "nope.toml", data_dir)
    assert stored_files(data_dir) == {}


def test_corrupt_stored_file_is_an_error_not_silently_bundled(data_dir):
    (data_dir / "prices").mkdir(parents=True)
    (data_dir / "prices" / "overrides.json").write_text("{not json")
    with pytest.raises(PriceFileError, match="overrides.json"):
        PriceTable.load(data_dir)


def test_the_documented_override_example_imports(tmp_path, data_dir):
    docs = Path(__file__).resolve().parents[1] / "docs" / "pricing.md"
    example = docs.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    result = import_price_file(write(tmp_path / "example.toml", example), data_dir)
    assert result.models == 4
    table = PriceTable.load(data_dir)
    assert table.resolve("eu-mini", "azure").label == "azure/eu/gpt-4o-mini"
    embed = table.cost(provider="openai", model="acme-embed", usage=Usage(input_tokens=1_000_000, output_tokens=0))
    assert embed.cost_usd == pytest.approx(0.01)
    long_prompt = table.cost(
        provider=None, model="acme-support-finetune", usage=Usage(input_tokens=300_000, output_tokens=1_000)
    )
    assert long_prompt.cost_usd == pytest.approx((300_000 * 1.0 + 1_000 * 3.0) / 1e6)
