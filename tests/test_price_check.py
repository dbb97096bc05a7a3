"""The second price table (genai-prices) checks every computed cost; either table can be primary."""

import json
import socket

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.parsers.exchange import Usage
from analysis.pricing.check import Pricing, compare
from analysis.pricing.genai_table import GenaiPricesTable
from analysis.pricing.rates import Cost
from analysis.pricing.table import PriceTable
from analysis.store.datadir import SegmentWriter, Store
from analysis.store.schema import REQUESTS, polars_schema
from cli import app

runner = CliRunner()


def cost(usd: float | None, source: str = "computed") -> Cost:
    return Cost(usd, source, "v")


def test_compare():
    assert compare(cost(1.0), cost(1.009)) == "agree"
    assert compare(cost(1.0), cost(1.02)) == "differ"
    assert compare(cost(None, "unpriced"), cost(0.5)) == "one-sided"
    assert compare(cost(0.5), cost(None, "unpriced")) == "one-sided"
    assert compare(cost(None, "unpriced"), cost(None, "unpriced")) is None
    assert compare(cost(0.3, "provider"), cost(0.5)) is None
    assert compare(cost(0.0), cost(0.0)) == "agree"


def test_genai_prices_uses_its_bundled_data_only(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("genai-prices tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    table = GenaiPricesTable()
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    priced = table.cost(provider="openai", model="gpt-4o", usage=usage)
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per 1M tokens, as in LiteLLM's map
    assert priced.cost_usd == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6)
    assert table.version.startswith("genai-prices-0.")


def test_claude_long_context_tier_differs_and_is_named():
    pricing = Pricing.load()
    usage = Usage(input_tokens=400_000, output_tokens=1_000)
    checked = pricing.cost(provider="anthropic", model="claude-sonnet-4-5", usage=usage)
    assert checked.cost.cost_usd == pytest.approx((400_000 * 3 + 1_000 * 15) / 1e6)  # LiteLLM: no tier
    assert checked.check_cost_usd == pytest.approx((400_000 * 6 + 1_000 * 22.5) / 1e6)  # Anthropic's price
    assert checked.check == "differ"
    short = pricing.cost(provider="anthropic", model="claude-sonnet-4-5", usage=Usage(input_tokens=1_000))
    assert short.check == "agree"


def test_genai_prices_as_primary_and_litellm_checking():
    pricing = Pricing(PriceTable.load(), GenaiPricesTable(), primary="genai-prices")
    usage = Usage(input_tokens=400_000, output_tokens=1_000)
    checked = pricing.cost(provider="anthropic", model="claude-sonnet-4-5", usage=usage)
    assert checked.cost.price_version.startswith("genai-prices-")
    assert checked.cost.cost_usd == pytest.approx((400_000 * 6 + 1_000 * 22.5) / 1e6)
    assert checked.check_version == PriceTable.load().version and checked.check == "differ"


def test_batch_and_flex_prices_in_genai_prices():
    table = GenaiPricesTable()
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    standard = table.cost(provider="gemini", model="gemini-2.5-flash", usage=usage).cost_usd
    batch = table.cost(provider="gemini", model="gemini-2.5-flash", usage=usage, batch=True).cost_usd
    assert standard == pytest.approx(0.30) and batch == pytest.approx(0.15)


def write_rows(data_dir, rows: list[dict]) -> None:
    store = Store(data_dir)
    frame = pl.DataFrame(rows, schema=polars_schema(REQUESTS))
    SegmentWriter(store).write(frame.to_dicts(), [])


def base_row(**values) -> dict:
    row = {c.name: None for c in REQUESTS}
    row.update(
        id=values.pop("id"),
        ts=pl.datetime(2026, 11, 1, time_zone="UTC"),
        endpoint="messages",
        outcome="ok",
        usage_source="provider",
        cached_input_tokens=0,
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=0,
        batch=False,
    )
    row.update(values)
    return row


def test_use_reprice_stats_and_compare_on_stored_calls(data_dir):
    from datetime import UTC, datetime

    rows = [
        base_row(id="a", provider="anthropic", model="claude-sonnet-4-5", input_tokens=400_000, output_tokens=1_000),
        base_row(id="b", provider="openai", model="gpt-4o", input_tokens=1_000, output_tokens=100),
    ]
    for r in rows:
        r["ts"] = datetime(2026, 11, 1, tzinfo=UTC)
        r["cost_source"] = "computed"
        r["cost_usd"] = 0.0
    write_rows(data_dir, rows)

    result = runner.invoke(app, ["stats", "--data", str(data_dir)])
    assert "2 costs were recorded before the second price table checked them" in " ".join(result.output.split())

    assert runner.invoke(app, ["reprice", "--data", str(data_dir)]).exit_code == 0
    stored = {r["id"]: r for r in Store(data_dir).requests_frame().to_dicts()}
    assert (stored["a"]["price_check"], stored["b"]["price_check"]) == ("differ", "agree")
    assert stored["a"]["price_check_version"].startswith("genai-prices-")

    result = runner.invoke(app, ["stats", "--data", str(data_dir)])
    assert "the second price table disagrees on 1 calls" in " ".join(result.output.split())

    result = runner.invoke(app, ["prices", "compare", "--format", "json", "--data", str(data_dir)])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert (listed["model"], listed["price_check"], listed["calls"]) == ("claude-sonnet-4-5", "differ", 1)
    assert (listed["input_litellm"], listed["input_genai"]) == (3.0, 3.0)
    assert "tier above 200,000 input tokens" in listed["note"] and "litellm lacks" in listed["note"]

    result = runner.invoke(app, ["prices", "use", "genai-prices", "--data", str(data_dir)])
    assert result.exit_code == 0 and "Primary price table: genai-prices" in result.stdout
    assert runner.invoke(app, ["reprice", "--data", str(data_dir)]).exit_code == 0
    stored = {r["id"]: r for r in Store(data_dir).requests_frame().to_dicts()}
    assert stored["a"]["price_version"].startswith("genai-prices-")
    assert stored["a"]["cost_usd"] == pytest.approx((400_000 * 6 + 1_000 * 22.5) / 1e6)
    assert stored["a"]["price_check_version"] == PriceTable.load().version


def test_prices_use_rejects_an_unknown_table(data_dir):
    result = runner.invoke(app, ["prices", "use", "nope", "--data", str(data_dir)])
    assert result.exit_code == 1
    assert "unknown price table 'nope'" in result.output and len(result.output.strip().splitlines()) == 1
