// cpu::attention against ref::attention: GQA ratios 1, 2, 4, 8, tokens at arbitrary positions,
// a contiguous KV cache and the same data in shuffled blocks of a paged one, 1 to 3 threads; K/V
// stored as F16 and as Q8_0; sliding windows over tables whose out-of-window blocks were released.
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/reference.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// One layer's K and V for positions [0, n_ctx), stored as T (float, F16 or BlockQ8_0) in blocks of
// block_size tokens whose order in storage is a random permutation of their order in the table.
// block_size >= n_ctx gives a contiguous cache.
template <class T>
struct BlockKVOf {
  std::size_t block_size, kv_dim;
  std::vector<T> k_storage, v_storage;
  std::vector<T*> k_table, v_table;

  BlockKVOf(const std::vector<float>& k, const std::vector<float>& v, std::size_t n_ctx, std::size_t kv_dim_,
            std::size_t block_size_, std::mt19937& rng)
      : block_size(block_size_), kv_dim(kv_dim_) {
    const std::size_t n_blocks = (n_ctx + block_size - 1) / block_size, spare = 2;
    const std::size_t row = std::is_same_v<T, BlockQ8_0> ? kv_dim / kQK : kv_dim;   // elements of T per row
    std::vector<std::size_t> slot(n_blocks + spare);
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    T nan{};
    if constexpr (std::is_same_v<T, F16>) nan.bits = 0x7e00;
    else if constexpr (std::is_same_v<T, BlockQ8_0>) nan.d = 0x7e00;
    else nan = kNaN;
    k_storage.assign(slot.size() * block_size * row, nan);  // unused slots and tails stay NaN
    v_storage.assign(k_storage.size(), nan);
    for (std::size_t b = 0; b < n_blocks; ++b) {
      k_table.push_back(k_storage.data() + slot[b] * block_size * row);
      v_table.push_back(v_storage.data() + slot[b] * block_size * row);
    }
    const KVLayerView view = this->view();
    for (std::size_t p = 0; p < n_ctx; ++p) view.store(p, k.data() + p * kv_dim, v.data() + p * kv_dim);
  }
  KVLayerView view() const {
    if constexpr (std::is_same_v<T, F16>)
      return {.block_size = block_size, .kv_dim = kv_dim, .k_blocks_f16 = k_table.data(), .v_blocks_f16 = v_table.data()};
    else if constexpr (std::is_same_v<T, BlockQ8_0>)
      return {.block_size = block_size, .kv_dim = kv_dim, .k_blocks_q8 = k_table.data(), .v_blocks_q8 = v_table.data()};
    else
      return {k_table.data(), v_table.data(), block_size, kv_dim};
  }
  // Forgets (nulls) the table entries of blocks that hold only positions before `pos`, as a
  // sliding-window cache does when it releases them.
  void release_before(std::size_t pos) {
    for (std::size_t b = 0; (b + 1) * block_size <= pos && b < k_table.size(); ++b) k_table[b] = v_table[b] = nullptr;
  }
};
using BlockKV = BlockKVOf<float>;

// Each value rounded to the nearest F16 and back.
std::vector<float> round_to_f16(std::vector<float> v) {
  for (float& e : v) e = f16_to_f32(f32_to_f16(e));
  return v;
}

// Each row of kv_dim values through GGUF's Q8_0 rule (quant/) and back.
std::vector<float> round_to_q8_0(std::vector<float> v, std::size_t kv_dim) {
  std::vector<BlockQ8_0> blocks(kv_dim / kQK);
  for (std::size_t r = 0; r < v.size() / kv_dim; ++r) {
    quantize_row(v.data() + r * kv_dim, blocks.data(), kv_dim);
    dequantize_row(blocks.data(), v.data() + r * kv_dim, kv_dim);
  }
  return v;
}

std::vector<float> random_vector(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& e : v) e = u(rng);
  return v;
}

struct Shape {
  std::size_t n_heads, n_kv_heads, head_dim;
};

