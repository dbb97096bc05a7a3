"""What `llm-shadow demo` needs besides the importer, the simulator and the report: a fresh
demo directory, and the three headline figures it prints.

The demo directory holds `data/` (a data directory recorded afresh on every run) and the report.
It is marked with a `.llm-shadow-demo` file, so a second run may empty it again while a
directory that was not made by the demo is never emptied.
"""

import os
import re
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


# The bundled sample month the demo policy's figures were chosen for (sample_traffic/README.md).
SAMPLE_MONTH_CALLS = 1_517
SAMPLE_MONTH_USD = 1.14


def scaled_policy(text: str, calls: int, spend_usd: float) -> str:
    """The demo policy with its money (`limit_usd`) scaled by the recorded month's spend and its
    request rates (`requests_per_minute`) by its calls, relative to the sample month it was
    written for, so that its budgets and rate limits bind as they do on the sample."""
    money = spend_usd / SAMPLE_MONTH_USD
    volume = calls / SAMPLE_MONTH_CALLS

    def limit(match: re.Match) -> str:
        return f"{match[1]}{float(match[2]) * money:.4g}"

    def rate(match: re.Match) -> str:
        return f"{match[1]}{max(1, round(int(match[2]) * volume))}"

    text = re.sub(r"(?m)^(limit_usd\s*=\s*)([0-9.]+)", limit, text)
    return re.sub(r"(?m)^(requests_per_minute\s*=\s*)([0-9]+)", rate, text)


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
