#pragma once
// RMS normalisation (Highway).
#include <cmath>
#include <cstddef>

#include <tinyllm/kernels/cpu/simd.hpp>

namespace tinyllm::cpu {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x.
inline void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
  const float sum_sq = detail::dot(x, x, n);
  const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(n) + eps);
  const detail::VF scale = hn::Set(detail::DF(), inv_rms);
  detail::map2(x, w, out, n, [&](detail::VF xv, detail::VF wv) { return hn::Mul(hn::Mul(xv, scale), wv); });
}

}  // namespace tinyllm::cpu
