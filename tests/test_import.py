"""`llm-shadow import`: flow files and HAR files go through the same recorder as live calls."""

import openai
import pytest
from mitmproxy import io
from mitmproxy.io import tnetstring
from typer.testing import CliRunner

from addons.import_sources import read_source
from analysis.store.datadir import Store
from cli import SAMPLE_TRAFFIC, app
from tests.test_proxy_openai import API_KEY, MESSAGES, records

# Columns that depend on when and where a call was recorded, not on what it was.
CIRCUMSTANTIAL = {"id", "ts", "latency_ms", "ttft_ms", "key_id", "instance", "import_key"}


def make_calls(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-shadow-team": "a"})
    list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-status": "429"})
    except openai.RateLimitError:
        pass


def comparable(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in CIRCUMSTANTIAL} for r in rows),
        key=lambda r: (r["endpoint"], r["stream"], r["usage_source"], r["status"]),
    )


def test_imported_flows_are_recorded_like_live_ones(provider, start_proxy, start_mitmdump, tmp_path):
    live_dir = tmp_path / "live"
    live = start_proxy("--upstream", f"{provider.url}@0", data=live_dir)
    make_calls(live.url)
    live_rows = records(live_dir, 5)

    flows, har = tmp_path / "calls.flows", tmp_path / "calls.har"
    bare = start_mitmdump("--mode", f"reverse:{provider.url}@0", "-w", str(flows), "--set", f"hardump={har}")
    make_calls(bare.url)
    bare.stop()

    runner = CliRunner()
    # One process, and several workers sharing the flows (what a large import does).
    for source, workers, name in (
        (flows, 1, "from-flows"),
        (har, 1, "from-har"),
        (flows, 3, "from-flows-in-workers"),
        (har, 2, "from-har-in-workers"),
    ):
        args = ["import", str(source), "--data", str(tmp_path / name), "--workers", str(workers)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "recorded 5 LLM calls" in result.stdout
        assert "0 were already present" in result.stdout
        imported = Store(tmp_path / name).requests_frame().to_dicts()
        assert comparable(imported) == comparable(live_rows), name
        assert all(r["latency_ms"] is not None for r in imported)


def test_a_broken_flow_file_is_one_line_error_and_writes_nothing(tmp_path):
    broken = tmp_path / "broken.flows"
    broken.write_bytes(b"this is not a flow file at all")
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["import", str(broken), "--data", str(data)])
    assert result.exit_code == 1
    assert "not a mitmproxy flow file or HAR file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not data.exists()


def test_a_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["import", str(tmp_path / "nope.flows"), "--data", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'nope.flows'}: no such file"


def test_a_flow_file_cut_short_is_one_line_error_and_writes_nothing(tmp_path):
    whole = (SAMPLE_TRAFFIC / "month.flows").read_bytes()[:200_000]
    cut = tmp_path / "cut.flows"
    cut.write_bytes(whole)
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["import", str(cut), "--data", str(data)])
    assert result.exit_code == 1
    assert "is cut short" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not data.exists()


