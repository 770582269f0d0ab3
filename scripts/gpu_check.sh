#!/usr/bin/env bash
# One-shot GPU check of tirl on a borrowed machine (see docs/gpu.md, "The GPU check").
#
# The GPU machine has python3 3.12 with torch, transformers, accelerate, tokenizers, numpy,
# pandas, pyarrow, scipy, sacrebleu, tqdm, attrs, but no network and none of: bm25s,
# jsonschema (+ jsonschema-specifications, referencing, rpds-py), vllm, kedro, mlflow,
# great_expectations. The missing pure-python deps travel as wheels in .whl/ (gitignored,
# ~0.7 MB). Download them once, here, from the repo root:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl \
#     bm25s==0.3.16 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
#     referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0
#
# (Requires-Dist checked with `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`:
# bm25s needs numpy; jsonschema needs attrs, jsonschema-specifications, referencing, rpds-py;
# referencing needs attrs, rpds-py, typing-extensions (present there). attrs is present there
# too, carried anyway so its version is the one tested here. Keep ONE version of each wheel.)
# vLLM is NOT carried: it pins its own torch and weighs GBs; the check reports it absent.
#
# Run on the device (one call, ~7-8 min; carry the wheels):
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=560)
# Extra arguments go to scripts/gpu_check.py (e.g. --budget-s 420 --skip pretrained).
# Results: $OUT/gpu_check.json, $OUT/gpu_check.log, $OUT/nvidia-smi.txt.
# Dry run here: TIRL_SKIP_WHEELS=1 PYTHON=.venv/bin/python bash scripts/gpu_check.sh --device cpu --tiny --budget-s 120
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ -z "${TIRL_SKIP_WHEELS:-}" ]] && compgen -G ".whl/*.whl" >/dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl; then
        export PYTHONPATH="/tmp/site:src${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check.sh: wheel install failed; going on without it" >&2
        export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
    fi
else
    [[ -z "${TIRL_SKIP_WHEELS:-}" ]] && echo "gpu_check.sh: no .whl/*.whl (carry=[\".whl\"]?):" \
        "bm25s and jsonschema may be missing" >&2
    export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
fi

{ nvidia-smi || echo "nvidia-smi: not available"; } 2>&1 | tee "$OUT/nvidia-smi.txt"
"$PY" scripts/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check.sh: gpu_check.py exited $rc; report in $OUT/gpu_check.json"
exit "$rc"
