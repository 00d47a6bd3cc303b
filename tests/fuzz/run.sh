#!/usr/bin/env bash
# tests/fuzz/run.sh [TARGET|all] [SECONDS]
#
# Builds the libFuzzer targets (tests/fuzz/CMakeLists.txt) with clang in their own build folder,
# makes each target's seed corpus there, runs each target for SECONDS (default 60) and prints,
# per target, its executions, coverage (cov: and ft: of libFuzzer's final stats), corpus size and
# findings. Exits 1 when a target found a crash (a sanitizer report, an uncaught exception, a
# timeout, an out-of-memory or a leak), 2 on a usage or build error, 77 (skipped, as CTest reads
# it) when clang or cmake is missing.
#
# TARGET: gguf, llama2c, gguf_tokenizer, hf_tokenizer, jinja, server_request, or all (the default).
# Environment:
#   TINYLLM_FUZZ_BUILD     build folder (default: build-fuzz under the repository root)
#   TINYLLM_TESTDATA_DIR   test data (default: ../shared/testdata beside the repository)
#   TINYLLM_FUZZ_JOBS      build parallelism (default 1)
#   TINYLLM_FUZZ_PARALLEL  targets fuzzed at once, one core each (default 1)
#   TINYLLM_FUZZ_ARGS      more libFuzzer flags, e.g. "-runs=1000000" or "-max_len=65536"
#   TINYLLM_FUZZ_KERNELS   a libtinyllm_dispatch.a built already from this source (the test suite's
#                          short fuzz leg passes the main build's): the model-loading targets link
#                          its kernels, not instrumented, instead of compiling them under the
#                          sanitizers (about 4 minutes of a core each). Without it (a campaign)
#                          the kernels are instrumented too.
#
# The corpus a target grows is kept in BUILD/corpus/TARGET between runs; seeds are written afresh
# to BUILD/seeds/TARGET from the test data (files over 1 MB skipped) and tests/fuzz/seeds/TARGET.
# tests/fuzz/regressions/TARGET holds the reproducers of earlier findings: each runs once first;
# one that still crashes counts as a finding (exit 1) and is kept out of the corpus, the others
# are seeds.
# Findings land in BUILD/findings/TARGET as crash-*, leak-*, timeout-*, oom-* files, with the
# fuzzer's log beside them; reproduce one with BUILD/tests/fuzz/tinyllm_fuzz_TARGET FILE, shrink it
# with -minimize_crash=1 -runs=100000 FILE, and keep the small result under
# tests/fuzz/regressions/TARGET/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
all_targets=(gguf llama2c gguf_tokenizer hf_tokenizer jinja server_request)

target=${1:-all}
seconds=${2:-60}
if [[ $target == -h || $target == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $target == all ]]; then
  targets=("${all_targets[@]}")
