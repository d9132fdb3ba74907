#!/bin/bash
# The real models on a GPU machine without network: the sampling and extraction benchmarks on
# CUDA, hlens find in the paper's setting (3,500 TriviaQA questions, 10 samples at T = 1.0, not
# the known models' greedy defaults) with wall times, and the probe benchmark on find's run.
#
# The wheels come in pieces (benchmarks/gpu_stage.py: `pack` here, then one `receive` per device
# call); run this in the call that carries the last piece, from the repository root:
#   python3 benchmarks/gpu_stage.py receive .gl/stage/NN && bash benchmarks/gpu_real.sh
# MODELS (default "smollm2 gemma3") picks the models: those whose wheels are not all received
# are skipped and logged. STEPS (default "bench extract find probe") picks the steps. LIMIT, if
# set, is passed to find as --limit (a short check). A device call runs at most 600 s: each step
# has its bound (BENCH_TIMEOUT 240, EXTRACT_TIMEOUT 300, FIND_TIMEOUT 480, PROBE_TIMEOUT 120), and
# an interrupted find resumes from $RUN in the next call while the machine is warm. Summaries,
# timings and a log go to $OUT (the device tool's $OUT, so that they come back).
set -u
OUT="${OUT:-/tmp/gpu_real}"
DEVICE="${DEVICE:-cuda}"
MODELS="${MODELS:-smollm2 gemma3}"
STEPS="${STEPS:-bench extract find probe}"
STAGED="${STAGED:-/tmp/hlens_stage}"
SITE="${SITE:-/tmp/hlens_site}"
RUN="${RUN:-/tmp/gpu_real_run}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-240}"
FIND_TIMEOUT="${FIND_TIMEOUT:-480}"
EXTRACT_TIMEOUT="${EXTRACT_TIMEOUT:-300}"
PROBE_TIMEOUT="${PROBE_TIMEOUT:-120}"
SAMPLE_BATCH="${SAMPLE_BATCH:-640}"  # find's --sample-batch-size (sequences a batch)
mkdir -p "$OUT" "$RUN"
L="$OUT/log.txt"
: >"$L"
# install what was received, once per set of wheels (a later call in the same warm machine
# finds the stamp and skips the 330 MB)
if ls "$STAGED"/*.whl >/dev/null 2>&1; then
  wheels=$(ls "$STAGED"/*.whl)
  if [ "$wheels" != "$(cat "$SITE/.hlens_installed" 2>/dev/null)" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$STAGED"/*.whl >>"$L" 2>&1 || { tail -20 "$L"; exit 1; }
    echo "$wheels" >"$SITE/.hlens_installed"
  fi
fi
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
python3 -c "import torch, transformers, transformer_lens, gguf, hlens; print(torch.__version__, \
transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  >>"$L" 2>&1 || { tail -20 "$L"; exit 1; }

declare -A NAME=([smollm2]=smollm2-135m-instruct [gemma3]=gemma-3-270m)

timed() {  # timed LABEL TIMEOUT CMD...: run CMD, log its exit status and wall time
  local label=$1 limit=$2 t0 rc ms
  shift 2
  t0=$(date +%s%N)
  timeout "$limit" "$@" >>"$L" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  echo "$label rc $rc $((ms / 1000)).$((ms % 1000 / 100))s" | tee -a "$L" >>"$OUT/timings.txt"
}

for m in $MODELS; do
  if ! python3 -c "import sys; from hlens.zoo import get_known, missing_packages
sys.exit(bool(missing_packages(get_known('${NAME[$m]}'))))" >>"$L" 2>&1; then
    echo "$m skipped: its packages are not installed (pieces missing?)" | tee -a "$L" \
      >>"$OUT/timings.txt"
    continue
  fi
  for step in $STEPS; do
    case $step in
      bench)
        timed "$m bench_sampling" "$BENCH_TIMEOUT" \
          python3 -m benchmarks.bench_sampling --full --only "$m" --device "$DEVICE" \
          --out "$OUT/sampling_$m"
        ;;
      extract)
        timed "$m bench_extraction_real" "$EXTRACT_TIMEOUT" bash -c "python3 -m \
          benchmarks.bench_extraction_real --only $m --device $DEVICE >'$OUT/extraction_$m.json'"
        ;;
      probe)
        timed "$m bench_probe_real (on find's run)" "$PROBE_TIMEOUT" bash -c "HLENS_BENCH_RUN=\
'$RUN/$m' python3 -m benchmarks.bench_probe_real >'$OUT/probe_$m.json'"
        ;;
      find)
        extra=()
        [ -n "${LIMIT:-}" ] && extra=(--limit "$LIMIT")
        timed "$m find (${LIMIT:-3,500} questions, 10 samples, T=1.0; --noise counter)" \
          "$FIND_TIMEOUT" \
          python3 -m hlens.cli find --model "${NAME[$m]}" --out "$RUN/$m" --device "$DEVICE" \
          --n-samples 10 --temperature 1.0 --noise counter --sample-batch-size "$SAMPLE_BATCH" \
          --no-progress "${extra[@]}"
        cp "$RUN/$m/summary.json" "$OUT/find_${m}_summary.json" 2>/dev/null
        ;;
    esac
  done
done
cat "$OUT/timings.txt"