def test_the_framing_finds_the_flows_mitmproxy_reads(tmp_path):
    """read_source finds flows by their length prefixes only; mitmproxy decodes the same records."""
    path = SAMPLE_TRAFFIC / "month.flows"
    source = read_source(path)
    with open(path, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert len(source) == len(flows)
    assert source.keys == [f"flow:{flow.id}" for flow in flows]  # the id read without decoding the flow
    whole = path.read_bytes()
    for (start, end), flow in zip(source.records[:: len(flows) // 25], flows[:: len(flows) // 25], strict=True):
        assert tnetstring.loads(whole[start:end])["id"] == flow.id


def test_importing_the_same_calls_again_adds_nothing(provider, start_mitmdump, tmp_path):
    flows, har = tmp_path / "calls.flows", tmp_path / "calls.har"
    bare = start_mitmdump("--mode", f"reverse:{provider.url}@0", "-w", str(flows), "--set", f"hardump={har}")
    make_calls(bare.url)
    bare.stop()
    runner = CliRunner()
    for source in (flows, har):
        data = tmp_path / f"data-{source.suffix[1:]}"
        first = runner.invoke(app, ["import", str(source), "--data", str(data)])
        assert "recorded 5 LLM calls" in first.stdout, first.output
        ids = sorted(Store(data).requests_frame()["import_key"].to_list())
        prefix = "flow:" if source == flows else "har:"
        assert len(set(ids)) == 5 and all(k.startswith(prefix) for k in ids)

        # Again, and the same file twice in one import (overlapping files): nothing new.
        # In worker processes: duplicates are found before the flows are handed out.
        args = ["import", str(source), str(source), "--data", str(data), "--workers", "2"]
        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        assert "recorded 0 LLM calls" in again.stdout and "10 were already present" in again.stdout
        assert sorted(Store(data).requests_frame()["import_key"].to_list()) == ids


def test_a_second_import_of_the_sample_month_adds_nothing(tmp_path):
    data = tmp_path / "data"
    flows = sorted(SAMPLE_TRAFFIC.glob("*.flows"))
    runner = CliRunner()
    first = runner.invoke(app, ["import", *map(str, flows), "--data", str(data)])
    assert first.exit_code == 0, first.output
    before = Store(data).requests_frame().height
    assert f"recorded {before:,} LLM calls into {data}; 0 were already present" in first.stdout
    result = runner.invoke(app, ["import", *map(str, flows), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert f"recorded 0 LLM calls into {data}; {before:,} were already present" in result.stdout
    assert Store(data).requests_frame().height == before


def test_the_fast_flow_decoder_gives_mitmproxys_values_and_errors(tmp_path):
    from addons import tnetstrings
    from addons.import_sources import read_source
    from sample_traffic.generate import generate

    path = tmp_path / "month.flows"
    generate(path, scale=0.1)
    data = path.read_bytes()
    source = read_source(path)
    assert len(source) > 100

    def typed(value):  # the value with every type spelt out, so 1 == True and b"" == "" do not pass
        if isinstance(value, dict):
            return {typed(k): typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        return (type(value).__name__, value)

    for start, end in source.records:
        assert typed(tnetstrings.loads(data[start:end])) == typed(tnetstring.loads(data[start:end]))
    samples = [
        tnetstring.dumps(v) for v in (0, -7, 1.5, True, False, None, "é", b"\x00", [], {}, {b"a": [1, {b"b": None}]})
    ]
    for sample in [*samples, b"0000000000000:,", b"4:true!"]:
        assert typed(tnetstrings.loads(sample)) == typed(tnetstring.loads(sample))
    broken = [
        b"",
        b"5:abc,",
        b"x:abc,",
        b"3:abc?",
        b"4:trux!",
        b"3:abc~",
        b"2:ab#",
        b"3:1.x^",
        b"8:3:abc,}",
        b"9:3:abcd,]",
    ]
    for sample in broken:
        with pytest.raises(ValueError):
            tnetstring.loads(sample)
        with pytest.raises(ValueError):
            tnetstrings.loads(sample)


def test_a_flow_record_is_read_as_mitmproxy_reads_it(provider, start_mitmdump, tmp_path):
    """The importer reads a record without its connections and without mitmproxy's type check of
    the request and response (addons.flow_records): everything the recorder reads must still be
    what mitmproxy's FlowReader gives, for files mitmdump wrote and the generator's months."""
    from addons.flow_records import from_record
    from sample_traffic.generate import generate

    written = tmp_path / "calls.flows"
    bare = start_mitmdump("--mode", f"reverse:{provider.url}@0", "-w", str(written))
    make_calls(bare.url)
    bare.stop()
    generated = tmp_path / "month.flows"
    generate(generated, scale=0.1)
    for path in (written, generated):
        with open(path, "rb") as f:
            expected = list(io.FlowReader(f).stream())
        data = path.read_bytes()
        records = read_source(path).records
        assert len(records) == len(expected) > 4
        assert any(flow.error for flow in expected) or path == written  # the generator's faults
        for (start, end), want in zip(records, expected, strict=True):
            got = from_record(data[start:end])
            assert got.id == want.id
            assert got.metadata == want.metadata
            assert got.request.get_state() == want.request.get_state()
            for name in ("pretty_host", "path", "method", "raw_content", "timestamp_start", "timestamp_end"):
                assert getattr(got.request, name) == getattr(want.request, name), name
            assert got.request.headers.fields == want.request.headers.fields
            assert (got.response.get_state() if got.response else None) == (
                want.response.get_state() if want.response else None
            )
            assert (got.error.get_state() if got.error else None) == (want.error.get_state() if want.error else None)
            assert got.websocket == (want.websocket is not None)


def test_an_unreadable_flow_in_the_middle_is_counted_and_skipped(tmp_path):
    from sample_traffic.generate import generate

    month = tmp_path / "month.flows"
    generate(month, scale=0.05)
    data = month.read_bytes()
    source = read_source(month)
    middle = len(source) // 2
    start, end = source.records[middle]
    record = tnetstring.loads(data[start:end])
    del record["request"]  # still framed as a flow, with its id: found by the framing, unreadable as a flow
    broken = tmp_path / "broken.flows"
    broken.write_bytes(data[:start] + tnetstring.dumps(record) + data[end:])

    runner = CliRunner()
    whole = runner.invoke(app, ["import", str(month), "--data", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    keys = set(Store(tmp_path / "whole").requests_frame()["import_key"].to_list())
    assert source.keys[middle] in keys
    for workers in (1, 2):
        data_dir = tmp_path / f"broken-{workers}"
        result = runner.invoke(app, ["import", str(broken), "--data", str(data_dir), "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        assert f"Read {len(source):,} flows; recorded {len(keys) - 1:,} LLM calls" in result.stdout
        assert "unreadable_flow:KeyError=1" in result.output
        assert set(Store(data_dir).requests_frame()["import_key"].to_list()) == keys - {source.keys[middle]}


def test_a_call_that_failed_ends_when_it_failed_not_when_it_was_imported(tmp_path):
    """A cut or abandoned call has no response end: its latency runs to its error's time, and
    its idle time (timeout or client_disconnected) is measured to then too."""
    from sample_traffic.generate import generate

    month = tmp_path / "month.flows"
    generate(month, scale=0.2)
    source = read_source(month)
    with open(month, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    failed = {
        key: (flow.error.timestamp - flow.request.timestamp_start) * 1000
        for key, flow in zip(source.keys, flows, strict=True)
        if flow.error is not None and not (flow.response is not None and flow.response.timestamp_end)
    }
    assert failed, "the generated month has failed calls"
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["import", str(month), "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows = {r["import_key"]: r for r in Store(data).requests_frame().to_dicts() if r["import_key"] in failed}
    assert rows.keys() == failed.keys()
    for key, latency in failed.items():
        assert rows[key]["latency_ms"] == pytest.approx(latency, abs=0.01), rows[key]["outcome"]
