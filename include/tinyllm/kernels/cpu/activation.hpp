// Element-wise activations (Highway).
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_ACTIVATION_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_ACTIVATION_HPP_
#undef TINYLLM_KERNELS_CPU_ACTIVATION_HPP_
#else
#define TINYLLM_KERNELS_CPU_ACTIVATION_HPP_
#endif
#include <cstddef>

#include <tinyllm/kernels/cpu/simd.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {
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

// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
HWY_INLINE VF gelu_vec(VF x) {
  const DF d;
  const VF inner = hn::Mul(hn::Set(d, 0.7978845608028654f), hn::MulAdd(hn::Mul(hn::Set(d, 0.044715f), x), hn::Mul(x, x), x));
  return hn::Mul(hn::Mul(hn::Set(d, 0.5f), x), hn::Add(hn::Set(d, 1.0f), hn::Tanh(d, inner)));
}

}  // namespace detail

// x[i] = x[i] * sigmoid(x[i]), in place.
inline void silu(float* x, std::size_t n) {
  detail::map1(x, n, [](detail::VF v) HWY_ATTR { return detail::silu_vec(v); });
}

// gate[i] = silu(gate[i]) * up[i].
inline void swiglu(float* gate, const float* up, std::size_t n) {
  detail::map2(gate, up, gate, n, [](detail::VF g, detail::VF u) HWY_ATTR { return hn::Mul(detail::silu_vec(g), u); });
}

// gate[i] = gelu(gate[i]) * up[i].
inline void geglu(float* gate, const float* up, std::size_t n) {
  detail::map2(gate, up, gate, n, [](detail::VF g, detail::VF u) HWY_ATTR { return hn::Mul(detail::gelu_vec(g), u); });
}

// x[i] = cap * tanh(x[i] / cap), in place.
inline void softcap(float* x, std::size_t n, float cap) {
  const detail::DF d;
  const float inv = 1.0f / cap;
  detail::map1(x, n, [&](detail::VF v) HWY_ATTR { return hn::Mul(hn::Set(d, cap), hn::Tanh(d, hn::Mul(v, hn::Set(d, inv)))); });
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
