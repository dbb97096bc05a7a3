"""The report: opened in headless Chromium like a reader would, and checked against what
`llm-shadow stats` prints for the same data.

The data is the sample month as `llm-shadow demo` recorded it (the `sample_demo` fixture), so
the report under test went through the real recorder.
"""

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from reports import format as fmt
from reports.data import window_verdict
from tests.headless_chromium import HeadlessChromium, find_chromium
from tests.png import ink

EXPECTED_CHARTS = {
    "chart-spend",
    "chart-tokens",
    "chart-latency",
    "chart-outcomes",  # observed traffic
    "chart-waterfall",
    "chart-simulated-daily",
}  # the simulation


class ReportPage(HTMLParser):
    """The parts of the report HTML a test reads: text by element id, rows of the tables that
    have an id (or a data-by: the spend tables, by model, team, feature)."""

    def __init__(self, html: str):
        super().__init__()
        self.text_by_id: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open_ids: list[tuple[str, int]] = []
        self._depth = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("meta", "br", "link", "img", "input"):
            return
        self._depth += 1
        if "id" in attrs:
            self._open_ids.append((attrs["id"], self._depth))
            self.text_by_id[attrs["id"]] = ""
        if tag == "table" and ("data-by" in attrs or "id" in attrs):
            self._table = attrs.get("data-by") or attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        self._open_ids = [(i, d) for i, d in self._open_ids if d < self._depth]
        self._depth -= 1

    def handle_data(self, data):
        for element_id, _ in self._open_ids:
            self.text_by_id[element_id] += data
        if self._cell is not None:
            self._cell.append(data)

    def text(self, element_id: str) -> str:
        return " ".join(self.text_by_id[element_id].split())


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def report_html(sample_demo) -> str:
    assert sample_demo.result.returncode == 0, sample_demo.result.stderr
    return sample_demo.report.read_text()


# --- in the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.fail("chromium is not installed: run .ci/install-system-deps (apt-get install chromium)")
    with HeadlessChromium(executable) as chromium:
        yield chromium


ALL_CHARTS_SETTLED = """(() => {
  const charts = [...document.querySelectorAll('[data-figure]')];
  return charts.length > 0 && charts.every(c => c.dataset.drawn === 'true' || c.classList.contains('chart-error'))
    ? Object.fromEntries(charts.map(c => [c.id, c.dataset.drawn === 'true' ? c.querySelectorAll('.trace').length : -1]))
    : null;
})()"""


def box_of(page, element_id: str) -> dict:
    return page.evaluate(f"""(() => {{
        const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();
        return {{x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height}}; }})()""")


