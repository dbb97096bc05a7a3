"""The README documents every column, and every command has help text."""

import re

import pytest
import typer
from typer.main import get_command

from analysis.store.schema import CONTENTS, DECISIONS, REQUESTS
from cli import app
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("column", REQUESTS + CONTENTS + DECISIONS, ids=lambda c: c.name)
def test_readme_documents_every_column(column):
    assert f"| `{column.name}` | {column.sql_type} | {column.description} |" in README


def all_commands(command, prefix=""):
    yield prefix.strip(), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from all_commands(sub, f"{prefix} {name}")


@pytest.mark.parametrize(
    ("name", "command"), list(all_commands(get_command(app))), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_command_has_help(name, command):
    assert (command.help or "").strip(), f"llm-shadow {name} has no help text"
    for param in command.params:
        if isinstance(param, typer.core.TyperOption) or param.param_type_name == "option":
            assert param.help, f"llm-shadow {name} {param.opts} has no help text"


def test_readme_lists_every_top_level_command():
    documented = set(re.findall(r"`llm-shadow ([a-z]+)", README))
    commands = set(get_command(app).commands)
    assert commands <= documented, commands - documented
