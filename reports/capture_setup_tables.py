"""The `ca` and `doctor` tables: how to trust the interception CA, and what the checks found."""

from collections.abc import Iterable

from rich.table import Table

from analysis.capture_setup.doctor import CheckResult
from reports.tables import shown

STATUS_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def trust_table(instructions: Iterable[tuple[str, str]]) -> Table:
    """One row per client: where it reads its CAs from, and the command that makes it trust ours."""
    table = Table(title="Trust it", header_style="bold")
    table.add_column("client")
    table.add_column("command", overflow="fold")
    for where, command in instructions:
        table.add_row(shown(where), shown(command))
    return table


def doctor_table(results: Iterable[CheckResult]) -> Table:
    table = Table(header_style="bold")
    for column in ("check", "status", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        status = f"[{STATUS_STYLES[result.status]}]{result.status}[/]"
        table.add_row(shown(result.name), status, shown(result.message), shown(result.fix))
    return table
