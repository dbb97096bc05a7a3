"""The report as Markdown, for pasting into a ticket or a chat: the same figures as the HTML
report (from the same `reports.data` dict), as tables, without charts."""

import re

import jinja2

from analysis.store.clean import printable
from reports.format import FILTERS


def _cell(value) -> str:
    """Text safe inside a Markdown table cell (and on a terminal: control characters escaped)."""
    return printable(str(value)).replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.filters["cell"] = _cell
    return env


def render_markdown(report: dict) -> str:
    text = _environment().get_template("report.md.j2").render(report=report)
    return re.sub(r"\n{3,}", "\n\n", text)  # blank lines left by template blocks
