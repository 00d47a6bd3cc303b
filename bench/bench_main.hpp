#pragma once
// main() of the Google Benchmark programs: --target=NAME first picks the kernels' target
// (cpu::use_kernel_target), then Google Benchmark takes the other flags. The target in use is
// printed in the context block.
#include <tinyllm/core/error.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string_view>
#include <vector>

namespace tinyllm::bench {

inline int benchmark_main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--target=")) {
      try {
        cpu::use_kernel_target(arg.substr(9));
      } catch (const Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = int(rest.size());
  benchmark::AddCustomContext("kernel_target", cpu::kernel_target());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tinyllm::bench

#define TINYLLM_BENCHMARK_MAIN() \
  int main(int argc, char** argv) { return tinyllm::bench::benchmark_main(argc, argv); }
