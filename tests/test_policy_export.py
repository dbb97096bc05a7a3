"""`llm-shadow policy export --to litellm`: the LiteLLM proxy config closest to a policy file, as
YAML LiteLLM reads (keys from its documented config.yaml), and the list of what it cannot say."""

from pathlib import Path

import yaml
from typer.testing import CliRunner

from analysis.simulate.policy import load_policy
from cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.toml"


def export(*args: str) -> str:
    result = CliRunner().invoke(app, ["policy", "export", "--to", "litellm", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def not_expressed(text: str) -> list[str]:
    return [line.removeprefix("#   - ") for line in text.splitlines() if line.startswith("#   - ")]


def test_the_example_policy_as_a_litellm_config():
    text = export(str(EXAMPLE))
    config = yaml.safe_load(text)
    assert list(config) == ["model_list", "litellm_settings", "router_settings"]
    models = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert models["*"] == {"model": "*"}  # every other model passes through
    assert models["gpt-4o-mini"] == {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"}
    assert models["gpt-4o"]["model"] == "openai/gpt-4o"
    settings = config["litellm_settings"]
    assert settings["cache"] is True
    assert settings["cache_params"]["type"] == "local"
    assert settings["cache_params"]["ttl"] == 3600
    assert settings["default_key_generate_params"] == {"max_budget": 1000.0, "budget_duration": "30d"}
    assert "max_budget" not in settings  # no global budget in the example
    router = config["router_settings"]
    assert router["fallbacks"] == [{"gpt-4o": ["gpt-4o-mini"]}]
    assert (router["num_retries"], router["timeout"]) == (2, 30)
    assert "model_group_alias" not in router  # both routing rules have conditions beyond the model

    notes = not_expressed(text)
    policy = load_policy(EXAMPLE)
    entries = [policy.exact_cache, policy.semantic_cache, *policy.routing, *policy.batch, *policy.budgets]
    entries += [*policy.rate_limits, *policy.fallbacks]
    for entry in entries:  # nothing dropped silently: every entry is exported or listed
        assert entry.name in text, entry.name
    listed = "\n".join(notes)
    for name in ("semantic-cache", "small-gpt-4o-to-mini", "classification-to-nano", "reports-by-batch"):
        assert f"'{name}'" in listed
    assert "budget 'team-daily' (team, 200.0 USD a day): LiteLLM refuses calls over a budget" in listed
    assert "rate limit 'per-user-burst' (user)" in listed
    assert "gpt-4o-2024-*" in listed


POLICY = """
name = "mapped"

[cache.semantic]
name = "similar"
threshold = 0.9
ttl = "30m"
scope = "global"
embedder = "hashing"
allow_sampling = true
allow_unset_temperature = true
allow_tools = true

[[routing]]
name = "old-to-new"
model = ["gpt-4", "gpt-4-turbo"]
to = "gpt-4o"

[[fallback]]
name = "everything"
chain = [
  { to = "claude-3-5-haiku-latest" },
  { to = "gpt-4o-mini", to_url = "https://backup.example.com/v1", to_api_key_env = "BACKUP_KEY" },
]

[[budget]]
name = "all"
window = "day"
limit_usd = 50

[[rate_limit]]
name = "mini-rate"
model = "gpt-4o-mini"
requests_per_minute = 100
tokens_per_minute = 50000

[[rate_limit]]
name = "per-team"
scope = "team"
requests_per_minute = 10
"""


def test_what_maps_lands_under_litellms_keys(tmp_path):
    policy = tmp_path / "mapped.toml"
    policy.write_text(POLICY)
    out = tmp_path / "litellm.yaml"
    result = CliRunner().invoke(app, ["policy", "export", str(policy), "--to", "litellm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Wrote the LiteLLM config to {out}" in result.output
    assert "per-team" in result.output  # what is not expressed is said on the terminal too
    config = yaml.safe_load(out.read_text())
    settings, router = config["litellm_settings"], config["router_settings"]
    assert (settings["max_budget"], settings["budget_duration"]) == (50, "1d")
    assert settings["cache_params"]["type"] == "redis-semantic"
    assert settings["cache_params"]["similarity_threshold"] == 0.9
    assert settings["cache_params"]["ttl"] == 1800
    assert router["model_group_alias"] == {"gpt-4": "gpt-4o", "gpt-4-turbo": "gpt-4o"}
    assert router["default_fallbacks"] == ["claude-3-5-haiku-latest", "everything-gpt-4o-mini"]
    models = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert models["claude-3-5-haiku-latest"]["model"] == "anthropic/claude-3-5-haiku-latest"
    assert models["everything-gpt-4o-mini"] == {
        "model": "openai/gpt-4o-mini",
        "api_key": "os.environ/BACKUP_KEY",
        "api_base": "https://backup.example.com/v1",
    }
    assert (models["gpt-4o-mini"]["rpm"], models["gpt-4o-mini"]["tpm"]) == (100, 50000)
    listed = "\n".join(not_expressed(out.read_text()))
    assert "rate limit 'per-team' (team): LiteLLM keeps team limits in its database: set rpm_limit 10" in listed
    assert "'similar'" in listed  # the embedder differs


def test_unknown_gateway_and_bad_policy_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(app, ["policy", "export", str(EXAMPLE), "--to", "portkey"])
    assert result.exit_code != 0 and "unknown gateway 'portkey'" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[[budget]]\nname = 'x'\nwindow = 'fortnight'\nlimit_usd = 1\n")
    result = CliRunner().invoke(app, ["policy", "export", str(bad)])
    assert result.exit_code != 0 and "Traceback" not in result.output and "window" in result.output
