#!/usr/bin/env bash
# Quick start: `./run.sh demo` sets everything up and runs the demo; `./run.sh test` sets
# everything up and runs the test suite. Setting up = a Python 3.12 virtualenv in .venv with
# llm-shadow and its test dependencies installed (re-done only when pyproject.toml changes),
# plus the system packages the tests need (Chromium for the report test).
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  for candidate in "${PYTHON:-}" python3.12 "$HOME/.pyenv/versions/3.12"*/bin/python3.12 /usr/bin/python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "run.sh: Python 3.12 or newer is needed (set PYTHON=/path/to/python3.12)" >&2
  return 1
}

setup_venv() {
  local stamp=.venv/.installed
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    "$(find_python)" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$want" > "$stamp"
  fi
}

setup_system() {
  if [ -x .ci/install-system-deps ]; then
    .ci/install-system-deps
  fi
}

case "${1:-}" in
  demo)
    setup_venv
    shift
    exec .venv/bin/llm-shadow demo "$@"
    ;;
  test)
    setup_venv
    setup_system
    shift
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./run.sh demo | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
