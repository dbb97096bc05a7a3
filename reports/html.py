"""The report as one self-contained HTML file: works offline, opened from disk, no server.

plotly.js is inlined once in a <script>; each chart's figure is a JSON <script> block drawn by
a small loader that marks the chart element `data-drawn="true"` once plotly has drawn it (or
writes the error into the element, so a broken chart is visible, not blank). Nothing is fetched
from the network.
"""

import json

import jinja2
import plotly.offline
from markupsafe import Markup

from reports import charts
from reports.format import FILTERS

PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def _script_json(text: str) -> Markup:
    """JSON safe inside a <script> element: no "</" can close it early."""
    return Markup(text.replace("</", "<\\/").replace("<!--", "<\\!--"))


def render_html(report: dict) -> str:
    figures = charts.all_charts(report)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            report=report,
            figures={key: _script_json(fig.to_json()) for key, fig in figures.items()},
            plotly_js=Markup(plotly.offline.get_plotlyjs()),
            plotly_config=_script_json(json.dumps(PLOTLY_CONFIG)),
        )
    )
