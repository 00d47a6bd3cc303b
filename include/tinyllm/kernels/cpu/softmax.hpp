// Numerically stable softmax (Highway).
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_SOFTMAX_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_SOFTMAX_HPP_
#undef TINYLLM_KERNELS_CPU_SOFTMAX_HPP_
#else
#define TINYLLM_KERNELS_CPU_SOFTMAX_HPP_
#endif
#include <cstddef>
#include <limits>

#include <tinyllm/kernels/cpu/simd.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

// max_i x[i] (-infinity for n = 0).
inline float max_of(const float* x, std::size_t n) {
  using detail::DF;
  using detail::VF;
  const DF d;
  const std::size_t N = hn::Lanes(d);
  const VF neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  VF vmax = neg_inf;
  std::size_t i = 0;
  for (; i + N <= n; i += N) vmax = hn::Max(vmax, hn::LoadU(d, x + i));
  if (i < n) vmax = hn::Max(vmax, hn::IfThenElse(hn::FirstN(d, n - i), detail::load_upto(d, x + i, n - i), neg_inf));
  return hn::GetLane(hn::MaxOfLanes(d, vmax));
}

// In place: x[i] = exp(x[i] - shift); returns the sum of the results.
inline float exp_shifted(float* x, std::size_t n, float shift) {
  using detail::DF;
  using detail::VF;
  const DF d;
  const std::size_t N = hn::Lanes(d);
  const VF vshift = hn::Set(d, shift);
  VF vsum = hn::Zero(d);
  std::size_t i = 0;
  for (; i + N <= n; i += N) {
    const VF e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vshift));
    vsum = hn::Add(vsum, e);
    hn::StoreU(e, d, x + i);
  }
  if (i < n) {
    const VF e = hn::IfThenElseZero(hn::FirstN(d, n - i), hn::Exp(d, hn::Sub(detail::load_upto(d, x + i, n - i), vshift)));
    vsum = hn::Add(vsum, e);
    detail::store_upto(e, d, x + i, n - i);
  }
  return detail::reduce_sum(d, vsum);
}

// In place: x[i] = exp(x[i] - max) / sum_j exp(x[j] - max). Subtracting the maximum keeps every
// exponent <= 0, so nothing overflows and at least one term is 1.
inline void softmax(float* x, std::size_t n) {
  using detail::VF;
  if (n == 0) return;
  const VF inv_sum = hn::Set(detail::DF(), 1.0f / exp_shifted(x, n, max_of(x, n)));
  detail::map1(x, n, [&](VF v) HWY_ATTR { return hn::Mul(v, inv_sum); });
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
