#!/usr/bin/env bash
# The tests that read untrusted input or run threads, built with sanitizers in a build tree of
# their own, and run there:
#   tests/sanitize/run.sh address BUILD_DIR [LIB]   ASan + UBSan: the file parsers (GGUF,
#                                             llama2.c, safetensors, Hugging Face folders),
#                                             tokenizers, chat templates and Jinja, JSON Schema
#                                             grammars, the sampler, the engine
#   tests/sanitize/run.sh thread BUILD_DIR [LIB]    TSan: the thread pool, the engine, and
#                                             tinyllm-server under its load, limits (slow
#                                             clients, SIGTERM), auth and extras tests
# Any finding stops the program (-fno-sanitize-recover=all) and fails its test. The kernels'
# dispatch library (tinyllm_dispatch, Highway's SIMD code for every x86 target) is not
# instrumented: LIB, a libtinyllm_dispatch.a the main build made from this source, is linked as
# it is (CTest passes it), else it is built here without sanitizers. The tests, the engine, the
# parsers and the server are instrumented.
# TINYLLM_SANITIZE_TESTS (a ctest -R expression) overrides the tests run.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
kind=${1:?usage: run.sh address|thread BUILD_DIR}
build=${2:?usage: run.sh address|thread BUILD_DIR}
dispatch=${3:-}
jobs=${JOBS:-$(nproc)}

case "$kind" in
  address)
    sanitizers=address,undefined
    tests=${TINYLLM_SANITIZE_TESTS:-'^(io/|model/hf_test:|text/[a-z0-9_]+_test:|sample/|serve/(engine|speculative)_test:)'}
    # Leak checking is on (ASan's default on Linux); a report stops the test.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
    ;;
  thread)
    sanitizers=thread
    tests=${TINYLLM_SANITIZE_TESTS:-'^(core/|serve/engine_test:|server/(auth|limits|load|extras):)'}
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$src/tests/sanitize/tsan.supp}
    ;;
  *)
    echo "run.sh: the kind is address or thread, not '$kind'" >&2
    exit 2
    ;;
esac

echo "== sanitize=$sanitizers in $build"
start=$SECONDS
# -O1: the sanitizers' usual level (fast enough to run, quick to build, exact stacks).
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" \
  -DTINYLLM_SANITIZE="$sanitizers" -DTINYLLM_BUILD_BENCH=OFF -DTINYLLM_INSTALL=OFF -DTINYLLM_CUDA=OFF \
  -DTINYLLM_DISPATCH_LIBRARY="$( [ -f "$dispatch" ] && echo "$dispatch" )" >/dev/null
# The programs: tests/CMakeLists.txt lists them (tinyllm_sanitize_<kind>_tests).
cmake --build "$build" -j"$jobs" --target "tinyllm_sanitize_${kind}_tests"
built=$SECONDS
status=0
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900 -R "$tests" || status=1
echo "== sanitize=$sanitizers: build $((built - start)) s, tests $((SECONDS - built)) s"
exit $status
