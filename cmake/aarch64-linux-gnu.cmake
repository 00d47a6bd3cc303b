# Cross build for 64-bit ARM with Debian 12's cross compiler; the programs run under qemu-user.
# Needs (on an x86-64 Debian host; ./quickstart test installs them):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64
# Highway for arm64 comes from Debian's multiarch package (config under
# /usr/lib/aarch64-linux-gnu/cmake/hwy); Eigen and doctest are architecture-independent headers.
# Used with TINYLLM_NATIVE=OFF (run-time dispatch) by tests/aarch64/run.sh:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DTINYLLM_NATIVE=OFF
#
# TINYLLM_AARCH64_MARCH: the baseline (default armv8-a, plain NEON; armv8.2-a+dotprod gives the
# int8 kernels the sdot instruction through __ARM_FEATURE_DOTPROD). Highway 1.0.3's NEON target
# also wants the AES instructions: under static dispatch the baseline must then be
# armv8-a+crypto, or every Highway op called outside its per-target code fails to inline
# ("target specific option mismatch"); run-time dispatch adds them itself.
# Highway's SVE targets are left out by the top-level CMakeLists.txt (NEON only).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Debian's cross compiler searches /usr/include and /usr/lib/aarch64-linux-gnu after its own
# folders, so multiarch packages (libhwy-dev:arm64) are found without a CMAKE_FIND_ROOT_PATH; the
# library architecture keeps find_package away from the host's /usr/lib/x86_64-linux-gnu.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(TINYLLM_AARCH64_MARCH "armv8-a" CACHE STRING "-march of the aarch64 build")
set(CMAKE_C_FLAGS_INIT "-march=${TINYLLM_AARCH64_MARCH}")
set(CMAKE_CXX_FLAGS_INIT "-march=${TINYLLM_AARCH64_MARCH}")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TINYLLM_AARCH64_MARCH)

# ctest and doctest_discover_tests run every test program through qemu, on the arm64 C library
# of the multiarch packages (libc6:arm64, libstdc++6:arm64, libhwy1:arm64 under
# /usr/lib/aarch64-linux-gnu, found by their loader /lib/ld-linux-aarch64.so.1). Not
# "-L /usr/aarch64-linux-gnu" plus a library path: that loads the cross package's ld.so with the
# multiarch libc.so.6, two builds of glibc, and the first test hangs at start-up.
# TINYLLM_QEMU_CPU (default max: every feature qemu emulates, the dot product, AES and SVE2).
find_program(TINYLLM_QEMU_AARCH64 qemu-aarch64 REQUIRED)
set(TINYLLM_QEMU_CPU "max" CACHE STRING "qemu-aarch64 -cpu model that runs the tests")
set(CMAKE_CROSSCOMPILING_EMULATOR ${TINYLLM_QEMU_AARCH64} -cpu ${TINYLLM_QEMU_CPU} -L /)
