// y = x · wᵀ with float, F16 or BF16 weights (Highway), widened to f32 as they are loaded.
//
// Weight rows and token rows are both contiguous along n_in, so every output is a dot product.
// A register block of kRowBlock weight rows × kTokBlock tokens keeps that many vector
// accumulators: each loaded weight vector serves kTokBlock tokens, each token vector kRowBlock
// rows, and the accumulators are independent FMA chains. That runs toward the FMA peak when the
// operands come from cache, hence the loop nest (per thread, over its share of the output rows):
//
//   for each panel of weight rows (sized to stay in L2)
//     for each chunk of kKChunk inputs
//       for each block of kTokBlock tokens (their chunk stays in L1)
//         for each block of kRowBlock rows of the panel (streamed from L2)
//           register block; add its sums into y
//
// so each weight is read from memory once and y is revisited once per input chunk. A single
// token streams kDecodeRows rows at a time at memory bandwidth instead.
//
// Every output is summed the same way whatever the token count, block or thread: lane-wise
// FMAs over each input chunk in order, the same reduction, chunk sums added in order. So a
// token's outputs are bit-identical alone or in a batch, on any number of threads.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_MATMUL_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_MATMUL_HPP_
#undef TINYLLM_KERNELS_CPU_MATMUL_HPP_
#else
#define TINYLLM_KERNELS_CPU_MATMUL_HPP_
#endif
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <type_traits>