// Runs `kernel` on a q/out with padded rows and a NaN-filled scratch; returns the outputs, [n_tok, q_dim].
template <class Kernel>
std::vector<float> run(Kernel kernel, ThreadPool& pool, const std::vector<float>& q,
                       const std::vector<std::int32_t>& positions, const KVLayerView& kv, const Shape& s,
                       AttentionParams params = {.scale = 0.0f}) {
  if (params.scale == 0.0f) params.scale = 1.0f / std::sqrt(float(s.head_dim));
  const std::size_t n_tok = positions.size(), q_dim = s.n_heads * s.head_dim, stride = q_dim + 5;
  std::vector<float> q_padded(n_tok * stride, kNaN), out_padded(n_tok * stride, kNaN);
  for (std::size_t t = 0; t < n_tok; ++t) std::copy_n(q.data() + t * q_dim, q_dim, q_padded.data() + t * stride);
  // The reference needs a row of n_ctx scores; the kernel its own columns.
  const std::size_t n_ctx = std::size_t(*std::max_element(positions.begin(), positions.end())) + 1;
  const std::size_t cols = std::max(cpu::attention_scratch_cols(s.n_heads, s.n_kv_heads, s.head_dim), n_ctx);
  std::vector<float> scratch(pool.size() * cols, kNaN);
  kernel(pool, MatrixView<const float>(q_padded.data(), n_tok, q_dim, stride), std::span(positions), kv, s.n_heads,
         s.n_kv_heads, s.head_dim, params,
         MatrixView<float>(out_padded.data(), n_tok, q_dim, stride),
         MatrixView<float>(scratch.data(), pool.size(), cols));
  std::vector<float> out(n_tok * q_dim);
  for (std::size_t t = 0; t < n_tok; ++t) {
    std::copy_n(out_padded.data() + t * stride, q_dim, out.data() + t * q_dim);
    for (std::size_t c = q_dim; c < stride; ++c) CHECK(std::isnan(out_padded[t * stride + c]));  // padding untouched
  }
  return out;
}

double max_abs_error(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  }
  return worst;
}

const auto ref_attention = [](auto&&... args) { ref::attention(args...); };
const auto cpu_attention = [](auto&&... args) { cpu::attention(args...); };

}  // namespace

TEST_CASE("cpu::attention equals ref::attention: GQA, arbitrary positions, paged KV, 1-3 threads") {
  test::for_each_target([&] {
    ThreadPool pool1(1), pool2(2), pool3(3);
    ThreadPool* pools[] = {&pool1, &pool2, &pool3};
    std::mt19937 rng(7);
    const Shape shapes[] = {{4, 4, 64}, {8, 4, 64}, {8, 2, 16}, {16, 2, 128}, {8, 1, 17}, {6, 3, 8}, {4, 1, 80},
                            {2, 2, 1}};
    const std::vector<std::int32_t> position_sets[] = {{0}, {5}, {0, 1, 2, 3}, {15, 16, 17}, {200, 3, 64, 0, 129},
                                                       {600, 257, 3}};   // 600: three segments
    for (const Shape& s : shapes)
      for (const auto& positions : position_sets)
        for (std::size_t block_size : {1, 5, 16}) {
          CAPTURE(s.n_heads);
          CAPTURE(s.n_kv_heads);
          CAPTURE(s.head_dim);
          CAPTURE(positions.size());
          CAPTURE(block_size);
          const std::size_t n_ctx = std::size_t(*std::max_element(positions.begin(), positions.end())) + 1;
          const std::size_t kv_dim = s.n_kv_heads * s.head_dim;
          const auto k = random_vector(n_ctx * kv_dim, rng), v = random_vector(n_ctx * kv_dim, rng);
          const auto q = random_vector(positions.size() * s.n_heads * s.head_dim, rng);
          const BlockKV contiguous(k, v, n_ctx, kv_dim, n_ctx, rng), paged(k, v, n_ctx, kv_dim, block_size, rng);

          const auto want = run(ref_attention, pool1, q, positions, contiguous.view(), s);
          CHECK(run(ref_attention, pool1, q, positions, paged.view(), s) == want);
          const auto got = run(cpu_attention, pool1, q, positions, contiguous.view(), s);
          // Scores q.k/sqrt(d) are off by ~1e-6 at most; weights sum to 1 and |v| <= 1, so the
          // output is off by about the same, plus a float sum over at most 601 positions.
          CHECK(max_abs_error(got, want) <= 2e-5);
          for (ThreadPool* pool : pools) {
            CAPTURE(pool->size());
            CHECK(run(cpu_attention, *pool, q, positions, paged.view(), s) == got);  // same arithmetic, any order
          }
        }
  });
}

