// Kernel microbenchmarks: memory read bandwidth (the decode roofline), matmul at TinyLlama-1.1B
// shapes for decode (one token) and prefill (64 and 512 tokens), and the smaller kernels.
// Counters: bytes_per_second (weights, or the buffer read) and FLOP/s.
//
//   tinyllm-kernel-bench --benchmark_min_time=0.1
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/kv_view.hpp>

#include <benchmark/benchmark.h>

#include "bench_main.hpp"
#include "read_bandwidth.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

using namespace tinyllm;
using bench::kColdBytes;
namespace hn = hwy::HWY_NAMESPACE;

template <class T>
void fill(AlignedBuffer<T>& buf, float scale) {
  for (std::size_t i = 0; i < buf.size(); ++i) {
    const float v = scale * (float(i % 97) / 97.0f - 0.5f);
    if constexpr (std::is_same_v<T, F16>) buf[i] = F16{f32_to_f16(v)};
    else buf[i] = v;
  }
}


// Args: threads. Independent FMA chains on registers only: the compute roofline for prefill.
// The chains start from different values so that the compiler cannot merge them.
void BM_fma_peak(benchmark::State& state) {
  ThreadPool pool(unsigned(state.range(0)));
  constexpr std::size_t kChains = 16, kSteps = 1 << 18;
  std::vector<float> sink(pool.size() * 16);
  for (auto _ : state) {
    pool.run([&](unsigned t, unsigned) {
      const hn::ScalableTag<float> d;
      const auto m = hn::Set(d, 0.999f), c = hn::Set(d, 1e-3f);
      hn::Vec<decltype(d)> acc[kChains];
      for (std::size_t j = 0; j < kChains; ++j) acc[j] = hn::Set(d, 1.0f + float(j + t));
      for (std::size_t i = 0; i < kSteps; ++i)
        for (std::size_t j = 0; j < kChains; ++j) acc[j] = hn::MulAdd(acc[j], m, c);
      auto sum = acc[0];
      for (std::size_t j = 1; j < kChains; ++j) sum = hn::Add(sum, acc[j]);
      sink[t * 16] = hn::GetLane(sum);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  const double lanes = double(hn::Lanes(hn::ScalableTag<float>()));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * kChains * lanes * kSteps * pool.size(),
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_fma_peak)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

// Args: n_out, n_in, n_tok, threads. y[n_tok, n_out] = x[n_tok, n_in] · w[n_out, n_in]ᵀ.
template <class W>
void BM_matmul(benchmark::State& state) {
  const std::size_t n_out = state.range(0), n_in = state.range(1), n_tok = state.range(2);
  ThreadPool pool(unsigned(state.range(3)));
  const std::size_t w_bytes = n_out * n_in * sizeof(W);
  const std::size_t copies = n_tok == 1 ? (kColdBytes + w_bytes - 1) / w_bytes : 1;
  std::vector<AlignedBuffer<W>> weights(copies);
  for (auto& w : weights) {
    w.resize(n_out * n_in);
    fill(w, 0.1f);
  }
  AlignedBuffer<float> x(n_tok * n_in), y(n_tok * n_out);
  fill(x, 1.0f);
  std::size_t next = 0;
  for (auto _ : state) {
    cpu::matmul(pool, MatrixView<const W>(weights[next].data(), n_out, n_in), MatrixView<const float>(x.data(), n_tok, n_in),
                MatrixView<float>(y.data(), n_tok, n_out));
    next = (next + 1) % copies;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(w_bytes));
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * double(n_out) * double(n_in) * double(n_tok), benchmark::Counter::kIsIterationInvariantRate);
}

// TinyLlama-1.1B: q/o projection, gate/up, down, and the output head.
void matmul_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n_out", "n_in", "n_tok", "threads"});
  const std::int64_t shapes[][2] = {{2048, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  for (std::int64_t n_tok : {1, 64, 512})
    for (const auto& s : shapes)
      for (std::int64_t threads : {1, 2}) b->Args({s[0], s[1], n_tok, threads});
}
BENCHMARK_TEMPLATE(BM_matmul, float)->Apply(matmul_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_matmul, F16)->Apply(matmul_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

// Args: n. One token's norm over the model width.
void BM_rmsnorm(benchmark::State& state) {
  const std::size_t n = state.range(0);
  AlignedBuffer<float> x(n), w(n), out(n);
  fill(x, 1.0f);
  fill(w, 1.0f);
  for (auto _ : state) {
    cpu::rmsnorm(x.data(), w.data(), out.data(), n, 1e-5f);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(3 * n * sizeof(float)));
}
BENCHMARK(BM_rmsnorm)->Arg(2048);

// Args: n. Softmax over the vocabulary; the input is restored each time from a copy.
void BM_softmax(benchmark::State& state) {
  const std::size_t n = state.range(0);
  AlignedBuffer<float> src(n), x(n);
  fill(src, 20.0f);
  for (auto _ : state) {
    std::copy(src.begin(), src.end(), x.begin());
    cpu::softmax(x.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(float)));
}
BENCHMARK(BM_softmax)->Arg(32000);

// Args: n_tok, context, threads, K/V type (0 f32, 1 f16, 2 q8_0), layers. TinyLlama attention (32
// heads, 4 KV heads, head_dim 64): n_tok tokens of one sequence at the last positions of a context
// of the given length, in paged blocks of 16 positions, once in each of `layers` layers of their
// own K/V (22, as TinyLlama has, puts the K/V of long contexts out of cache, as in decoding; 1
// keeps it hot). Time is per layer.
void BM_attention(benchmark::State& state) {
  const std::size_t n_tok = state.range(0), n_ctx = state.range(1), n_layers = state.range(4);
  const auto type = KVType(state.range(3));
  constexpr std::size_t n_heads = 32, n_kv = 4, head_dim = 64, block = 16;
  ThreadPool pool(unsigned(state.range(2)));
  const std::size_t kv_dim = n_kv * head_dim, q_dim = n_heads * head_dim, n_blocks = (n_ctx + block - 1) / block;
  const std::size_t row_bytes = kv_row_bytes(type, kv_dim);
  AlignedBuffer<float> q(n_tok * q_dim), out(n_tok * q_dim), row(kv_dim),
      scratch(pool.size() * cpu::attention_scratch_cols(n_heads, n_kv, head_dim));
  fill(q, 1.0f);
  std::vector<AlignedBuffer<std::byte>> storage;       // per layer: K, then V
  std::vector<std::vector<std::byte*>> tables(2 * n_layers);
  std::vector<KVLayerView> views;
  for (std::size_t l = 0; l < n_layers; ++l) {
    for (std::size_t kv = 0; kv < 2; ++kv) {
      storage.emplace_back(n_blocks * block * row_bytes);
      for (std::size_t b = 0; b < n_blocks; ++b) tables[2 * l + kv].push_back(storage.back().data() + b * block * row_bytes);
    }
    std::byte* const* k = tables[2 * l].data();
    std::byte* const* v = tables[2 * l + 1].data();
    KVLayerView view{.block_size = block, .kv_dim = kv_dim};
    if (type == KVType::f32) {
      view.k_blocks = reinterpret_cast<float* const*>(k);
      view.v_blocks = reinterpret_cast<float* const*>(v);
    } else if (type == KVType::f16) {
      view.k_blocks_f16 = reinterpret_cast<F16* const*>(k);
      view.v_blocks_f16 = reinterpret_cast<F16* const*>(v);
    } else {
      view.k_blocks_q8 = reinterpret_cast<BlockQ8_0* const*>(k);
      view.v_blocks_q8 = reinterpret_cast<BlockQ8_0* const*>(v);
    }
    for (std::size_t p = 0; p < n_ctx; ++p) {
      for (std::size_t i = 0; i < kv_dim; ++i) row[i] = std::sin(float(p * 7 + i + l));
      view.store(p, row.data(), row.data());
    }
    views.push_back(view);
  }
  std::vector<std::int32_t> positions(n_tok);
  std::iota(positions.begin(), positions.end(), std::int32_t(n_ctx - n_tok));
  double flops = 0;  // q·k and the weighted sum of values: 4 * head_dim per (head, position)
  for (std::int32_t p : positions) flops += 4.0 * double(n_heads) * double(head_dim) * double(p + 1);
  for (auto _ : state) {
    for (const KVLayerView& view : views)
      cpu::attention(pool, MatrixView<const float>(q.data(), n_tok, q_dim), positions, view, n_heads, n_kv, head_dim,
                     {.scale = 0.125f}, MatrixView<float>(out.data(), n_tok, q_dim),
                     MatrixView<float>(scratch.data(), pool.size(), cpu::attention_scratch_cols(n_heads, n_kv, head_dim)));
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(flops * double(n_layers), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["KV_B/s"] = benchmark::Counter(double(2 * n_ctx * row_bytes * n_layers),
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["us/layer"] = benchmark::Counter(
      1e-6 * double(n_layers), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_attention)
    ->ArgNames({"n_tok", "ctx", "threads", "kv", "layers"})
    ->Args({1, 2048, 1, 0, 1})
    ->Args({1, 2048, 2, 0, 1})
    ->Args({1, 4096, 1, 1, 22})
    ->Args({1, 4096, 2, 1, 22})
    ->Args({1, 4096, 2, 2, 22})
    ->Args({1, 16384, 2, 1, 22})
    ->Args({64, 512, 1, 0, 1})
    ->Args({64, 512, 2, 0, 1})
    ->Args({64, 4096, 2, 1, 1})
    ->UseRealTime();

}  // namespace

TINYLLM_BENCHMARK_MAIN()
