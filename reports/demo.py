"""What `llm-shadow demo` needs besides the importer, the simulator and the report: a fresh
demo directory, and the three headline figures it prints.

The demo directory holds `data/` (a data directory recorded afresh on every run) and the report.
It is marked with a `.llm-shadow-demo` file, so a second run may empty it again while a
directory that was not made by the demo is never emptied.
"""

import os
import shlex
import shutil
import sys
from pathlib import Path

from reports import format as fmt

MARKER = ".llm-shadow-demo"


class DemoDirError(Exception):
    """The demo directory cannot be used (it exists and was not made by the demo)."""


def prepare_demo_dir(out: Path) -> Path:
    """Make `out` a demo directory with an empty data directory; return the data directory."""
    if out.exists() and not out.is_dir():
        raise DemoDirError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoDirError(f"{out} exists and was not made by llm-shadow demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("Made by `llm-shadow demo`; a new run empties data/ and rewrites the report.\n")
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    return data


def command_for_new_shell(argv0: str | None = None) -> str:
    """How a new shell, in the current directory, runs the llm-shadow that is running now.

    `./run.sh demo` runs `.venv/bin/llm-shadow`, which a new shell does not find on PATH: then
    the program's path is the command (relative when it lies below the current directory).
    """
    program = Path(argv0 or sys.argv[0]).absolute()
    if program.suffix == ".py":  # `python cli.py demo`
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(program))}"
    found = shutil.which(program.name)
    if found and Path(found).absolute() == program:
        return program.name
    relative = os.path.relpath(program)
    path = relative if not relative.startswith("..") else str(program)
    return shlex.quote(path if "/" in path else f"./{path}")


def headline_figures(report: dict) -> list[tuple[str, str]]:
    """(label, figure) for the three numbers the demo prints, as the report's cards show them."""
    totals, quality, sim = report["totals"], report["quality"], report["simulation"]
    figures = [
        (
            "Observed spend",
            f"{fmt.usd(totals['cost_usd'])} over {quality['span_days']} days ({fmt.count(totals['calls'])} calls)",
        )
    ]
    if sim is None:
        figures.append(("Simulated spend", "not run"))
        figures.append(("Cache hit rate", "not run"))
    else:
        figures.append(
            (
                "Simulated spend",
                f"{fmt.usd(sim['headline']['simulated_usd'])}, saving "
                f"{fmt.usd(sim['headline']['saving_usd'])} "
                f"({fmt.percent(sim['headline']['saving_share'])})",
            )
        )
        figures.append(
            (
                "Cache hit rate",
                f"{fmt.percent(sim['headline']['cache_hit_rate'])} "
                f"({fmt.count(sim['headline']['cache_hits'])} of "
                f"{fmt.count(sim['headline']['requests'])} calls)",
            )
        )
    return figures