// Long contexts: the kernel splits positions into segments of kAttentionSegment and merges their
// softmax partials; with few items per thread each segment is a work unit of its own; tokens of
// one sequence at consecutive positions share key loads in tiles. None of it may change the result: it matches the reference (scores in double, softmax in float, sums in
// double), and it is the same bits with 1-3 threads and whether a token runs alone or in a batch.
TEST_CASE("cpu::attention at 4k positions equals ref::attention, the same with any threads and alone or batched") {
  ThreadPool pool1(1), pool2(2), pool3(3);
  ThreadPool* pools[] = {&pool1, &pool2, &pool3};
  std::mt19937 rng(41);
  const std::size_t n_ctx = 4096, block_size = 16;
  // Scattered positions, and a run of consecutive ones across a segment boundary (3840), which
  // the kernel serves in tiles of tokens sharing each key row.
  const std::vector<std::int32_t> position_sets[] = {{4095, 4000, 2500, 1024, 1023, 256, 255, 0},
                                                     {3836, 3837, 3838, 3839, 3840, 3841, 3842, 3843, 3844}};
  for (const Shape& s : {Shape{16, 2, 64}, Shape{8, 1, 64}})   // GQA (group 8), MQA; light enough for qemu
    for (const auto& positions : position_sets)
      for (std::size_t window : {0u, 1000u}) {
      CAPTURE(s.n_heads);
      CAPTURE(s.n_kv_heads);
      CAPTURE(window);
      const std::size_t kv_dim = s.n_kv_heads * s.head_dim, q_dim = s.n_heads * s.head_dim;
      // Keys large enough that the softmax is far from flat, so segments' maxima differ.
      auto k = random_vector(n_ctx * kv_dim, rng);
      for (float& x : k) x *= 4.0f;
      const auto v = random_vector(n_ctx * kv_dim, rng);
      const auto q = random_vector(positions.size() * q_dim, rng);
      const BlockKV f32(k, v, n_ctx, kv_dim, block_size, rng);
      const BlockKVOf<F16> f16(k, v, n_ctx, kv_dim, block_size, rng);
      const BlockKVOf<BlockQ8_0> q8(k, v, n_ctx, kv_dim, block_size, rng);
      const AttentionParams params{.scale = 1.0f / std::sqrt(float(s.head_dim)), .window = window};
      for (const KVLayerView& view : {f32.view(), f16.view(), q8.view()}) {
        CAPTURE(kv_type_name(view.type()));
        const auto want = run(ref_attention, pool1, q, positions, view, s, params);
        test::for_each_target([&] {
          const auto got = run(cpu_attention, pool1, q, positions, view, s, params);
          const double err = max_abs_error(got, want);
          MESSAGE("max abs error against the reference: " << err);
          CHECK(err <= 5e-6);   // measured up to 2.6e-7
          for (ThreadPool* pool : pools) {
            CAPTURE(pool->size());
            CHECK(run(cpu_attention, *pool, q, positions, view, s, params) == got);
            for (std::size_t t : {0u, 2u, 4u, 7u}) {   // alone: few items, so every segment is a unit of work
              CAPTURE(t);
              const std::vector<float> q_t(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim);
              const auto alone = run(cpu_attention, *pool, q_t, {positions[t]}, view, s, params);
              CHECK(alone == std::vector<float>(got.begin() + t * q_dim, got.begin() + (t + 1) * q_dim));
            }
          }
        });
      }
    }
}

TEST_CASE("cpu::attention: a token at position 0 returns value 0 of its KV head") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    std::mt19937 rng(8);
    const Shape s{8, 2, 64};
    const auto k = random_vector(2 * 64, rng), v = random_vector(2 * 64, rng);
    const auto q = random_vector(8 * 64, rng);
    const BlockKV kv(k, v, 1, 128, 4, rng);
    const auto out = run(cpu_attention, pool, q, {0}, kv.view(), s);
    for (std::size_t h = 0; h < 8; ++h)
      for (std::size_t i = 0; i < 64; ++i) CHECK(out[h * 64 + i] == v[(h / 4) * 64 + i]);
  });
}