elif [[ " ${all_targets[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  echo "run.sh: unknown target '$target' (one of: ${all_targets[*]}, all)" >&2
  exit 2
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "run.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
  exit 2
fi

build=${TINYLLM_FUZZ_BUILD:-$root/build-fuzz}
[[ $build = /* ]] || build=$PWD/$build
testdata=${TINYLLM_TESTDATA_DIR:-$root/../shared/testdata}
jobs=${TINYLLM_FUZZ_JOBS:-1}
parallel=${TINYLLM_FUZZ_PARALLEL:-1}
if ! [[ $jobs =~ ^[1-9][0-9]*$ && $parallel =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: TINYLLM_FUZZ_JOBS and TINYLLM_FUZZ_PARALLEL must be positive whole numbers" >&2
  exit 2
fi
read -r -a extra_args <<< "${TINYLLM_FUZZ_ARGS:-}"
max_seed_bytes=$((1024 * 1024))

for tool in clang clang++ cmake; do
  command -v "$tool" > /dev/null || { echo "run.sh: $tool not found (the fuzz targets need clang's libFuzzer): skipped" >&2; exit 77; }
done

# ---- configure and build ----
echo "== configuring $build"
# The build type only matters to tinyllm_fuzz_seeds: the targets set their own -O2 -g, asserts on.
build_type=()
[[ -f $build/CMakeCache.txt ]] || build_type=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if ! CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${build_type[@]}" \
       -DTINYLLM_FUZZ=ON -DTINYLLM_BUILD_TESTS=OFF -DTINYLLM_BUILD_EXAMPLES=OFF -DTINYLLM_BUILD_BENCH=OFF \
       -DTINYLLM_INSTALL=OFF -DTINYLLM_CUDA=OFF -DTINYLLM_DISPATCH_LIBRARY="${TINYLLM_FUZZ_KERNELS:-}" \
       > "$build.configure.log" 2>&1; then
  cat "$build.configure.log" >&2
  echo "run.sh: cmake configure failed" >&2
  exit 2
fi
mv "$build.configure.log" "$build/configure.log"
if ! grep -qiE '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang' "$build/CMakeCache.txt"; then
  echo "run.sh: $build was configured with another compiler; remove it or set TINYLLM_FUZZ_BUILD" >&2
  exit 2
fi
build_targets=(tinyllm_fuzz_seeds)
for t in "${targets[@]}"; do build_targets+=("tinyllm_fuzz_$t"); done
# All of them through the target that depends on them, so that -j compiles several at once (make
# builds the goals of one command line one after the other).
[[ $target == all ]] && build_targets=(tinyllm_fuzz)
echo "== building ${build_targets[*]} (-j$jobs; the first build takes several minutes)"
if ! nice -n 10 cmake --build "$build" --target "${build_targets[@]}" -j "$jobs" > "$build/build.log" 2>&1; then
  tail -40 "$build/build.log" >&2
  echo "run.sh: building ${build_targets[*]} failed (log: $build/build.log)" >&2
  exit 2
fi
bin=$build/tests/fuzz

# ---- seeds ----
seeds=$build/seeds
rm -rf "$seeds"
mkdir -p "$seeds"
if [[ -d $testdata ]]; then
  "$bin/tinyllm_fuzz_seeds" "$testdata" "$seeds" || echo "run.sh: tinyllm_fuzz_seeds failed; going on with the other seeds" >&2
else
  echo "run.sh: no test data at $testdata: seeds from tests/fuzz/seeds only" >&2
fi
# copy_seed FILE TARGET [PREFIX_BYTE]: a seed file of at most 1 MB, with the target's mode byte first.
copy_seed() {
  local file=$1 t=$2 prefix=${3:-}
  local size
  size=$(stat -c %s "$file")
  if (( size > max_seed_bytes )); then
    return 0
  fi
  mkdir -p "$seeds/$t"
  if [[ -n $prefix ]]; then
    { printf "$prefix"; cat "$file"; } > "$seeds/$t/$(basename "$file")"
  else
    cp "$file" "$seeds/$t/"
  fi
}
shopt -s nullglob
for f in "$testdata"/arch/*.gguf "$testdata"/vocab/*.gguf "$testdata"/lora/*.gguf; do
  copy_seed "$f" gguf
done
for f in "$testdata"/vocab/*.gguf "$testdata"/arch/*.gguf; do
  copy_seed "$f" gguf_tokenizer
done
for f in "$testdata"/llama2c/*.bin; do
  case $(basename "$f") in
    tok*.bin|tokenizer*.bin) copy_seed "$f" llama2c '\001' ;;
    *) copy_seed "$f" llama2c '\000' ;;
  esac
done
for t in "${all_targets[@]}"; do
  for f in "$here/seeds/$t"/*; do copy_seed "$f" "$t"; done
  mkdir -p "$seeds/$t"
done

# ---- run ----
# fuzz_target T: runs T, prints its lines, and leaves its summary line in $build/findings/T/summary
# and "1" in $build/findings/T/found when it found something.
fuzz_target() {
  local t=$1 corpus=$build/corpus/$1 findings=$build/findings/$1 log rc found=0 f
  local execs rate rss last cov ft corpus_files corpus_kb artifacts what result line
  local regressions=() failing=()
  mkdir -p "$corpus" "$findings"
  touch "$findings/.started"
  log=$findings/fuzz-$(date +%Y%m%d-%H%M%S).log
  echo "== $t: ${seconds}s, corpus $corpus, seeds $(find "$seeds/$t" -type f | wc -l) files, log $log"
  # The reproducers of earlier findings first, each once. Those that pass join the seeds; one that
  # still crashes (its bug not fixed yet) is reported and left out, so that the fuzzing goes on.
  for f in "$here/regressions/$t"/*; do
    if nice -n 10 "$bin/tinyllm_fuzz_$t" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 "$f" \
         > "$findings/regression-$(basename "$f").log" 2>&1; then
      mkdir -p "$seeds/$t-regressions"
      cp "$f" "$seeds/$t-regressions/"
      regressions=("$seeds/$t-regressions")
      rm -f "$findings/regression-$(basename "$f").log"
    else
      failing+=("$(basename "$f")")
      echo "   regression $(basename "$f") still crashes: $(grep -m1 -E '^SUMMARY: |ERROR: |what\(\)' "$findings/regression-$(basename "$f").log" || true)"
    fi
  done
  rc=0
  # One job, one worker (libFuzzer writes the job's output to fuzz-0.log in its working folder).
  (cd "$findings" && nice -n 10 "$bin/tinyllm_fuzz_$t" -jobs=1 -workers=1 \
      -max_total_time="$seconds" -dict="$here/dictionaries/$t.dict" \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$findings/" "${extra_args[@]}" \
      "$corpus" "$seeds/$t" "${regressions[@]}" > "$findings/parent.log" 2>&1) || rc=$?
  if [[ -f $findings/fuzz-0.log ]]; then
    mv "$findings/fuzz-0.log" "$log"
  else
    mv "$findings/parent.log" "$log"
  fi
  rm -f "$findings/parent.log"

  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | tail -1 | awk '{print $2}')
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | tail -1 | awk '{print $2}')
  rss=$(grep -oE 'stat::peak_rss_mb: +[0-9]+' "$log" | tail -1 | awk '{print $2}')
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<< "$last" | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' <<< "$last" | awk '{print $2}')
  if [[ -z $execs ]]; then execs=$(grep -oE '^#[0-9]+' <<< "$last" | tr -d '#'); fi
  corpus_files=$(find "$corpus" -type f | wc -l)
  corpus_kb=$(du -sk "$corpus" | cut -f1)
  artifacts=$(find "$findings" -maxdepth 1 -type f -newer "$findings/.started" \
                \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort | tr '\n' ' ')
  what=$(grep -m1 -E '^SUMMARY: |ERROR: libFuzzer: |==ERROR: ' "$log" || true)
  if [[ -n $artifacts ]] || grep -qE 'ERROR: libFuzzer|==ERROR: |^SUMMARY: ' "$log"; then
    found=1
    result="FINDING: ${what:-see log} ${artifacts}"
  elif (( ${#failing[@]} )); then
    found=1
    result="no new findings; ${#failing[@]} regression(s) still crash: ${failing[*]}"
  elif (( rc != 0 )); then
    result="fuzzer exited with $rc (see log)"
    found=1
  else
    result="no findings"
  fi
  line=$(printf '%-15s execs %-9s exec/s %-6s cov %-6s ft %-6s corpus %s files (%s KB), peak rss %s MB: %s' \
         "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus_files" "$corpus_kb" "${rss:-?}" "$result")
  echo "   $line"
  echo "$line" > "$findings/summary"
  echo "$found" > "$findings/found"
}

running=0
for t in "${targets[@]}"; do
  rm -f "$build/findings/$t/summary" "$build/findings/$t/found"
  if (( parallel == 1 )); then
    fuzz_target "$t"
  else
    fuzz_target "$t" &
    running=$((running + 1))
    if (( running >= parallel )); then
      wait -n || true
      running=$((running - 1))
    fi
  fi
done
wait || true
summary=()
found_any=0
for t in "${targets[@]}"; do
  if [[ -f $build/findings/$t/summary ]]; then
    summary+=("$(cat "$build/findings/$t/summary")")
    [[ $(cat "$build/findings/$t/found") == 0 ]] || found_any=1
  else
    summary+=("$t: did not finish (see its log under $build/findings/$t)")
    found_any=1
  fi
done

echo
echo "== summary (logs and findings under $build/findings)"
printf '%s\n' "${summary[@]}"
if (( found_any )); then
  exit 1
fi
exit 0
