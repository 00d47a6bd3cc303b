// The activation quantizer (Highway): x rows to the 8-bit blocks of quant_acts.hpp.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_QUANTIZE_ACT_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_QUANTIZE_ACT_HPP_
#undef TINYLLM_KERNELS_CPU_QUANTIZE_ACT_HPP_
#else
#define TINYLLM_KERNELS_CPU_QUANTIZE_ACT_HPP_
#endif
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/quant_acts.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

namespace detail {

// Quantizes one token row of n values (a multiple of ActFormat<Block>::block) into row t of a.
template <class Block>
void quantize_act_row(const float* HWY_RESTRICT x, const QuantizedActs& a, std::size_t t) {
  using F = ActFormat<Block>;
  const hn::CappedTag<float, 16> df;  // at most one group of 16 per vector
  const hn::Rebind<std::int32_t, decltype(df)> di;
  const hn::Rebind<std::int8_t, decltype(df)> d8;
  const std::size_t N = hn::Lanes(df), n = a.n_in, G = a.group, lane = t % G;
  // Token t's first quant, scale and aux value; quant dwords are 4 * G bytes apart, the others G.
  std::int8_t* HWY_RESTRICT qs = a.qs + a.q_index(t, 0);
  float* HWY_RESTRICT d = a.d + (t - lane) * a.d_stride + lane;
  std::int32_t* HWY_RESTRICT aux = a.aux + (t - lane) * a.aux_stride + lane;
  alignas(64) std::int8_t q16[16];

  for (std::size_t b0 = 0; b0 < n; b0 += F::block) {
    // x * 0 is 0 for every finite x: a block with a NaN or an infinity gets a NaN scale, so the
    // products that use it are NaN too rather than finite nonsense.
    auto vmax = hn::Zero(df), vnonfinite = hn::Zero(df);
    for (std::size_t i = 0; i < F::block; i += N) {
      const auto v = hn::LoadU(df, x + b0 + i);
      vmax = hn::Max(vmax, hn::Abs(v));
      vnonfinite = hn::Add(vnonfinite, hn::Mul(v, hn::Zero(df)));
    }
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const bool finite = hn::GetLane(hn::SumOfLanes(df, vnonfinite)) == 0.0f;
    const float scale = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    const auto inv = hn::Set(df, scale != 0.0f ? 1.0f / scale : 0.0f);
    d[b0 / F::block * G] = scale;

    std::int32_t group32 = 0, low32 = 0;  // running sum over the current 32; the previous 32's
    for (std::size_t g = b0; g < b0 + F::block; g += 16) {
      auto sum = hn::Zero(di);
      for (std::size_t i = 0; i < 16; i += N) {
        // Clamped: a NaN scale rounds to INT_MIN, whose sums would overflow.
        const auto q = hn::Min(hn::Max(hn::NearestInt(hn::Mul(hn::LoadU(df, x + g + i), inv)), hn::Set(di, -127)),
                               hn::Set(di, 127));
        sum = hn::Add(sum, q);
        hn::StoreU(hn::DemoteTo(d8, q), d8, q16 + i);
      }
      if (G == 1) {
        std::memcpy(qs + g, q16, 16);
      } else {
        for (std::size_t k = 0; k < 4; ++k) std::memcpy(qs + (g / 4 + k) * 4 * G, q16 + 4 * k, 4);
      }
      const std::int32_t s16 = hn::GetLane(hn::SumOfLanes(di, sum));
      if constexpr (F::aux_group == 16) {
        aux[g / 16 * G] = F::aux_factor * s16;
      } else {
        group32 += s16;
        if ((g / 16) % 2 == 1) {
          if constexpr (F::aux_group == 32) {
            aux[g / 32 * G] = F::aux_factor * group32;
          } else if ((g / 32) % 2 == 0) {
            low32 = group32;
          } else {  // 64: two int16 halves
            aux[g / 64 * G] = std::int32_t(std::uint32_t(std::uint16_t(F::aux_factor * low32)) |
                                           std::uint32_t(F::aux_factor * group32) << 16);
          }
          group32 = 0;
        }
      }
    }
  }
}

}  // namespace detail

// Quantizes x [n_tok, n_in] for weights of type Block, in groups of `group` tokens (<= 8),
// tokens split over the pool's threads. n_in must be a multiple of ActFormat<Block>::block.
template <class Block>
QuantizedActs quantize_activations(ThreadPool& pool, MatrixView<const float> x, QuantScratch& scratch,
                                   std::size_t group = 1) {
  QuantizedActs a = scratch.layout(x.rows, x.cols, group);
  if (x.rows == 1) {
    detail::quantize_act_row<Block>(x.row(0), a, 0);
  } else {
    pool.parallel_for(x.rows, [&](std::size_t t0, std::size_t t1) HWY_ATTR {
      for (std::size_t t = t0; t < t1; ++t) detail::quantize_act_row<Block>(x.row(t), a, t);
    });
  }
  return a;
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