TEST_CASE("attention with a sliding window equals full attention over the window's positions alone") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    std::mt19937 rng(11);
    const Shape s{8, 2, 16};
    const std::size_t kv_dim = s.n_kv_heads * s.head_dim, n_ctx = 40;
    const auto k = random_vector(n_ctx * kv_dim, rng), v = random_vector(n_ctx * kv_dim, rng);
    const BlockKV kv(k, v, n_ctx, kv_dim, 7, rng);
    for (std::size_t window : {1u, 3u, 16u, 39u, 40u, 100u}) {
      for (float cap : {0.0f, 0.5f}) {   // a cap of 0.5 bends scores of this size strongly
        CAPTURE(window);
        CAPTURE(cap);
        const std::vector<std::int32_t> positions = {0, 2, 17, 39};
        const auto q = random_vector(positions.size() * s.n_heads * s.head_dim, rng);
        const AttentionParams params{.scale = 0.25f, .window = window, .softcap = cap};
        const auto want = run(ref_attention, pool, q, positions, kv.view(), s, params);
        CHECK(max_abs_error(run(cpu_attention, pool, q, positions, kv.view(), s, params), want) <= 2e-5);
        // Independently: each token alone, against a cache that holds only its window, re-indexed from 0.
        for (std::size_t t = 0; t < positions.size(); ++t) {
          const std::size_t pos = std::size_t(positions[t]), first = pos + 1 > window ? pos + 1 - window : 0;
          const std::size_t n = pos + 1 - first;
          const std::vector<float> k_win(k.begin() + first * kv_dim, k.begin() + (pos + 1) * kv_dim),
              v_win(v.begin() + first * kv_dim, v.begin() + (pos + 1) * kv_dim);
          const BlockKV only(k_win, v_win, n, kv_dim, n, rng);
          const std::vector<float> q_t(q.begin() + t * s.n_heads * s.head_dim, q.begin() + (t + 1) * s.n_heads * s.head_dim);
          const AttentionParams full{.scale = 0.25f, .softcap = cap};
          const auto alone = run(ref_attention, pool, q_t, {std::int32_t(n - 1)}, only.view(), s, full);
          const std::vector<float> row(want.begin() + t * s.n_heads * s.head_dim, want.begin() + (t + 1) * s.n_heads * s.head_dim);
          CHECK(max_abs_error(alone, row) <= 1e-6);
        }
      }
    }
  });
}

namespace {

// cpu::attention over K/V stored as T (F16 or BlockQ8_0) equals the F32 kernel over the same values
// rounded as T stores them (`rounded(values, kv_dim)`: the widening gives the very floats the F32
// path loads, and the same grouping of positions: the same arithmetic), is within 2e-5 of the
// reference, and within a bound of attention over the unrounded values: with |k|, |v| <= 1 moved
// by at most `err` each, a score moves by at most scale * head_dim * err.
template <class T, class Round>
void check_rounded_storage(const std::vector<Shape>& shapes, Round rounded, double err, unsigned seed) {
  test::for_each_target([&] {
    ThreadPool pool1(1), pool3(3);
    std::mt19937 rng(seed);
    const std::vector<std::int32_t> position_sets[] = {{0}, {5}, {0, 1, 2, 3}, {15, 16, 17}, {200, 3, 64, 0, 129},
                                                       {600, 257, 3}};   // 600: three segments
    double worst_vs_f32 = 0;
    for (const Shape& s : shapes)
      for (const auto& positions : position_sets)
        for (std::size_t block_size : {1, 5, 16}) {
          CAPTURE(s.n_heads);
          CAPTURE(s.n_kv_heads);
          CAPTURE(s.head_dim);
          CAPTURE(positions.size());
          CAPTURE(block_size);
          const std::size_t n_ctx = std::size_t(*std::max_element(positions.begin(), positions.end())) + 1;
          const std::size_t kv_dim = s.n_kv_heads * s.head_dim;
          const auto k = random_vector(n_ctx * kv_dim, rng), v = random_vector(n_ctx * kv_dim, rng);
          const auto q = random_vector(positions.size() * s.n_heads * s.head_dim, rng);
          const BlockKVOf<T> stored(k, v, n_ctx, kv_dim, block_size, rng);
          const BlockKV as_stored(rounded(k, kv_dim), rounded(v, kv_dim), n_ctx, kv_dim, block_size, rng);
          const BlockKV exact(k, v, n_ctx, kv_dim, block_size, rng);

          // The reference reads the storage as exactly its rounded values.
          const auto want = run(ref_attention, pool1, q, positions, as_stored.view(), s);
          CHECK(run(ref_attention, pool1, q, positions, stored.view(), s) == want);
          const auto got = run(cpu_attention, pool1, q, positions, stored.view(), s);
          CHECK(got == run(cpu_attention, pool1, q, positions, as_stored.view(), s));
          CHECK(max_abs_error(got, want) <= 2e-5);
          CHECK(run(cpu_attention, pool3, q, positions, stored.view(), s) == got);
          const double scale = 1.0 / std::sqrt(double(s.head_dim));
          const double vs_f32 = max_abs_error(got, run(ref_attention, pool1, q, positions, exact.view(), s));
          CHECK(vs_f32 <= err + 2 * scale * double(s.head_dim) * err + 2e-5);
          worst_vs_f32 = std::max(worst_vs_f32, vs_f32);
        }
    MESSAGE("against F32 K/V: max abs output difference " << worst_vs_f32);
    CHECK(worst_vs_f32 > 0);   // the storage really rounds
  });
}

}  // namespace

