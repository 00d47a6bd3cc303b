// Quantized matmul microbenchmarks: cpu::qmatmul for Q8_0, Q4_0, Q4_K, Q5_K and Q6_K weights at
// TinyLlama-1.1B shapes, beside the two rooflines it is measured against; BM_packed_* are the
// same on the 16-row packed layout the loader gives them (cpu/qpack.hpp). --target=AVX2 (or SSE4,
// AVX3, AVX3_DL) runs the kernels of that target instead of this CPU's best.
//   decode  (one token): bytes_per_second = weight bytes streamed; compare BM_read_bandwidth.
//   prefill (many tokens): OP/s = 2 * n_out * n_in * n_tok / s; compare BM_vnni_peak.
//
//   tinyllm-quant-bench --benchmark_min_time=0.1 --benchmark_filter='BM_(read|vnni|qmatvec|packed_qmatvec)'
//   tinyllm-quant-bench --benchmark_min_time=0.1 --benchmark_filter='BM_(vnni|qgemm)'
#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>

#include <benchmark/benchmark.h>

#include "bench_main.hpp"
#include "read_bandwidth.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using namespace tinyllm;
using bench::kColdBytes;


std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Weight bytes for every benchmark: random, but each byte below 0x3C, so that any two of them
// read as an f16 scale make a finite positive number below 1 (timing does not depend on the
// values; NaN or huge scales might). Filled once: a decode benchmark slides over all of it.
const std::uint8_t* cold_bytes() {
  static const AlignedBuffer<std::uint8_t> bytes = [] {
    AlignedBuffer<std::uint8_t> b(kColdBytes);
    constexpr std::size_t kTile = 1 << 20;
    std::uint64_t seed = 42;
    for (std::size_t i = 0; i < kTile; i += 8) {
      const std::uint64_t r = splitmix(seed);
      for (std::size_t j = 0; j < 8; ++j) b[i + j] = std::uint8_t((r >> (8 * j) & 0xFF) % 0x3C);
    }
    for (std::size_t i = kTile; i < kColdBytes; i += kTile) std::memcpy(b.data() + i, b.data(), kTile);
    return b;
  }();
  return bytes.data();
}


#if defined(__x86_64__)
constexpr int kChains = 12;
constexpr std::size_t kSteps = 1 << 18;

// kSteps rounds of kChains independent vpdpbusd chains on registers; the sum into out[0 .. 16).
__attribute__((target("avx512f,avx512vnni"))) void vnni_chains(std::int32_t seed, std::int32_t* out) {
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(char(seed));
  __m512i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(j);
  for (std::size_t i = 0; i < kSteps; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    asm("" : "+v"(a), "+v"(b));
  }
  __m512i s = acc[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_epi32(s, acc[j]);
  _mm512_storeu_si512(out, s);
}

// Args: threads. The int8 roofline for prefill (one vpdpbusd = 64 multiply-adds = 128
// operations). Registered where the CPU has AVX-512 VNNI.
void BM_vnni_peak(benchmark::State& state) {
  ThreadPool pool(unsigned(state.range(0)));
  std::vector<std::int32_t> sink(pool.size() * 16);
  for (auto _ : state) {
    pool.run([&](unsigned t, unsigned) { vnni_chains(std::int32_t(t + 5), sink.data() + t * 16); });
    benchmark::DoNotOptimize(sink.data());
  }
  state.counters["OP/s"] =
      benchmark::Counter(128.0 * kChains * kSteps * pool.size(), benchmark::Counter::kIsIterationInvariantRate);
}
const bool vnni_peak_registered = __builtin_cpu_supports("avx512vnni") &&
    benchmark::RegisterBenchmark("BM_vnni_peak", BM_vnni_peak)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
#endif

// Args: n_out, n_in, n_tok, threads. Times run(pool, x, y, scratch, copy) for y[n_tok, n_out] =
// x[n_tok, n_in] · w[n_out, n_in]ᵀ, quantizing x included, over weight copies 0 .. copies - 1 in
// turn; w_bytes of weights (as the file stores them) count as read per call.
template <class Run>
void time_qmatmul(benchmark::State& state, std::size_t w_bytes, std::size_t copies, Run run) {
  const std::size_t n_out = state.range(0), n_in = state.range(1), n_tok = state.range(2);
  ThreadPool pool(unsigned(state.range(3)));
  AlignedBuffer<float> x(n_tok * n_in), y(n_tok * n_out);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) / 97.0f - 0.5f;
  cpu::QuantScratch scratch(n_tok, n_in);
  const MatrixView<const float> xv(x.data(), n_tok, n_in);
  const MatrixView<float> yv(y.data(), n_tok, n_out);
  std::size_t next = 0;
  for (auto _ : state) {
    run(pool, xv, yv, scratch, next);
    next = (next + 1) % copies;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(w_bytes));
  state.counters["OP/s"] =
      benchmark::Counter(2.0 * double(n_out) * double(n_in) * double(n_tok), benchmark::Counter::kIsIterationInvariantRate);
}

