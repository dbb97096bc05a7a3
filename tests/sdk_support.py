"""What the SDK accounting tests share: one recording proxy per test module, and each test's row.

Starting `llm-shadow proxy` takes a second or two, so a test module starts one (in front of one
fake provider, recording into one data directory) and its tests tell their rows apart by the
`x-shadow-feature` header: every test sends its own feature name (the `feature` fixture) and reads
back the one row that carries it (`RecordingProxy.row`), through the same `requests` relation
that `llm-shadow sql` queries.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis.pricing.table import PriceTable
from analysis.store.datadir import Store, query_frame
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider

API_KEY = "sk-test-secret-123"
PRICES = PriceTable.load()


@dataclass
class RecordingProxy:
    provider: FakeProvider
    proxy: RunningProxy
    data_dir: Path

    @property
    def url(self) -> str:
        return self.proxy.url

    def rows(self, feature: str) -> list[dict]:
        if not (self.data_dir / "records").exists():
            return []
        with Store(self.data_dir).connect() as con:
            frame = query_frame(con, "SELECT * FROM requests WHERE feature = ? ORDER BY ts, id", [feature])
        return frame.to_dicts()

    def row(self, feature: str, n: int = 1, timeout: float = 15.0) -> dict | list[dict]:
        """The row (or, with n > 1, the n rows in time order) recorded for this feature."""
        rows = wait_for(lambda: (found := self.rows(feature)) and len(found) >= n and found, timeout)
        assert rows, f"no {n} records for feature {feature!r} appeared; proxy said:\n" + "".join(
            self.proxy.output[-20:]
        )
        assert len(rows) == n, f"expected {n} records for {feature!r}, found {len(rows)}"
        return rows[0] if n == 1 else rows

    def received_path(self, feature: str) -> str:
        """The path (query removed) of the last request for this feature that reached the upstream."""
        sent = [r for r in self.provider.requests if r.headers.get("x-shadow-feature") == feature]
        assert sent, f"no request for feature {feature!r} reached the fake provider"
        return sent[-1].target.partition("?")[0]

    def content(self, row_id: str) -> dict:
        with Store(self.data_dir).connect() as con:
            [content] = query_frame(con, "SELECT * FROM contents WHERE id = ?", [row_id]).to_dicts()
        return content


@contextmanager
def recording_proxy(data_dir: Path) -> Iterator[RecordingProxy]:
    """A fake provider and an `llm-shadow proxy` in front of it, recording into data_dir."""
    with FakeProvider() as provider:
        proxy = RunningProxy(llm_shadow_proxy_command(["--upstream", f"{provider.url}@0"], data_dir))
        try:
            yield RecordingProxy(provider, proxy, data_dir)
        finally:
            proxy.stop()


def assert_successful_call(row: dict, *, stream: bool) -> None:
    """The columns every successful call has, streamed or not, whatever its provider."""
    assert (row["status"], row["outcome"], row["error"]) == (200, "ok", None)
    assert row["stream"] is stream
    assert row["latency_ms"] > 0
    if stream:
        assert 0 < row["ttft_ms"] <= row["latency_ms"]
    else:
        assert row["ttft_ms"] is None
    assert row["price_version"] == PRICES.version
    assert row["key_id"].startswith("key_")


def rates(model: str, provider: str, service: str = "standard", input_tokens: int = 0) -> dict[str, float]:
    """The price table's rates (USD per million tokens) for this model as the proxy prices it."""
    price = PRICES.resolve(model, provider)
    assert price is not None, f"{model} at {provider} has no price"
    return price.effective_rates(service, input_tokens)


def assert_tokens(
    row: dict,
    *,
    input: int,
    output: int,
    cached: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    reasoning: int = 0,
    source: str = "provider",
) -> None:
    """The row's token columns, all of them, equal these."""
    recorded = {
        k: row[k]
        for k in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
            "usage_source",
        )
    }
    assert recorded == {
        "input_tokens": input,
        "output_tokens": output,
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
        "cache_write_1h_tokens": cache_write_1h,
        "reasoning_tokens": reasoning,
        "usage_source": source,
    }


def assert_cost(row: dict, usd: float) -> None:
    """The row was priced from the table, at `usd` (worked by hand in the test)."""
    assert row["cost_usd"] == pytest.approx(usd)
    assert row["cost_source"] == "computed"
    assert row["price_version"] == PRICES.version
