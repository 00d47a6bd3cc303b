#!/usr/bin/env bash
# One pass over a GPU machine for the CUDA backend, in under 8 minutes: build with TINYLLM_CUDA,
# run the CUDA tests, probe the device's read bandwidth, write synthetic TinyLlama-1.1B and
# Llama-7B-shape models and measure tinyllm-bench and tinyllm-serve-bench on them with
# --device cuda. Every step has its own timeout and the script goes on when one fails; a summary
# of every step's status ends the log.
#
#   bench/cuda/stage_testdata.sh                     (here: the test data to carry, device-testdata/)
#   OUT=/some/dir bench/cuda/device_check.sh         (there: the device runner sets OUT)
#
# Environment: OUT (logs; default ./device-check-out), BUILD (build folder; default
# build-device), WORK (the large model files, not copied back; default /tmp/tinyllm-device),
# JOBS (default 16), CUDA_ARCH (default 90), NVCC (default: on PATH or /usr/local/cuda/bin/nvcc),
# BUDGET_S (seconds for the whole; default 470).
# The machine cannot download anything: a missing tool or library is reported, not installed.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-check-out}
BUILD=${BUILD:-build-device}
WORK=${WORK:-/tmp/tinyllm-device}
JOBS=${JOBS:-16}
CUDA_ARCH=${CUDA_ARCH:-90}
mkdir -p "$OUT" "$WORK"
LOG=$OUT/device_check.log
SUMMARY=()
T0=$(date +%s)
DEADLINE=$(( T0 + ${BUDGET_S:-470} ))   # every step ends by then, so the whole stays under 8 minutes

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: runs the command with a timeout (cut to what is left before the
# deadline), its output in $OUT/NAME.log.
step() {
  local name=$1 seconds=$2
  shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  if [ $left -lt 10 ]; then SUMMARY+=("SKIPPED $name (out of time)"); log "-- $name: skipped, out of time"; return 1; fi
  [ $seconds -gt $left ] && seconds=$left
  log "== $name (timeout ${seconds}s): $*"
  local start=$(date +%s)
  timeout --kill-after=10 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - start ))
  tail -n 40 "$OUT/$name.log" >> "$LOG"
  if [ $rc -eq 0 ]; then SUMMARY+=("ok      $name (${took}s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then SUMMARY+=("TIMEOUT $name (${took}s)")
  else SUMMARY+=("FAILED  $name (rc $rc, ${took}s)"); fi
  log "-- $name: rc $rc in ${took}s"
  return $rc
}