#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {
namespace detail {

// 4 × 6 accumulators + 4 weights + 1 token vector fit AVX-512's 32 registers; AVX2 has 16.
inline constexpr std::size_t kRowBlock = 4;
inline constexpr std::size_t kTokBlock = HWY_TARGET <= HWY_AVX3 ? 6 : 2;
// A single token (decode) has no reuse to gain, only loads to keep in flight: more weight
// streams at once, one accumulator each as for every other token count.
inline constexpr std::size_t kDecodeRows = HWY_TARGET <= HWY_AVX3 ? 8 : 4;
// Inputs per pass: kTokBlock token rows of 1024 floats (24 KiB) stay in L1. Multiple of every
// vector length, so only the last chunk of a row has a tail.
inline constexpr std::size_t kKChunk = 1024;
// Weight bytes per row panel: a quarter of a 1 MiB L2 (64 F32 or 128 F16 rows of a chunk).
inline constexpr std::size_t kPanelBytes = 256 * 1024;

// Out of registers (R * T accumulators), GCC folds the token load into each of the R FMAs that
// use it: R loads instead of one, which makes the kernel load bound (about 30% slower on Zen 5).
// An empty asm that may change v forces one load into a register.
HWY_INLINE void keep_in_register(VF& v) {
#if HWY_ARCH_X86 && HWY_COMPILER_GCC  // GCC and Clang
  asm("" : "+v"(v.raw));
#else
  (void)v;
#endif
}

// y[t * y_stride + r] (+)= the sum of the lanes of acc[r][t].
template <std::size_t R, std::size_t T>
HWY_INLINE void store_sums(const VF (&acc)[R][T], float* y, std::size_t y_stride, bool accumulate) {
  const DF d;
  const hn::Full128<float> d4;
  for (std::size_t t = 0; t < T; ++t) {
    float* out = y + t * y_stride;
    std::size_t r = 0;
    for (; r + 4 <= R; r += 4) {
      const auto sums = sum_of_four(d, acc[r][t], acc[r + 1][t], acc[r + 2][t], acc[r + 3][t]);
      hn::StoreU(accumulate ? hn::Add(hn::LoadU(d4, out + r), sums) : sums, d4, out + r);
    }
    for (; r < R; ++r) out[r] = (accumulate ? out[r] : 0.0f) + reduce_sum(d, acc[r][t]);
  }
}

// y[t * y_stride + r] (+)= dot(w row r, x row t) over n values, for r < R, t < T.
template <std::size_t R, std::size_t T, class W>
HWY_INLINE void dot_block(const W* HWY_RESTRICT w, std::size_t w_stride, const float* HWY_RESTRICT x,
                          std::size_t x_stride, std::size_t n, float* HWY_RESTRICT y, std::size_t y_stride,
                          bool accumulate) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  VF acc[R][T];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);

  std::size_t i = 0;
  for (; i + N <= n; i += N) {
    VF wv[R];
    for (std::size_t r = 0; r < R; ++r) wv[r] = load_f32(d, w + r * w_stride + i);
    for (std::size_t t = 0; t < T; ++t) {
      VF xv = hn::LoadU(d, x + t * x_stride + i);
      keep_in_register(xv);
      for (std::size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
    }
  }
  if (i < n) {
    VF wv[R];
    for (std::size_t r = 0; r < R; ++r) wv[r] = load_f32_partial(d, w + r * w_stride + i, n - i);
    for (std::size_t t = 0; t < T; ++t) {
      const VF xv = load_f32_partial(d, x + t * x_stride + i, n - i);
      for (std::size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
    }
  }

  store_sums<R, T>(acc, y, y_stride, accumulate);
}

// dot_block for r_count <= R rows and t_count <= T tokens, both known only at run time.
template <std::size_t R = kRowBlock, std::size_t T = kTokBlock, class W>
HWY_INLINE void dot_block_any(std::size_t r_count, std::size_t t_count, const W* w, std::size_t w_stride,
                              const float* x, std::size_t x_stride, std::size_t n, float* y, std::size_t y_stride,
                              bool accumulate) {
  if constexpr (R > 1)
    if (r_count < R)
      return dot_block_any<R - 1, T>(r_count, t_count, w, w_stride, x, x_stride, n, y, y_stride, accumulate);
  if constexpr (T > 1)
    if (t_count < T)
      return dot_block_any<R, T - 1>(r_count, t_count, w, w_stride, x, x_stride, n, y, y_stride, accumulate);
  dot_block<R, T>(w, w_stride, x, x_stride, n, y, y_stride, accumulate);
}

// y[:, o0 .. o1] for one thread's share of the output rows.
template <class W>
void matmul_rows(MatrixView<const W> w, MatrixView<const float> x, MatrixView<float> y, std::size_t o0,
                 std::size_t o1) {
  const std::size_t n_in = w.cols, n_tok = x.rows;
  if (n_tok == 1) {  // each row block streams its rows through, chunk after chunk
    for (std::size_t o = o0; o < o1; o += kDecodeRows)
      for (std::size_t k0 = 0; k0 < n_in; k0 += kKChunk)
        dot_block_any<kDecodeRows, 1>(std::min(kDecodeRows, o1 - o), 1, w.row(o) + k0, w.stride, x.row(0) + k0,
                                      x.stride, std::min(kKChunk, n_in - k0), y.row(0) + o, y.stride, k0 > 0);
    return;
  }
  const std::size_t panel_rows = kPanelBytes / (kKChunk * sizeof(W));
  for (std::size_t p0 = o0; p0 < o1; p0 += panel_rows) {
    const std::size_t p1 = std::min(o1, p0 + panel_rows);
    for (std::size_t k0 = 0; k0 < n_in; k0 += kKChunk) {
      const std::size_t k_count = std::min(kKChunk, n_in - k0);
      for (std::size_t t = 0; t < n_tok; t += kTokBlock)
        for (std::size_t o = p0; o < p1; o += kRowBlock)
          dot_block_any(std::min(kRowBlock, p1 - o), std::min(kTokBlock, n_tok - t), w.row(o) + k0, w.stride,
                        x.row(t) + k0, x.stride, k_count, y.row(t) + o, y.stride, k0 > 0);
    }
  }
}

}  // namespace detail

// y[t, o] = sum_i w[o, i] * x[t, i].  w: [n_out, n_in], x: [n_tok, n_in], y: [n_tok, n_out].
// Threads split the output rows.
template <class W>
void matmul(ThreadPool& pool, MatrixView<const W> w, MatrixView<const float> x, MatrixView<float> y) {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, F16> || std::is_same_v<W, BF16>,
                "cpu::matmul: float, F16 or BF16 weights");
  assert(w.cols > 0 && w.cols == x.cols && y.rows == x.rows && y.cols == w.rows);
  pool.parallel_for(
      w.rows, [&](std::size_t o0, std::size_t o1) HWY_ATTR { detail::matmul_rows(w, x, y, o0, o1); }, detail::kDecodeRows);
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
