#!/usr/bin/env bash
# Quick start and development commands. Every one installs exactly what uv.lock pins (versions
# and hashes) into .venv, so a fresh clone gets the environment the tests last passed on:
#   ./run.sh demo [args]   a company month generated, through recorder, simulator and report
#   ./run.sh test [args]   the test suite (pytest), plus the system packages it needs
#   ./run.sh lock          re-resolve uv.lock to the newest versions pyproject.toml allows
#   ./run.sh latest [args] the test suite against the newest versions, in .venv-latest; it
#                          reports breakage and changes nothing (run it before ./run.sh lock)
# uv itself is bootstrapped with pip into .tools/ when it is not on PATH, at the version below.
set -euo pipefail
cd "$(dirname "$0")"

UV_VERSION=0.13.9
# uv must use this machine's Python, never download a build of its own.
export UV_PYTHON_DOWNLOADS=never

find_python() {
  for candidate in "${PYTHON:-}" python3.12 "$HOME/.pyenv/versions/3.12"*/bin/python3.12 /usr/bin/python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "run.sh: Python 3.12 is needed (set PYTHON=/path/to/python3.12)" >&2
  return 1
}

PY=$(find_python)
export UV_PYTHON="$PY"

find_uv() {
  if command -v uv >/dev/null 2>&1 && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    command -v uv; return 0
  fi
  if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "run.sh: installing uv $UV_VERSION into .tools/" >&2
    "$PY" -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  echo .tools/bin/uv
}

UV=$(find_uv)

# $1: extra uv sync flags. --locked fails (rather than re-resolving) if uv.lock and
# pyproject.toml disagree.
sync_venv() {
  "$UV" sync --quiet --locked "$@"
  "$UV" pip check --quiet --python .venv/bin/python
  # Bytecode compiled once, here: otherwise, where PYTHONDONTWRITEBYTECODE is set, every
  # process the demo, an import or the tests start compiles its ~240 modules again (about
  # 1.5 CPU s each; docs/benchmarks.md). Up-to-date files are skipped. Some packages ship
  # files that are not Python 3 (test data): compileall says so in its exit status, harmlessly.
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    addons analysis reports sample_traffic cli.py >/dev/null 2>&1 || true
}

case "${1:-}" in
  demo)
    shift
    sync_venv --inexact  # keep test packages a previous ./run.sh test installed
    exec .venv/bin/llm-shadow demo "$@"
    ;;
  test)
    shift
    sync_venv --extra test
    if [ -x .ci/install-system-deps ]; then
      .ci/install-system-deps
    fi
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  lock)
    shift
    exec "$UV" lock --upgrade "$@"
    ;;
  latest)
    shift
    # A separate venv, resolved afresh from pyproject.toml's ranges (not from uv.lock).
    "$UV" venv --quiet --allow-existing .venv-latest
    "$UV" pip install --quiet --upgrade --python .venv-latest/bin/python -e '.[test]'
    "$UV" pip list --quiet --format freeze --python .venv-latest/bin/python > .venv-latest/versions.txt
    echo "run.sh: newest versions listed in .venv-latest/versions.txt" >&2
    [ -x .ci/install-system-deps ] && .ci/install-system-deps
    exec .venv-latest/bin/python -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./run.sh demo | test [pytest args] | lock | latest [pytest args]" >&2
    exit 2
    ;;
esac
