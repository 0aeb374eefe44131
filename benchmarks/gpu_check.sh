#!/usr/bin/env bash
# GPU check (issue #13.2): what a session with a CUDA device should measure, in one bounded go.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]          # default benchmarks/results
#
# Stages, each under `timeout` and within a total budget (GPU_CHECK_BUDGET, default 450 s, under
# 8 minutes on one GPU); a stage that fails or times out is recorded and the next one runs:
#   info            hwnas info; the environment as JSON (gpu_check-info.json)
#   table-graphs    hwnas profile --device cuda: CIFAR-sized DARTS space (32x32x3, 8 cells, 16 channels,
#                   batch 64), CUDA events around one CUDA-graph replay per timed run, after warm-up
#   calib-graphs    hwnas calibrate on that table (whole networks timed the same way)
#   table-eager     the same with --no-cuda-graphs (eager kernel launches), and calib-eager
#   tables-compare  per-key eager / graph ratios, calibration figures (gpu_check-tables.json)
#   search          benchmarks/search_speed.py on CUDA: one epoch of synthetic CIFAR-10-shaped data
#                   (warm-up + timed steps), first-order softmax, hwnas's fused step with AMP (bf16)
#                   on/off x channels-last on/off, beside the per-edge reference (pt.darts-style,
#                   NCHW, fp32); time and peak memory per step (gpu_check-search-cuda.json)
#   pytest-gpu      pytest -m gpu (gpu_check-pytest.json)
# Then a compact summary of every figure (also in gpu_check.json, with each stage's status and time).
#
# Without a CUDA device the GPU stages are recorded "skipped: no CUDA" and quick CPU smoke runs of
# the same plumbing take their place (a tiny CPU table + calibration, a 1-step CPU search_speed run),
# so the script can be tested anywhere. Environment: PYTHON (default python), GPU_CHECK_BUDGET,
# GPU_CHECK_STEPS (timed search steps, default 20).
set -u
RES=$(realpath -m "${1:-$(dirname "$0")/results}")  # before the cd: a relative RESULTS_DIR is from here
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BUDGET=${GPU_CHECK_BUDGET:-450}
STEPS=${GPU_CHECK_STEPS:-20}
REPORT=(env "PYTHONUNBUFFERED=1" "$PY" benchmarks/gpu_check_report.py)
if command -v hwnas >/dev/null 2>&1; then HWNAS=(hwnas); else
  HWNAS=("$PY" -c 'import sys; from hwnas_cli.app import main; sys.argv[0] = "hwnas"; main()'); fi
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-120}  # rich: wide tables in a log too
mkdir -p "$RES"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
START=$(date +%s)
DEADLINE=$((START + BUDGET))

record() {  # STAGE STATUS [RC SECONDS COMMAND]
  "${REPORT[@]}" record "$RES" "$1" "$2" "${3:-}" "${4:-}" "${5:-}" || echo "# (could not record stage $1)"
}

skip() {  # STAGE WHY
  echo; echo "=== $1: $2"; record "$1" "$2"
}

run_stage() {  # STAGE LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  if ((left < 15)); then skip "$name" "skipped: total budget (${BUDGET}s) spent"; return 1; fi
  ((limit > left)) && limit=$left
  echo; echo "=== $name (at most ${limit}s): $*"
  local t0 t1 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124|137) status="timeout after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "=== $name: $status"
  record "$name" "$status" "$rc" "$(awk "BEGIN { print $t1 - $t0 }")" "$*"
  return "$rc"
}

echo "# GPU check: results in $RES, logs in $LOGS, total budget ${BUDGET}s"
"${REPORT[@]}" init "$RES" "$BUDGET" || echo "# (could not start the record in $RES/gpu_check.json)"
run_stage info 40 "${HWNAS[@]}" info

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  CUDA=1
  "$PY" -c 'import torch; print("# CUDA:", torch.cuda.get_device_name(0), "| torch", torch.__version__,
             "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())'
