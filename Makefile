# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   sets up .venv, then runs the whole DAG on the embedded tiny demo
#   make test   sets up .venv, then runs lint, format checks and the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SNAKEMAKE := $(BIN)/snakemake
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup demo test lint report dry-run paper-dry-run clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	@command -v java >/dev/null || echo "warning: no java on PATH; the caption benchmarks" \
		"(pycocoevalcap's tokenizer and METEOR) need a Java runtime"
	touch $@

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --profile profiles/local
	@echo "Tables: results/tables/summary.{csv,md,tex}  Plots: results/plots/"
	@cat results/tables/summary.md

report: demo
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --profile profiles/local --report results/report.html
	@echo "Report: results/report.html"

lint: setup
	$(BIN)/ruff check src scripts tests
	$(BIN)/ruff format --check src scripts tests
	$(BIN)/snakefmt --check workflow
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --lint --configfile config/paper.yaml

test: setup lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

dry-run: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) -n --profile profiles/local

paper-dry-run: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) -n --configfile config/paper.yaml

clean:
	rm -rf results logs benchmarks .snakemake

# On a machine with one NVIDIA GPU, a CUDA build of torch and DeepSpeed (not the CPU-only
# .venv): the paper's GPU paths for a few steps each (1B full and 7B LoRA under ZeRO-2, 1B
# full under FSDP, lm-eval in bf16) within 450 s; one table of step time, tokens/s, memory,
# MFU (targets as PASS/FAIL) and loss. `bash scripts/gpu_check.sh --dry-run` shows the plan.
GPU_PYTHON ?= python3
.PHONY: gpu-check
gpu-check:
	PYTHON=$(GPU_PYTHON) bash scripts/gpu_check.sh

# Try the SLURM profile on this machine: a one-node SLURM cluster on localhost (installs
# Debian's slurm-wlm and munge when missing; needs root), the demo through
# --profile profiles/slurm, the jobs as the cluster saw them, then the cluster stopped.
.PHONY: slurm-demo
slurm-demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m sbt.slurm_demo

# The demo grid's evaluations with evaluation.group: run and: benchmark, in temporary copies:
# model loads, summed job wall time (benchmarks/ TSVs), the ratio, identical numbers asserted.
.PHONY: bench-eval
bench-eval: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python scripts/bench_eval.py
