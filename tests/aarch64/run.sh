#!/usr/bin/env bash
# The kernel, quant and whole-model tests cross-built for aarch64 and run under qemu-user.
#   tests/aarch64/run.sh [BUILD_DIR]        (default build-aarch64; one sub-folder per -march)
# Needs, on an x86-64 Debian 12 host (./quickstart test installs them):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64
# Without them it prints "TINYLLM_SKIP: <reason>" and exits 77 (CTest: skipped).
# Environment (see cmake/aarch64-linux-gnu.cmake):
#   TINYLLM_AARCH64_MARCH  the baselines to build and test, space-separated; default: plain NEON
#                          (armv8-a: the int8 dot product by widening multiplies) and NEON with
#                          the dot-product instruction (armv8.2-a+dotprod: sdot). The last one
#                          runs every kernel and quant test and the whole-model tests (stories260K
#                          and the architecture files against their references); the others the
#                          tests of the int8 dot product (quantized matmul, bounds), the one code
#                          that differs between the baselines
# qemu-aarch64's default CPU (max) runs every one of them.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-aarch64}
marches=${TINYLLM_AARCH64_MARCH:-armv8-a armv8.2-a+dotprod}
jobs=${JOBS:-$(nproc)}

skip() { echo "TINYLLM_SKIP: $*"; exit 77; }
command -v aarch64-linux-gnu-g++ >/dev/null || skip "no aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)"
command -v qemu-aarch64 >/dev/null || skip "no qemu-aarch64 (apt-get install qemu-user)"
[ -f /usr/lib/aarch64-linux-gnu/cmake/hwy/hwy-config.cmake ] && [ -e /lib/ld-linux-aarch64.so.1 ] ||
  skip "no arm64 Highway (dpkg --add-architecture arm64 && apt-get update && apt-get install libhwy-dev:arm64)"

status=0
last=${marches##* }
for march in $marches; do
  if [ "$march" = "$last" ]; then target=tinyllm_layer_tests tests='^(kernels/|quant/|model/(stories260k_test|arch_test):)'
  else target=tinyllm_int8_dot_tests tests='^kernels/(qmatmul_test|bounds_test):'; fi
  dir="$build/${march//[^A-Za-z0-9.]/_}"
  echo "== aarch64 -march=$march in $dir"
  start=$SECONDS
  cmake -S "$src" -B "$dir" -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64-linux-gnu.cmake" \
    -DTINYLLM_AARCH64_MARCH="$march" -DCMAKE_BUILD_TYPE=Release \
    -DTINYLLM_NATIVE=OFF -DTINYLLM_BUILD_EXAMPLES=OFF -DTINYLLM_BUILD_BENCH=OFF -DTINYLLM_INSTALL=OFF >/dev/null
  # The test programs (tests/CMakeLists.txt: tinyllm_layer_tests, tinyllm_int8_dot_tests).
  if ! cmake --build "$dir" -j"$jobs" --target "$target"; then
    echo "== aarch64 -march=$march: the build failed"
    status=1
    continue
  fi
  built=$SECONDS
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 1200 -R "$tests" || status=1
  echo "== aarch64 -march=$march: build $((built - start)) s, tests under qemu $((SECONDS - built)) s"
done
exit $status
