#pragma once
// Element-wise activations (Highway).
#include <cstddef>

#include <tinyllm/kernels/cpu/simd.hpp>

namespace tinyllm::cpu {
namespace detail {

// x * sigmoid(x). exp is only taken of -|x| <= 0, where it cannot overflow:
// sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = exp(-|x|).
HWY_INLINE VF silu_vec(VF x) {
  const DF d;
  const VF one = hn::Set(d, 1.0f);
  const VF e = hn::Exp(d, hn::Neg(hn::Abs(x)));
  const VF numerator = hn::IfThenElse(hn::Ge(x, hn::Zero(d)), one, e);
  return hn::Mul(x, hn::Div(numerator, hn::Add(one, e)));
}

}  // namespace detail

// x[i] = x[i] * sigmoid(x[i]), in place.
inline void silu(float* x, std::size_t n) {
  detail::map1(x, n, [](detail::VF v) { return detail::silu_vec(v); });
}

// gate[i] = silu(gate[i]) * up[i].
inline void swiglu(float* gate, const float* up, std::size_t n) {
  detail::map2(gate, up, gate, n, [](detail::VF g, detail::VF u) { return hn::Mul(detail::silu_vec(g), u); });
}

}  // namespace tinyllm::cpu
