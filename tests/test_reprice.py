"""Repricing stored calls and listing unpriced models, on frames and on a real store."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.pricing.files import bundled_snapshot
from analysis.pricing.importing import import_price_file
from analysis.pricing.reprice import reprice_frame, reprice_store
from analysis.pricing.table import PriceTable
from analysis.pricing.unpriced import unpriced_models
from analysis.store.datadir import SegmentWriter, Store
from analysis.store.schema import REQUEST_COLUMNS, REQUESTS, polars_schema
from cli import app

SNAPSHOT_VERSION = bundled_snapshot()[0]
OLD = "litellm-1999-01-01"


def row(**values) -> dict:
    base = dict.fromkeys(REQUEST_COLUMNS)
    base.update(
        id=values.pop("id"),
        ts=datetime(2026, 5, 1, tzinfo=UTC),
        endpoint="chat",
        outcome="ok",
        cached_input_tokens=0,
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=0,
        batch=False,
        price_version=OLD,
    )
    base.update(values)
    return base


ROWS = [
    # recorded with an old table at a wrong price: recomputed 600 x 2.50 + 400 x 1.25 + 200 x 10
    row(
        id="a",
        provider="openai",
        model="gpt-4o-2024-08-06",
        input_tokens=1_000,
        cached_input_tokens=400,
        output_tokens=200,
        cost_usd=1.0,
        cost_source="computed",
    ),
    # the provider's own bill stays as it is
    row(
        id="b",
        provider="openrouter",
        model="anthropic/claude-sonnet-4.5",
        input_tokens=1_000,
        output_tokens=100,
        cost_usd=0.0123,
        cost_source="provider",
    ),
    # a model no table knows: unpriced, twice
    row(
        id="c",
        provider="openai_compatible",
        model="acme-x",
        input_tokens=10_000,
        output_tokens=1_000,
        cost_usd=None,
        cost_source="unpriced",
    ),
    row(
        id="d",
        provider="openai_compatible",
        model="acme-x",
        input_tokens=20_000,
        output_tokens=2_000,
        cost_usd=None,
        cost_source="unpriced",
    ),
    # no token counts: nothing known to be billed
    row(id="e", provider="openai", model="gpt-4o", outcome="client_error", cost_usd=None, cost_source="none"),
    # batch: 1,000 x 1.25 + 1,000 x 5
    row(
        id="f",
        provider="openai",
        model="gpt-4o",
        input_tokens=1_000,
        output_tokens=1_000,
        batch=True,
        cost_usd=None,
        cost_source="unpriced",
    ),
    # an Azure deployment name, the served model unknown to the table
    row(
        id="g",
        provider="azure",
        model="my-gpt4o-prod",
        model_requested="my-gpt4o-prod",
        input_tokens=1_000,
        output_tokens=0,
        cost_usd=None,
        cost_source="unpriced",
    ),
]


def frame() -> pl.DataFrame:
    return pl.DataFrame(ROWS, schema=polars_schema(REQUESTS))


def by_id(df: pl.DataFrame) -> dict[str, dict]:
    return {r["id"]: r for r in df.iter_rows(named=True)}


def test_reprice_frame_with_the_bundled_table():
    table = PriceTable.load()
    before = frame()
    after = reprice_frame(before, table)
    assert after.schema == before.schema and after.height == before.height
    recomputed = (
        "cost_usd",
        "cost_source",
        "price_version",
        "price_check",
        "price_check_cost_usd",
        "price_check_version",
    )
    assert after.drop(recomputed).equals(before.drop(recomputed))
    rows = by_id(after)
    assert rows["a"]["cost_usd"] == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6)
    assert (rows["a"]["cost_source"], rows["a"]["price_version"]) == ("computed", SNAPSHOT_VERSION)
    assert (rows["b"]["cost_usd"], rows["b"]["cost_source"], rows["b"]["price_version"]) == (0.0123, "provider", OLD)
    assert (rows["c"]["cost_usd"], rows["c"]["cost_source"], rows["c"]["price_version"]) == (
        None,
        "unpriced",
        SNAPSHOT_VERSION,
    )
    assert (rows["e"]["cost_usd"], rows["e"]["cost_source"]) == (None, "none")
    assert rows["f"]["cost_usd"] == pytest.approx((1_000 * 1.25 + 1_000 * 5.0) / 1e6)
    assert rows["g"]["cost_source"] == "unpriced"
    # Checked by genai-prices: gpt-4o's list price is the same in both tables.
    assert (rows["a"]["price_check"], rows["a"]["price_check_cost_usd"]) == (
        "agree",
        pytest.approx(rows["a"]["cost_usd"]),
    )
    assert rows["a"]["price_check_version"].startswith("genai-prices-")
    assert rows["b"]["price_check"] is None and rows["e"]["price_check"] is None  # nothing of ours to check
    assert rows["c"]["price_check"] is None  # neither table knows acme-x


def test_reprice_frame_after_overrides(tmp_path, data_dir):
    (tmp_path / "o.toml").write_text(
        '[models."acme-x"]\ninput_per_mtok = 1.0\noutput_per_mtok = 3.0\n'
        '[azure_deployments]\n"my-gpt4o-prod" = "gpt-4o"\n'
    )
    import_price_file(tmp_path / "o.toml", data_dir)
    table = PriceTable.load(data_dir)
    rows = by_id(reprice_frame(frame(), table))
    assert rows["c"]["cost_usd"] == pytest.approx((10_000 * 1.0 + 1_000 * 3.0) / 1e6)
    assert rows["d"]["cost_usd"] == pytest.approx((20_000 * 1.0 + 2_000 * 3.0) / 1e6)
    assert rows["g"]["cost_usd"] == pytest.approx(1_000 * 2.5 / 1e6)  # Azure's gpt-4o list price
    assert {r["price_version"] for r in rows.values() if r["cost_source"] != "provider"} == {table.version}


def test_reprice_frame_empty():
    empty = pl.DataFrame(schema=polars_schema(REQUESTS))
    assert reprice_frame(empty, PriceTable.load()).equals(empty)


@pytest.fixture
def store(data_dir) -> Store:
    store = Store(data_dir)
    writer = SegmentWriter(store)
    writer.write(ROWS[:4], [])
    writer.write(ROWS[4:], [])
    return store


def test_unpriced_models_query(store):
    with store.connect() as con:
        listed = unpriced_models(con, PriceTable.load())
    rows = {(r["provider"], r["model"]): r for r in listed.iter_rows(named=True)}
    assert set(rows) == {("openai_compatible", "acme-x"), ("openai", "gpt-4o"), ("azure", "my-gpt4o-prod")}
    assert rows[("openai_compatible", "acme-x")]["calls"] == 2
    assert rows[("openai_compatible", "acme-x")]["input_tokens"] == 30_000
    assert rows[("openai_compatible", "acme-x")]["priced_now"] is None
    assert rows[("openai", "gpt-4o")]["priced_now"] == "openai/gpt-4o"  # recorded unpriced, priced now
    assert listed["model"].to_list()[0] == "acme-x"  # most calls first


def test_reprice_store(store):
    summary = reprice_store(store, PriceTable.load())
    assert summary.rows == len(ROWS)
    assert summary.changed == 2  # a (wrong cost) and f (was unpriced)
    assert summary.sources == {"computed": 2, "provider": 1, "unpriced": 3, "none": 1}
    stored = by_id(store.requests_frame())
    assert stored["a"]["cost_usd"] == pytest.approx(0.004)
    assert stored["b"]["price_version"] == OLD


runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_missing_import_reprice(store, tmp_path, data_dir):
    result = invoke("prices", "missing", "--format", "json", "--data", data_dir)
    assert result.exit_code == 0, result.output
    missing = json.loads(result.stdout)
    assert [(m["model"], m["calls"]) for m in missing][0] == ("acme-x", 2)

    (tmp_path / "o.toml").write_text('[models."acme-x"]\ninput_per_mtok = 1.0\noutput_per_mtok = 3.0\n')
    result = invoke("prices", "import", tmp_path / "o.toml", "--data", data_dir)
    assert result.exit_code == 0, result.output
    version = PriceTable.load(data_dir).version
    assert version in result.stdout and "reprice" in result.stdout

    result = invoke("reprice", "--data", data_dir)
    assert result.exit_code == 0, result.output
    assert f"Repriced 7 calls with price version {version} (checked against genai-prices-" in " ".join(
        result.stdout.split()
    )
    assert "): 4 changed" in result.stdout

    result = invoke("prices", "missing", "--format", "json", "--data", data_dir)
    assert [m["model"] for m in json.loads(result.stdout)] == ["my-gpt4o-prod"]
    stored = by_id(store.requests_frame())
    assert stored["c"]["cost_usd"] == pytest.approx(0.013) and stored["c"]["price_version"] == version


def test_cli_show_json_and_table(data_dir):
    result = invoke(
        "prices",
        "show",
        "anthropic/claude-sonnet-4.5",
        "--provider",
        "openrouter",
        "--format",
        "json",
        "--data",
        data_dir,
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["resolved"] == "anthropic/claude-sonnet-4-5"
    assert shown["usd_per_million_tokens"]["standard"] == {
        "input": 3.0,
        "cached_input": 0.3,
        "cache_write": 3.75,
        "cache_write_1h": 6.0,
        "output": 15.0,
        "reasoning_output": 15.0,
        "input_audio": 3.0,
        "output_audio": 15.0,
        "input_image": 3.0,
        "output_image": 15.0,
    }
    assert shown["derived"]["standard"] == [
        "reasoning_output",
        "input_audio",
        "output_audio",
        "input_image",
        "output_image",
    ]

    result = invoke("prices", "show", "gemini-2.5-pro", "--provider", "gemini", "--data", data_dir)
    assert result.exit_code == 0, result.output
    assert "standard.above_200k" in result.stdout and "gemini/gemini-2.5-pro" in result.stdout


def test_cli_errors_are_one_line(tmp_path, data_dir):
    (tmp_path / "bad.toml").write_text("[models.x]\ninput_per_mtok = -1\noutput_per_mtok = 1\n")
    for args in (
        ("prices", "import", tmp_path / "bad.toml"),
        ("prices", "show", "no-such-model"),
        ("prices", "show", "gpt-4o", "--format", "xml"),
        ("prices", "missing"),
        ("reprice",),
    ):
        result = invoke(*args, "--data", data_dir)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("Error:") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output
    assert not (data_dir / "prices" / "overrides.json").exists()


def test_cli_reset(tmp_path, data_dir):
    (tmp_path / "o.toml").write_text("[models.x]\ninput_per_mtok = 1\noutput_per_mtok = 1\n")
    invoke("prices", "import", tmp_path / "o.toml", "--data", data_dir)
    result = invoke("prices", "reset", "--data", data_dir)
    assert result.exit_code == 0 and SNAPSHOT_VERSION in result.stdout