// cpu::qmatmul on weights as the file lays them out, straight from the cold bytes.
template <class Block, DType kType>
void BM_qmatmul(benchmark::State& state) {
  const std::size_t n_out = state.range(0), n_in = state.range(1), n_tok = state.range(2);
  const std::size_t row_blocks = n_in / cpu::block_values<Block>;
  const std::size_t w_bytes = n_out * row_blocks * sizeof(Block);
  const std::size_t slot = (w_bytes + 63) / 64 * 64;
  // Few tokens stream the weights from DRAM; many reuse each weight block from cache anyway.
  const std::size_t copies = n_tok < 64 ? kColdBytes / slot : 1;
  time_qmatmul(state, w_bytes, copies, [&](ThreadPool& pool, auto x, auto y, cpu::QuantScratch& scratch, std::size_t c) {
    cpu::qmatmul(pool, kType, cold_bytes() + c * slot, n_out, n_in, x, y, scratch);
  });
}

// TinyLlama-1.1B: q/o projection, gate/up, down, and the output head.
constexpr std::int64_t kShapes[][2] = {{2048, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};

void matvec_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n_out", "n_in", "n_tok", "threads"});
  for (const auto& s : kShapes)
    for (std::int64_t threads : {1, 2}) b->Args({s[0], s[1], 1, threads});
}
void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n_out", "n_in", "n_tok", "threads"});
  for (std::int64_t n_tok : {128, 512})
    for (int s = 0; s < 3; ++s)
      for (std::int64_t threads : {1, 2}) b->Args({kShapes[s][0], kShapes[s][1], n_tok, threads});
}
// Few tokens: where the decode kernel hands over to the panel kernel.
void small_batch_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n_out", "n_in", "n_tok", "threads"});
  for (std::int64_t n_tok : {2, 3, 4, 6, 8, 16}) b->Args({5632, 2048, n_tok, 2});
}
// Batched decode of a serving step (one token per stream), on packed weights.
void stream_batch_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n_out", "n_in", "n_tok", "threads"});
  for (std::int64_t n_tok : {8, 12, 16, 24, 32}) b->Args({5632, 2048, n_tok, 2});
}

// The same on packed weights: copies packed from the cold bytes, 256 MiB of them for decode.
template <class Block, DType kType>
void BM_qmatmul_packed(benchmark::State& state) {
  const std::size_t n_out = state.range(0), n_in = state.range(1), n_tok = state.range(2);
  const std::size_t w_bytes = n_out * (n_in / cpu::block_values<Block>) * sizeof(Block);
  const std::size_t slot = (cpu::packed_bytes(kType, n_out, n_in) + 63) / 64 * 64;
  const std::size_t copies = n_tok < 64 ? std::max<std::size_t>(1, (kColdBytes / 2) / slot) : 1;
  AlignedBuffer<std::byte> packed(copies * slot);
  for (std::size_t c = 0; c < copies; ++c)
    cpu::pack_rows(kType, cold_bytes() + (c * w_bytes) % (kColdBytes - w_bytes), n_out, n_in, packed.data() + c * slot, 0,
                   (n_out + cpu::kPackRows - 1) / cpu::kPackRows);
  time_qmatmul(state, w_bytes, copies, [&](ThreadPool& pool, auto x, auto y, cpu::QuantScratch& scratch, std::size_t c) {
    cpu::qmatmul_packed(pool, kType, packed.data() + c * slot, n_out, n_in, x, y, scratch);
  });
}

#define TINYLLM_PACKED_BENCH(Block, Type)                                                                              \
  BENCHMARK_TEMPLATE(BM_qmatmul_packed, Block, Type)->Name("BM_packed_qmatvec<" #Block ">")->Apply(matvec_shapes)->UseRealTime()->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(BM_qmatmul_packed, Block, Type)->Name("BM_packed_qgemm<" #Block ">")->Apply(gemm_shapes)->UseRealTime()->Unit(benchmark::kMillisecond); \
  BENCHMARK_TEMPLATE(BM_qmatmul_packed, Block, Type)->Name("BM_packed_qbatch<" #Block ">")->Apply(stream_batch_shapes)->UseRealTime()->Unit(benchmark::kMicrosecond)

TINYLLM_PACKED_BENCH(BlockQ8_0, DType::Q8_0);
TINYLLM_PACKED_BENCH(BlockQ4_0, DType::Q4_0);
TINYLLM_PACKED_BENCH(BlockQ4_K, DType::Q4_K);
TINYLLM_PACKED_BENCH(BlockQ5_K, DType::Q5_K);
TINYLLM_PACKED_BENCH(BlockQ6_K, DType::Q6_K);

#define TINYLLM_QUANT_BENCH(Block, Type)                                                                                 \
  BENCHMARK_TEMPLATE(BM_qmatmul, Block, Type)->Name("BM_qmatvec<" #Block ">")->Apply(matvec_shapes)->UseRealTime()->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(BM_qmatmul, Block, Type)->Name("BM_qgemm<" #Block ">")->Apply(gemm_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);    \
  BENCHMARK_TEMPLATE(BM_qmatmul, Block, Type)->Name("BM_qsmall<" #Block ">")->Apply(small_batch_shapes)->UseRealTime()->Unit(benchmark::kMicrosecond)

TINYLLM_QUANT_BENCH(BlockQ8_0, DType::Q8_0);
TINYLLM_QUANT_BENCH(BlockQ4_0, DType::Q4_0);
TINYLLM_QUANT_BENCH(BlockQ4_K, DType::Q4_K);
TINYLLM_QUANT_BENCH(BlockQ5_K, DType::Q5_K);
TINYLLM_QUANT_BENCH(BlockQ6_K, DType::Q6_K);

}  // namespace

TINYLLM_BENCHMARK_MAIN()