def test_the_report_opens_offline_in_chromium_with_every_chart_drawn(sample_demo, browser, tmp_path):
    page = browser.open_page(sample_demo.report.resolve().as_uri())
    traces = page.wait_until(ALL_CHARTS_SETTLED, timeout=30)
    assert traces is not None, "the charts were not drawn within 30 s"
    assert set(traces) >= EXPECTED_CHARTS
    assert all(n > 0 for n in traces.values()), f"charts without drawn traces: {traces}"
    browser.pump(0.2)
    assert page.log.problems() == []
    assert page.log.requested_urls == [sample_demo.report.resolve().as_uri()], "the report fetched something"
    assert page.evaluate("document.documentElement.scrollWidth") <= browser.width, "the page scrolls sideways"

    shots = Path(os.environ.get("LLM_SHADOW_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    (shots / "report.png").write_bytes(page.screenshot())  # full size, for a person to look at
    whole = ink(page.screenshot(scale=0.2))
    assert whole.height > 3 * whole.width  # a long page of sections, not an error message
    assert whole.colours > 200 and whole.inked_share > 0.03
    for chart in sorted(traces):
        drawn = ink(page.screenshot(box_of(page, chart), scale=0.4))
        assert drawn.colours > 30 and drawn.inked_share > 0.02, f"{chart} looks blank: {drawn}"


def test_the_report_is_one_self_contained_file(report_html):
    assert report_html.count("* plotly.js v") == 1  # the library, embedded once
    assert not re.search(r"<script[^>]+src=", report_html)
    assert not re.search(r"<link[^>]+href=", report_html)
    page = ReportPage(report_html)
    for chart in EXPECTED_CHARTS:
        assert f'id="figure-{chart}"' in report_html and chart in page.text_by_id


# --- the same numbers as stats -------------------------------------------------------------------


def test_headline_and_tables_equal_what_stats_prints(sample_demo, report_html):
    page = ReportPage(report_html)
    data = str(sample_demo.data)
    footer = re.search(
        r"([\d,]+) calls, (\$[\d.,]+), ([\d,]+) input and ([\d,]+) output tokens", cli("stats", "--data", data)
    )
    observed = page.text("headline-observed")
    assert f"Observed spend {footer[2]} {footer[1]} calls" in observed

    for by in ("model", "team", "feature"):
        rows = json.loads(cli("stats", "--by", by, "--format", "json", "--data", data))
        table = page.tables[by]
        assert table[0][:2] == [by, "calls"]
        for row, stats_row in zip(table[1:], rows, strict=False):
            cells = dict(zip(table[0], row, strict=True))
            assert cells[by] == stats_row[by]
            assert cells["calls"] == fmt.count(stats_row["calls"])
            assert cells["cost"] == fmt.usd(stats_row["cost_usd"])
            assert cells["failed"] == fmt.count(stats_row["errors"])
        assert len(table) - 1 == min(10, len(rows))


def test_simulation_figures_equal_what_simulate_prints(sample_demo, report_html):
    result = json.loads(
        cli(
            "simulate",
            "--policy",
            str(sample_demo.out / "policy.toml"),  # the demo policy as the demo scaled it
            "--format",
            "json",
            "--no-save",
            "--data",
            str(sample_demo.data),
        )
    )
    totals = result["totals"]
    page = ReportPage(report_html)
    simulated = page.text("headline-simulated")
    assert simulated.startswith(f"Simulated spend {fmt.usd(totals['simulated_usd'])} ")
    assert f"saving {fmt.usd(totals['saving_usd'])} ({totals['saving_pct']:.1f}%)" in simulated
    assert page.text("headline-cache").startswith(f"Cache hit rate {fmt.percent(totals['cache_hit_rate'])} ")
    assert f"{fmt.count(totals['cache_hits'])} of {fmt.count(totals['requests'])} calls" in page.text("headline-cache")

    rows = {row[0]: row for row in page.tables["by-policy"][1:-1]}
    assert list(rows) == [p["name"] for p in result["by_policy"]]
    for policy in result["by_policy"]:
        assert rows[policy["name"]][3] == fmt.usd(policy["saving_usd"])
    assert sum(p["saving_usd"] for p in result["by_policy"]) == pytest.approx(totals["saving_usd"])

    if result["routing"]["rules"]:
        assert "quality: unverified" in page.text("routing")
        assert [r[0] for r in page.tables["routing-rules"][1:]] == [r["name"] for r in result["routing"]["rules"]]

    # The demo printed the same three figures.
    out = sample_demo.result.stdout
    assert re.search(
        rf"Simulated spend:\s+{re.escape(fmt.usd(totals['simulated_usd']))}, saving "
        rf"{re.escape(fmt.usd(totals['saving_usd']))}",
        out,
    )
    assert re.search(rf"Cache hit rate:\s+{re.escape(fmt.percent(totals['cache_hit_rate']))}", out)


def test_a_window_reports_what_stats_prints_for_it(sample_demo, tmp_path):
    data = str(sample_demo.data)
    first = json.loads(cli("stats", "--by", "day", "--format", "json", "--data", data))[0]["day"]
    start = first
    end = f"{first[:8]}{int(first[8:]) + 5:02d}"  # five days: too short to act on
    markdown = cli("report", "--format", "md", "--from", start, "--to", end, "--data", data)
    days = json.loads(cli("stats", "--by", "day", "--format", "json", "--from", start, "--to", end, "--data", data))
    calls, cost = sum(d["calls"] for d in days), sum(d["cost_usd"] for d in days)
    assert f"**{fmt.usd(cost)}** ({fmt.count(calls)} calls over 5 days" in markdown
    assert "poor: Too short to act on: 5 days" in markdown
    out = tmp_path / "week.md"
    cli("report", "--format", "md", "--out", str(out), "--from", start, "--to", end, "--data", data)
    assert out.read_text() == markdown


def test_markdown_has_the_figures_of_the_html(sample_demo, report_html):
    markdown = cli("report", "--format", "md", "--data", str(sample_demo.data))
    page = ReportPage(report_html)
    spend = re.search(r"\$[\d.,]+", page.text("headline-observed"))[0]
    assert f"| **Observed spend** | **{spend}**" in markdown
    model = page.tables["model"][1]
    assert f"| {model[0]} | {model[1]} |" in markdown
    assert "| provider | calls |" in markdown and "### Data quality" in markdown


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "pdf"], "unknown format 'pdf'"),
        (["--from", "yesterday"], "--from: 'yesterday' is not a date"),
        (["--policy", "no-such-policy.toml"], "--policy no-such-policy.toml: no such file"),
    ],
)
def test_bad_options_are_one_line_errors(sample_demo, args, message):
    result = CliRunner().invoke(app, ["report", *args, "--data", str(sample_demo.data)])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_data_and_an_empty_window_are_one_line_errors(sample_demo, tmp_path):
    missing = CliRunner().invoke(app, ["report", "--data", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    empty = CliRunner().invoke(
        app,
        [
            "report",
            "--from",
            "1999-01-01",
            "--to",
            "1999-02-01",
            "--data",
            str(sample_demo.data),
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert empty.exit_code == 1
    assert "no recorded calls in the chosen window" in empty.output
    assert not (tmp_path / "r.html").exists()


# --- the observation window verdict --------------------------------------------------------------


@pytest.mark.parametrize(
    "span, covered, level",
    [
        (1, 1, "poor"),
        (6, 6, "poor"),
        (7, 7, "weak"),
        (13, 10, "weak"),
        (14, 14, "fair"),
        (27, 20, "fair"),
        (28, 28, "good"),
        (90, 60, "good"),
    ],
)
def test_window_verdict(span, covered, level):
    got, sentence = window_verdict(span, covered)
    assert got == level
    assert f"{span} day" in sentence


def test_window_verdict_mentions_gaps():
    assert "days without traffic" in window_verdict(30, 15)[1]
    assert "without traffic" not in window_verdict(30, 29)[1]


def test_a_chart_that_cannot_be_drawn_says_so_and_is_caught(report_html, browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(report_html.replace('id="figure-chart-latency">', 'id="figure-chart-latency">{not json', 1))
    page = browser.open_page(broken.as_uri())
    traces = page.wait_until(ALL_CHARTS_SETTLED, timeout=30)
    assert traces["chart-latency"] == -1 and traces["chart-spend"] > 0
    assert "This chart could not be drawn" in page.evaluate("document.getElementById('chart-latency').textContent")
    browser.pump(0.2)
    assert any("chart-latency" in e for e in page.log.console_errors)


def test_a_broken_policy_file_is_a_one_line_error_with_its_line(sample_demo, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "x"\n\n[[routing]]\nname = "r"\nto = 5\n')
    result = CliRunner().invoke(
        app, ["report", "--policy", str(policy), "--data", str(sample_demo.data), "--out", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 1
    assert "policy.toml:5:" in result.output and '"to"' in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
