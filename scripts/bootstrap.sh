#!/usr/bin/env bash
# Idempotent install: creates .venv and installs tirl with its test extras, only when
# pyproject.toml changed since the last successful install (a stamp file records its hash).
# torch is pinned in pyproject.toml and installed by pip in the same command as everything
# else, so a CPU machine with the local torch wheel never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.tirl-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import tirl" 2>/dev/null; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# --no-compile: byte-compiling every installed module took a large share of the install;
# Python compiles what a run imports, on first import, instead.
.venv/bin/python -m pip install -q --no-compile -e ".[test]"
echo "$want" > "$stamp"
