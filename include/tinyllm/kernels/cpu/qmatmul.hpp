// y = x · wᵀ with quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): the entry points.
//
// The activations are quantized once per call to 8-bit blocks (quantize_act.hpp), so every
// weight block meets them in integer dot products (int8_dot.hpp). The weights are read packed,
// 16 rows side by side (qpack.hpp): models pack them at load (qmatmul_packed); weights in the
// file's layout (qmatmul) are packed one group of 16 rows at a time into a per-thread buffer
// on every call, which costs about what a decode step's arithmetic does, so hot paths pack once.
// Threads split the groups of rows. Fewer than kPrefillMinTokens tokens run the decode kernel,
// more the panel kernel (qkernel.hpp); both give a token the same bits.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_QMATMUL_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_QMATMUL_HPP_
#undef TINYLLM_KERNELS_CPU_QMATMUL_HPP_
#else
#define TINYLLM_KERNELS_CPU_QMATMUL_HPP_
#endif
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/matmul.hpp>
#include <tinyllm/kernels/cpu/qkernel.hpp>
#include <tinyllm/kernels/cpu/qpack.hpp>
#include <tinyllm/kernels/cpu/quantize_act.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

// From this many tokens on, the panel kernel is faster (tinyllm-quant-bench BM_packed_qbatch).
inline constexpr std::size_t kPrefillMinTokens = 16;

namespace detail {

// Groups [g0, g1) of a matrix; group(g) gives group g's packed units.
template <class Block, class GroupUnits>
void qmatmul_groups(const QuantizedActs& a, std::size_t n_out, std::size_t n_in, MatrixView<float> y, std::size_t g0,
                    std::size_t g1, GroupUnits&& group) {
  const std::size_t nb = n_in / block_values<Block>, units = packed_units_per_row<Block>(n_in);
  static thread_local Panel panel;
  for (std::size_t g = g0; g < g1; ++g) {
    const std::uint8_t* w = group(g);
    const std::size_t rows = std::min(kPackRows, n_out - kPackRows * g);
    if (a.n_tok >= kPrefillMinTokens) prefill_group<Block>(w, units, nb, a, y.row(0) + kPackRows * g, y.stride, rows, panel);
    else decode_group<Block>(w, units, nb, a, y.row(0) + kPackRows * g, y.stride, rows);
  }
}

template <class Block>
QuantizedActs quantize_for_kernel(ThreadPool& pool, MatrixView<const float> x, QuantScratch& scratch) {
  return quantize_activations<Block>(pool, x, scratch, x.rows == 1 ? 1 : kActGroup);
}

}  // namespace detail

// y[t, o] = sum_i w[o, i] * x[t, i] with quantized weights in the file's layout.  w: [n_out, n_in]
// (a row holds n_in / block_values<Block> blocks; stride in blocks), x: [n_tok, n_in], y:
// [n_tok, n_out]; n_in a multiple of the block size. The result differs from
// dequantize-then-multiply by the 8-bit rounding of x: at most about sum_i |w[o, i]| * d_i / 2,
// d_i = max|x| / 127 over x's block of 32 (Q8_0, Q4_0) or 256 (K-quants) around i.
template <class Block>
void qmatmul(ThreadPool& pool, MatrixView<const Block> w, MatrixView<const float> x, MatrixView<float> y,
             QuantScratch& scratch) {
  static_assert(is_qmatmul_block<Block>, "cpu::qmatmul: Q8_0, Q4_0, Q4_K, Q5_K or Q6_K weights");
  assert(w.cols == x.cols && y.rows == x.rows && y.cols == w.rows && w.cols % block_values<Block> == 0);
  if (x.rows == 0 || w.rows == 0) return;
  if (w.cols == 0) {  // empty sums
    for (std::size_t t = 0; t < y.rows; ++t) std::fill_n(y.row(t), y.cols, 0.0f);
    return;
  }
  const QuantizedActs a = detail::quantize_for_kernel<Block>(pool, x, scratch);
  const std::size_t group_bytes = packed_units_per_row<Block>(w.cols) * PackedUnit<Block>::bytes;
  pool.parallel_for((w.rows + kPackRows - 1) / kPackRows, [&](std::size_t g0, std::size_t g1) HWY_ATTR {
    static thread_local AlignedBuffer<std::uint8_t> packed;
    if (packed.size() < group_bytes) packed.resize(group_bytes);
    detail::qmatmul_groups<Block>(a, w.rows, w.cols, y, g0, g1, [&](std::size_t g) HWY_ATTR {
      pack_groups(w.data, w.stride, w.rows, w.cols, packed.data(), g, g + 1);
      return packed.data();
    });
  });
}

// The same with the weight type known at run time: w holds n_out contiguous rows of n_in values
// of type `type`. F32, F16 and BF16 weights go to cpu::matmul.
inline void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  if (type == DType::F32) return matmul(pool, MatrixView<const float>(static_cast<const float*>(w), n_out, n_in), x, y);
  if (type == DType::F16) return matmul(pool, MatrixView<const F16>(static_cast<const F16*>(w), n_out, n_in), x, y);
  if (type == DType::BF16) return matmul(pool, MatrixView<const BF16>(static_cast<const BF16*>(w), n_out, n_in), x, y);
  if (!can_pack(type)) {
    const auto info = dtype_info(static_cast<std::uint32_t>(type));
    throw Error("no matmul kernel for weight type " +
                    (info ? std::string(info->name) : "id " + std::to_string(static_cast<std::uint32_t>(type))),
                "cpu::qmatmul", "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  }
  with_qblock(type, "cpu::qmatmul", [&]<class Block>(std::type_identity<Block>) HWY_ATTR {
    if (n_in % block_values<Block> != 0)
      throw Error("weight rows of " + std::to_string(n_in) + " values", "cpu::qmatmul (" + std::string(name(type)) + ")",
                  "a multiple of " + std::to_string(block_values<Block>));
    qmatmul(pool, MatrixView<const Block>(static_cast<const Block*>(w), n_out, n_in, n_in / block_values<Block>), x, y,
            scratch);
  });
}

// y[n_tok, n_out] = x[n_tok, n_in] · wᵀ for a packed w (pack_rows): the same bits as qmatmul on
// the file's layout.
inline void qmatmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                           MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  assert(x.cols == n_in && y.rows == x.rows && y.cols == n_out);
  if (x.rows == 0 || n_out == 0) return;
  with_qblock(type, "cpu::qmatmul_packed", [&]<class Block>(std::type_identity<Block>) HWY_ATTR {
    const QuantizedActs a = detail::quantize_for_kernel<Block>(pool, x, scratch);
    const std::size_t group_bytes = packed_units_per_row<Block>(n_in) * PackedUnit<Block>::bytes;
    const auto* p = reinterpret_cast<const std::uint8_t*>(w);
    pool.parallel_for((n_out + kPackRows - 1) / kPackRows, [&](std::size_t g0, std::size_t g1) HWY_ATTR {
      detail::qmatmul_groups<Block>(a, n_out, n_in, y, g0, g1, [&](std::size_t g) HWY_ATTR { return p + g * group_bytes; });
    });
  });
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
