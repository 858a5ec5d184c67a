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

$(STAMP): requirements.txt requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	touch $@

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --profile profiles/local
	@echo "Tables: results/tables/summary.{csv,md,tex}  Plots: results/plots/"
	@cat results/tables/summary.md

report: demo
	PATH=$(CURDIR)/$(BIN):$$PATH $(SNAKEMAKE) --profile profiles/local --report results/report.html
	@echo "Report: results/report.html"

lint: setup
	$(BIN)/ruff check scripts tests
	$(BIN)/ruff format --check scripts tests
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

# On a machine with one NVIDIA GPU and a CUDA build of torch (not the CPU-only .venv):
# 1B full fine-tuning (FSDP) and 7B LoRA for a few steps; step time, tokens/s, memory, MFU.
GPU_PYTHON ?= python3
.PHONY: gpu-check
gpu-check:
	PYTHON=$(GPU_PYTHON) bash scripts/gpu_check.sh
