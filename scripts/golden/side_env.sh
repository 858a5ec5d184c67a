#!/usr/bin/env bash
# The study's software stack in its own virtual environment, for producing golden data:
# transformers 4.31 (slow SentencePiece tokenizers), peft 0.4, the packages lm-eval v0.3
# needs, and what the study's MMLU script imports. Not used by the workflow or the tests;
# they compare against the golden files this environment produced (tests/golden/).
#   bash scripts/golden/side_env.sh [DIR]      (default: .golden-venv)
set -euo pipefail
VENV=${1:-.golden-venv}
PYTHON=${PYTHON:-python3.11}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch: the CPU build (an unpinned torch pulls a CUDA build). numpy < 2 for 2023 code.
"$VENV/bin/python" -m pip install --quiet \
    torch==2.13.0 numpy==1.26.4 \
    transformers==4.31.0 tokenizers==0.13.3 sentencepiece==0.1.99 protobuf==4.25.3 \
    accelerate==0.21.0 peft==0.4.0 datasets==2.14.4 \
    jsonlines numexpr omegaconf pycountry pytablewriter rouge-score sacrebleu==1.5.0 \
    scikit-learn sqlitedict tqdm-multiprocess zstandard pybind11 \
    fire pandas==2.0.3 pydantic==1.10.13 pyarrow==14.0.2 fsspec==2023.6.0
"$VENV/bin/python" -c "import transformers, torch; print('side env:', transformers.__version__, torch.__version__)"
