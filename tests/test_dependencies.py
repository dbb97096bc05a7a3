"""Every module the code imports is declared in pyproject.toml, in the right group, and every
declared package is imported somewhere (or named below with the reason it is needed anyway).

Runtime code (what `pip install llm-shadow` runs) may import only `[project.dependencies]` and
the optional extras other than `test` (such as `semantic`, imported only when a feature that needs
it is asked for); tests and benchmarks may also import the `test` extra (which names `semantic`).
A package that arrives only because another one depends on it can disappear with that package's
next release (zstandard left mitmproxy 12.3 that way; httpx left the SDKs), so transitive imports
fail here too.
"""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_CODE = ["addons", "analysis", "reports", "sample_traffic", "cli.py"]
TEST_CODE = ["tests", "bench"]
FIRST_PARTY = {"addons", "analysis", "reports", "sample_traffic", "cli", "tests", "bench"}

# Declared, never imported, and needed all the same.
NOT_IMPORTED = {
    "pyarrow": "DuckDB hands query results to polars as Arrow tables",
    "pytest-timeout": "a pytest plugin, enabled by the `timeout` setting in pyproject.toml",
    "ruff": "the linter, run by tests/test_lint.py as a command",
    "mypy": "the type checker, run by tests/test_lint.py as a command",
}


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    """Packages runtime code may import (dependencies and optional extras) and those of the `test` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {
        name: [r for r in reqs if requirement_name(r) != "llm-shadow"]
        for name, reqs in project["optional-dependencies"].items()
    }
    runtime = {requirement_name(r) for r in project["dependencies"]}
    runtime |= {requirement_name(r) for name, reqs in extras.items() if name != "test" for r in reqs}
    test = {requirement_name(r) for r in extras["test"]}
    return runtime, test


def python_files(parts: list[str]) -> list[Path]:
    files = []
    for part in parts:
        path = ROOT / part
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def imported_modules(files: list[Path]) -> dict[str, Path]:
    """Top-level names of the absolute imports in these files, with a file that imports each."""
    found: dict[str, Path] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], path)
    return found


def third_party(modules: dict[str, Path]) -> dict[str, Path]:
    return {m: p for m, p in modules.items() if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


def distributions_of(module: str) -> set[str]:
    return {canonical(d) for d in packages_distributions().get(module, [])}


def undeclared(modules: dict[str, Path], allowed: set[str]) -> list[str]:
    problems = []
    for module, path in sorted(modules.items()):
        dists = distributions_of(module)
        if not dists & allowed:
            where = path.relative_to(ROOT)
            problems.append(f"{where} imports {module!r} (from {sorted(dists) or 'no installed package'})")
    return problems


def test_runtime_code_imports_only_runtime_dependencies():
    runtime, _ = declared()
    assert undeclared(third_party(imported_modules(python_files(RUNTIME_CODE))), runtime) == []


def test_tests_and_benchmarks_import_only_declared_packages():
    runtime, test = declared()
    assert undeclared(third_party(imported_modules(python_files(TEST_CODE))), runtime | test) == []


def test_every_declared_package_is_used():
    runtime, test = declared()
    runtime_imports = third_party(imported_modules(python_files(RUNTIME_CODE)))
    test_imports = third_party(imported_modules(python_files(TEST_CODE)))

    def used(modules: dict[str, Path]) -> set[str]:
        return set().union(*(distributions_of(m) for m in modules))

    assert sorted(runtime - used(runtime_imports) - NOT_IMPORTED.keys()) == []
    assert sorted(test - used(test_imports) - NOT_IMPORTED.keys()) == []


def test_the_check_sees_a_missing_declaration():
    """The checker itself: an import of a package that is not declared is reported."""
    runtime, _ = declared()
    problems = undeclared({"openai": ROOT / "cli.py"}, runtime)  # a test dependency only
    assert problems == ["cli.py imports 'openai' (from ['openai'])"]
