"""Printing query results as a rich table, JSON or CSV: one function per format.

Every figure is written by `reports.format` (money by `usd`, floats of a column with one number
of decimals, JSON and CSV rounded by `json_ready`)."""

import csv
import io
import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from analysis.store.clean import printable
from reports.format import column, json_ready

if TYPE_CHECKING:  # frames come from the caller: printing needs no polars import of its own
    import polars as pl

FORMATS = ("table", "json", "csv")


def shown(value: str) -> str:
    """A stored value as a rich table shows it: control characters escaped (`\\x1b`: a value
    cannot drive the terminal) and brackets taken literally (never rich markup). JSON and CSV
    output keep the value as stored."""
    return escape(printable(value))


def to_rich_table(frame: "pl.DataFrame", title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    columns = []
    for name, dtype in zip(frame.columns, frame.dtypes, strict=True):
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
        columns.append(column(name, frame[name].to_list()))
    for cells in zip(*columns, strict=True):
        table.add_row(*(shown(c) for c in cells))
    return table


def _rows(frame: "pl.DataFrame") -> list[dict]:
    return [json_ready(row) for row in frame.iter_rows(named=True)]


def to_json(frame: "pl.DataFrame") -> str:
    return json.dumps(_rows(frame), indent=2, default=str)


def to_csv(frame: "pl.DataFrame") -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(frame.columns)
    for row in _rows(frame):
        writer.writerow(["" if v is None else v for v in row.values()])
    return out.getvalue()


def print_frame(frame: "pl.DataFrame", fmt: str, console: Console, title: str | None = None) -> None:
    if fmt == "json":
        console.print_json(to_json(frame)) if console.is_terminal else print(to_json(frame))
    elif fmt == "csv":
        print(to_csv(frame), end="")
    else:
        console.print(to_rich_table(frame, title))