# ---- what the machine has ----
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
{
  echo "date: $(date -u)"; echo "host: $(hostname)"; echo "cpus: $(nproc)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --short 2>/dev/null | wc -l) changed files"
  for tool in cmake g++ make ninja nvidia-smi timeout; do
    printf '%-12s %s\n' "$tool" "$(command -v $tool || echo MISSING)"
  done
  printf '%-12s %s\n' nvcc "$([ -x "$NVCC" ] && "$NVCC" --version | tail -n 2 | tr '\n' ' ' || echo "MISSING ($NVCC)")"
  # The libraries the build looks for (Debian package in brackets).
  for spec in "hwy/highway.h:libhwy-dev" "eigen3/Eigen/Core:libeigen3-dev" "doctest/doctest.h:doctest-dev" \
              "CLI/CLI.hpp:libcli11-dev" "benchmark/benchmark.h:libbenchmark-dev" "nlohmann/json.hpp:nlohmann-json3-dev"; do
    header=${spec%%:*} package=${spec##*:}
    if [ -e "/usr/include/$header" ] || [ -e "/usr/local/include/$header" ]; then
      printf '%-22s found\n' "$header"
    else
      printf '%-22s MISSING (Debian: %s; no network here, so the build needing it will fail)\n' "$header" "$package"
    fi
  done
} > "$OUT/preflight.log" 2>&1
cat "$OUT/preflight.log" >> "$LOG"
grep MISSING "$OUT/preflight.log" | sed 's/^/MISSING: /' | tee -a "$LOG"

step nvidia_smi 20 nvidia-smi
step nvidia_smi_query 20 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv

# ---- build: only the targets this check runs ----
step configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTINYLLM_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DTINYLLM_BUILD_EXAMPLES=OFF -DTINYLLM_INSTALL=OFF
step build_cuda_library 180 cmake --build "$BUILD" -j "$JOBS" --target tinyllm_cuda
step build_programs 300 cmake --build "$BUILD" -j "$JOBS" --target test_cuda_kernels_test test_cuda_model_test \
  test_kernels_cuda_block_dot_test tinyllm-synth tinyllm-bench tinyllm-serve-bench

# ---- synthetic models, written on the CPUs while the GPU runs the tests ----
SYNTH=$BUILD/bench/tinyllm-synth
MODELS=(tinyllama-1.1b:Q4_0 tinyllama-1.1b:Q4_K_M llama-7b:Q4_0 llama-7b:Q4_K_M)
declare -A SYNTH_PID
if [ -x "$SYNTH" ]; then
  for spec in "${MODELS[@]}"; do
    shape=${spec%%:*} type=${spec##*:}
    log "== synth $shape $type (background, timeout 240s)"
    ( timeout 240 "$SYNTH" --shape "$shape" --type "$type" -o "$WORK/$shape-$type.gguf" \
        > "$OUT/synth_$shape-$type.log" 2>&1; echo "rc $?" >> "$OUT/synth_$shape-$type.log" ) &
    SYNTH_PID[$spec]=$!
  done
else
  log "no $SYNTH: no synthetic models, no model benchmarks"
fi

# ---- the GPU ----
# The model tests read ../shared/testdata, or the part of it that bench/cuda/stage_testdata.sh
# copied into device-testdata/ (carried to the machine with the working tree).
if [ ! -d ../shared/testdata ] && [ -d device-testdata ]; then export TINYLLM_TESTDATA=$PWD/device-testdata; fi
log "test data: ${TINYLLM_TESTDATA:-../shared/testdata}"
step ctest_cuda 150 ctest --test-dir "$BUILD" -R cuda --output-on-failure --timeout 120
step build_bandwidth 60 "$NVCC" -O2 -arch=sm_"$CUDA_ARCH" bench/cuda/bandwidth.cu -o "$WORK/bandwidth"
step bandwidth 60 "$WORK/bandwidth" 4

# ---- whole models on the GPU: the single-stream figures of every model first, then serving ----
BENCH=$BUILD/bench/tinyllm-bench
SERVE=$BUILD/bench/tinyllm-serve-bench
# wait_model SPEC: waits for that model's writer; FILE is then the model, or empty.
wait_model() {
  local spec=$1
  FILE=$WORK/${spec%%:*}-${spec##*:}.gguf
  if [ -n "${SYNTH_PID[$spec]:-}" ]; then wait "${SYNTH_PID[$spec]}" 2>/dev/null; SYNTH_PID[$spec]=; fi
  [ -s "$FILE" ] || FILE=
}
for spec in "${MODELS[@]}"; do
  wait_model "$spec"
  if [ -z "$FILE" ]; then SUMMARY+=("SKIPPED bench $spec (model not written; see synth_*.log)"); continue; fi
  step "bench_${spec/:/-}" 90 "$BENCH" -m "$FILE" -p 512 -n 128 -r 2 --device cuda
done
for spec in tinyllama-1.1b:Q4_K_M llama-7b:Q4_0 tinyllama-1.1b:Q4_0 llama-7b:Q4_K_M; do
  wait_model "$spec"
  [ -n "$FILE" ] && step "serve_${spec/:/-}" 120 "$SERVE" -m "$FILE" -c 1,16,64 -p 128 -n 128 --device cuda
done
for f in "$OUT"/synth_*.log; do [ -e "$f" ] && echo "$f: $(tail -n 1 "$f")" >> "$LOG"; done

log "== summary (total $(( $(date +%s) - T0 ))s)"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
