// RMS normalisation (Highway).
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_NORM_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_NORM_HPP_
#undef TINYLLM_KERNELS_CPU_NORM_HPP_
#else
#define TINYLLM_KERNELS_CPU_NORM_HPP_
#endif
#include <cmath>
#include <cstddef>

#include <tinyllm/kernels/cpu/simd.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x.
inline void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
  const float sum_sq = detail::dot(x, x, n);
  const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(n) + eps);
  const detail::VF scale = hn::Set(detail::DF(), inv_rms);
  detail::map2(x, w, out, n, [&](detail::VF xv, detail::VF wv) HWY_ATTR { return hn::Mul(hn::Mul(xv, scale), wv); });
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
