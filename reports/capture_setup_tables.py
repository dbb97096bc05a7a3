"""The `ca` and `doctor` tables: how to trust the interception CA, and what the checks found."""

from collections.abc import Iterable

from rich.markup import escape
from rich.table import Table

from analysis.capture_setup.doctor import CheckResult

STATUS_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def trust_table(instructions: Iterable[tuple[str, str]]) -> Table:
    """One row per client: where it reads its CAs from, and the command that makes it trust ours."""
    table = Table(title="Trust it", header_style="bold")
    table.add_column("client")
    table.add_column("command", overflow="fold")
    for where, command in instructions:
        table.add_row(where, command)
    return table


def doctor_table(results: Iterable[CheckResult]) -> Table:
    table = Table(header_style="bold")
    for column in ("check", "status", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        status = f"[{STATUS_STYLES[result.status]}]{result.status}[/]"
        table.add_row(result.name, status, escape(result.message), escape(result.fix))
    return table
