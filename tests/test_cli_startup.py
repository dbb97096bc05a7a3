"""`llm-shadow --help` and every command's --help answer without loading the heavy libraries:
polars, duckdb, pyarrow, plotly and mitmproxy are imported only by the commands that use them."""

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("polars", "duckdb", "pyarrow", "plotly", "mitmproxy", "numpy")

SCRIPT = f"""
import sys
from typer.testing import CliRunner
import cli
runner = CliRunner()
for args in (["--help"], *([name, "--help"] for name in sys.argv[1:])):
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, (args, result.output)
print(" ".join(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_help_loads_no_heavy_library():
    commands = ["proxy", "import", "stats", "sql", "purge", "compact", "reprice", "report", "demo"]
    commands += ["simulate", "explain", "ca", "doctor", "prices"]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *commands], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