TEST_CASE("cpu::attention over F16 K/V equals attention over the F16-rounded values, and is close to F32") {
  check_rounded_storage<F16>({{4, 4, 64}, {8, 4, 64}, {8, 2, 16}, {16, 2, 128}, {8, 1, 17}, {6, 3, 8}, {2, 2, 1}},
                             [](const std::vector<float>& x, std::size_t) { return round_to_f16(x); },
                             std::ldexp(1.0, -11), 17);   // half an F16 step at |x| <= 1
}

TEST_CASE("cpu::attention over Q8_0 K/V equals attention over the dequantized values, and is close to F32") {
  // kv_dim a multiple of 32; heads of 8 and 16 values start inside a Q8_0 block; 4096 takes the
  // kernel's heap buffer; 200 positions cross its chunks of 64 (and 32 for heads of 256). Each
  // value moves by at most half a step (amax / 254 <= 1 / 254) plus 127 times the f16 rounding of
  // the step (<= 2^-11).
  check_rounded_storage<BlockQ8_0>({{4, 4, 64}, {8, 4, 64}, {8, 2, 16}, {8, 4, 8}, {16, 2, 128}, {4, 2, 256}, {2, 1, 4096}},
                                   round_to_q8_0, 1.0 / 254 + std::ldexp(1.0, -11), 23);
}

TEST_CASE("Q8_0 K/V rows: a block holding a NaN or an infinity reads as NaN, and rows must tile into blocks") {
  std::vector<float> k(64, 0.5f), v(64, -0.25f);
  k[40] = std::numeric_limits<float>::infinity();
  v[3] = kNaN;
  std::mt19937 rng(1);
  const BlockKVOf<BlockQ8_0> kv(k, v, 1, 64, 1, rng);
  const KVLayerView view = kv.view();
  for (std::size_t i = 0; i < 64; ++i) {
    CAPTURE(i);
    CHECK(std::isnan(view.key_at(0, i)) == (i >= 32));
    CHECK(std::isnan(view.value_at(0, i)) == (i < 32));
    if (i < 32) CHECK(view.key_at(0, i) == doctest::Approx(0.5).epsilon(1e-3));
    if (i >= 32) CHECK(view.value_at(0, i) == doctest::Approx(-0.25).epsilon(1e-3));
  }
  CHECK(kv_row_bytes(KVType::q8_0, 64) == 2 * sizeof(BlockQ8_0));
  CHECK_THROWS_WITH_AS(kv_row_bytes(KVType::q8_0, 48), doctest::Contains("rows of a multiple of 32"), Error);
  CHECK(kv_type_from_name("q8_0") == KVType::q8_0);
  CHECK_THROWS_WITH_AS(kv_type_from_name("q4"), doctest::Contains("f32, f16 or q8_0"), Error);
}

TEST_CASE("sliding-window attention never reads the released blocks before the window") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    std::mt19937 rng(19);
    const Shape s{8, 2, 16};
    const std::size_t kv_dim = s.n_kv_heads * s.head_dim, n_ctx = 61;
    const auto k = random_vector(n_ctx * kv_dim, rng), v = random_vector(n_ctx * kv_dim, rng);
    for (std::size_t window : {1u, 7u, 16u, 30u}) {
      for (std::size_t block_size : {1u, 4u, 7u}) {
        CAPTURE(window);
        CAPTURE(block_size);
        // A prefill chunk ending the cache: the earliest query sets what can be released.
        const std::vector<std::int32_t> positions = {56, 57, 58, 59, 60};
        const auto q = random_vector(positions.size() * s.n_heads * s.head_dim, rng);
        const AttentionParams params{.scale = 0.25f, .window = window};
        const BlockKV full(k, v, n_ctx, kv_dim, block_size, rng);
        BlockKV released(k, v, n_ctx, kv_dim, block_size, rng);
        BlockKVOf<F16> released16(k, v, n_ctx, kv_dim, block_size, rng);
        released.release_before(attention_start(56, window));
        released16.release_before(attention_start(56, window));
        REQUIRE(released.k_table[0] == nullptr);
        const auto want = run(cpu_attention, pool, q, positions, full.view(), s, params);
        CHECK(run(cpu_attention, pool, q, positions, released.view(), s, params) == want);
        CHECK(run(ref_attention, pool, q, positions, released.view(), s, params) ==
              run(ref_attention, pool, q, positions, full.view(), s, params));
        const BlockKV rounded(round_to_f16(k), round_to_f16(v), n_ctx, kv_dim, block_size, rng);
        CHECK(run(cpu_attention, pool, q, positions, released16.view(), s, params) ==
              run(cpu_attention, pool, q, positions, rounded.view(), s, params));
      }
    }
  });
}
