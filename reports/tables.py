"""Printing query results as a rich table, JSON or CSV: one function per format."""

import csv
import io
import json
import math
from datetime import date, datetime
from decimal import Decimal

import polars as pl
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "csv")


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.2f}"
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def to_rich_table(frame: pl.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for name, dtype in zip(frame.columns, frame.dtypes, strict=True):
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def to_json(frame: pl.DataFrame) -> str:
    rows = [{k: _plain(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return json.dumps(rows, indent=2, default=str)


def to_csv(frame: pl.DataFrame) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(frame.columns)
    for row in frame.iter_rows():
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return out.getvalue()


def print_frame(frame: pl.DataFrame, fmt: str, console: Console, title: str | None = None) -> None:
    if fmt == "json":
        console.print_json(to_json(frame)) if console.is_terminal else print(to_json(frame))
    elif fmt == "csv":
        print(to_csv(frame), end="")
    else:
        console.print(to_rich_table(frame, title))