else
  CUDA=0
  echo; echo "# NO CUDA DEVICE: torch sees no GPU here. The GPU stages are skipped (recorded as such);"
  echo "# CPU smoke runs of the same plumbing follow. These are not GPU figures."
fi

SPACE=(--space darts --input-size 32x32 --in-channels 3 --channels 16 --layers 8 --batch 64)
GRAPHS=$RES/gpu_check-darts-cuda-32x32.csv
EAGER=$RES/gpu_check-darts-cuda-eager-32x32.csv
SEARCH=(--dataset synthetic:3x32x32 --layers 8 --channels 16 --batch 64 --grads first --relaxes softmax)
if ((CUDA)); then
  rm -f "$GRAPHS" "$GRAPHS".* "$EAGER" "$EAGER".*  # one go measures afresh; tables never resume an old check
  run_stage table-graphs 60 "${HWNAS[@]}" profile --device cuda "${SPACE[@]}" --budget 0.1 --out "$GRAPHS"
  run_stage calib-graphs 45 "${HWNAS[@]}" calibrate --table "$GRAPHS" --samples 16 \
    --report "$RES/gpu_check-calibrate-graphs.json"
  run_stage table-eager 60 "${HWNAS[@]}" profile --device cuda --no-cuda-graphs "${SPACE[@]}" --budget 0.1 \
    --out "$EAGER"
  run_stage calib-eager 45 "${HWNAS[@]}" calibrate --table "$EAGER" --samples 16 \
    --report "$RES/gpu_check-calibrate-eager.json"
  run_stage tables-compare 15 "${REPORT[@]}" tables "$RES" "$RES/gpu_check-tables.json" "$GRAPHS" "$EAGER"
  run_stage search 120 "$PY" benchmarks/search_speed.py --devices cuda "${SEARCH[@]}" --amp on,off \
    --channels-last on,off --steps "$STEPS" --warmup 3 --timeout 40 --out "$RES/gpu_check-search-cuda.json"
  run_stage pytest-gpu 60 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests --junitxml "$LOGS/pytest.xml"
  [ -f "$LOGS/pytest.xml" ] && "${REPORT[@]}" pytest "$RES" "$LOGS/pytest.xml" "$RES/gpu_check-pytest.json"
else
  for stage in table-graphs calib-graphs table-eager calib-eager tables-compare search pytest-gpu; do
    skip "$stage" "skipped: no CUDA"
  done
  SMOKE=$LOGS/cpu-smoke-darts-cpu-8x8.csv  # CPU smoke tables are not figures: they stay with the logs
  run_stage cpu-smoke-table 60 "${HWNAS[@]}" profile --device cpu --space darts --input-size 8x8 --layers 3 \
    --channels 4 --batch 8 --threads 1 --budget 0.02 --out "$SMOKE"
  run_stage cpu-smoke-calib 60 "${HWNAS[@]}" calibrate --table "$SMOKE" --samples 4 --folds 2 \
    --report "$LOGS/cpu-smoke-calibration.json"
  run_stage cpu-smoke-compare 20 "${REPORT[@]}" tables "$RES" "$RES/gpu_check-cpu-smoke-tables.json" "$SMOKE"
  run_stage cpu-smoke-search 120 env OMP_NUM_THREADS=1 "$PY" benchmarks/search_speed.py --devices cpu \
    --dataset synthetic:3x32x32 --layers 3 --channels 4 --batch 16 --grads first --relaxes softmax --amp off \
    --channels-last on,off --steps 1 --warmup 0 --timeout 60 --out "$RES/gpu_check-cpu-smoke-search.json"
fi

echo; echo "=== summary ($(($(date +%s) - START)) s in all)"
"${REPORT[@]}" summary "$RES" || echo "# (the summary failed; the stage files are in $RES)"
echo "# record: $RES/gpu_check.json; stage logs: $LOGS"
exit 0
