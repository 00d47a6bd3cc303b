#pragma once
// The decode roofline both kernel benchmarks report beside their matmuls: how fast this machine
// reads memory, with the same ThreadPool split the kernels use. Included once per benchmark
// program (it registers BM_read_bandwidth).
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <hwy/highway.h>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tinyllm::bench {

// A decode matmul reads its weights from DRAM: benchmarks cycle through enough copies of a
// matrix to defeat a last-level cache of this size.
inline constexpr std::size_t kColdBytes = 512u << 20;

// Sum of a float range with four independent vector accumulators.
inline float sum_range(const float* p, std::size_t n) {
  namespace hn = hwy::HWY_NAMESPACE;
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (std::size_t i = 0; i + 4 * N <= n; i += 4 * N) {
    a0 = hn::Add(a0, hn::LoadU(d, p + i));
    a1 = hn::Add(a1, hn::LoadU(d, p + i + N));
    a2 = hn::Add(a2, hn::LoadU(d, p + i + 2 * N));
    a3 = hn::Add(a3, hn::LoadU(d, p + i + 3 * N));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// Args: threads. Reads a 1 GiB buffer; each thread sums a contiguous share.
inline void BM_read_bandwidth(benchmark::State& state) {
  ThreadPool pool(unsigned(state.range(0)));
  const std::size_t n = (std::size_t(1) << 30) / sizeof(float);
  AlignedBuffer<float> buf(n);
  for (std::size_t i = 0; i < n; ++i) buf[i] = float(i % 7);  // also faults the pages in
  std::vector<float> partial(pool.size());
  for (auto _ : state) {
    pool.run([&](unsigned t, unsigned nt) {
      const std::size_t chunk = n / nt / 64 * 64;
      const std::size_t b = t * chunk, e = t + 1 == nt ? n : b + chunk;
      partial[t] = sum_range(buf.data() + b, e - b);
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(float)));
}
BENCHMARK(BM_read_bandwidth)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace tinyllm::bench
