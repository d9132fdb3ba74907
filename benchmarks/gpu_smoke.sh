#!/bin/bash
# CUDA smoke test of the hlens CLI on the bundled organism, for a GPU machine with no network.
#
# The GPU image has torch but not transformer-lens and its import-time needs. Download them here,
# into the git-ignored .whl/ (carry it to the GPU machine with the working tree):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformer-lens==4.3.0 transformers==5.24.0 datasets==5.2.0 dill==0.4.1 \
#     multiprocess==0.70.19
# Then, on the GPU machine, from the repository root: bash benchmarks/gpu_smoke.sh
# Each step's summary and a log go to $OUT (default /tmp/gpu_smoke); a step that fails is logged
# and the next one still runs. On an H200 (2026-11-27) find took 49 s and steer 19 s.
set -u
OUT="${OUT:-/tmp/gpu_smoke}"
DEVICE="${DEVICE:-cuda}"
RUN=/tmp/gpu_smoke_run
mkdir -p "$OUT"
L="$OUT/log.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
python3 -c "import torch, transformers, transformer_lens, hlens; print(torch.__version__, \
transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  >"$L" 2>&1 || { cat "$L"; exit 1; }

step() {  # step NAME TIMEOUT ARGS...: run `hlens ARGS` and log its exit status and time
  local name=$1 limit=$2 t0
  shift 2
  t0=$(date +%s)
  timeout "$limit" python3 -m hlens.cli "$@" --device "$DEVICE" >>"$L" 2>&1
  echo "$name rc $? $(($(date +%s) - t0))s" | tee -a "$L"
}
step find 300 find --model organism --out "$RUN" --no-progress
cp "$RUN/summary.json" "$OUT/find_summary.json" 2>/dev/null
step steer 120 steer --model organism --neurons "$RUN/h_neurons.json" --out "$RUN/steer" \
  --alphas 0 1 3 --n-random 1 --n-questions 40 --n-boot 50 --no-progress
cp "$RUN/steer/summary.json" "$OUT/steer_summary.json" 2>/dev/null
step explain 180 explain --model organism --neurons "$RUN/h_neurons.json" --out "$RUN/explain" \
  --max-neurons 2 --n-questions 40 --agreement-pairs 4
cp "$RUN/explain/summary.json" "$OUT/explain_summary.json" 2>/dev/null
step origin 120 origin --base organism-base --tuned organism --run "$RUN" --out "$RUN/origin" \
  --no-progress
cp "$RUN/origin/summary.json" "$OUT/origin_summary.json" 2>/dev/null
