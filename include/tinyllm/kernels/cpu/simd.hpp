// Highway helpers shared by the CPU kernels. Static dispatch: HWY_NAMESPACE is the target the
// compiler flags allow (AVX3 under -march=native on AVX-512 machines).
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_SIMD_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_SIMD_HPP_
#undef TINYLLM_KERNELS_CPU_SIMD_HPP_
#else
#define TINYLLM_KERNELS_CPU_SIMD_HPP_
#endif
#include <cstddef>
#include <cstring>
#include <type_traits>

// Highway 1.0.3 omits AVX3_DL from its attainable targets even where the compiler's baseline has
// it (-march=native on a CPU with AVX-VNNI) and then refuses to compile; opting in fixes that.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <tinyllm/core/half.hpp>

// Fully unrolls a loop of compile-time length, so that arrays of vectors indexed by it stay in
// registers (g++ -O2 leaves nested loops rolled otherwise, and the vectors go through memory).
#ifndef TINYLLM_UNROLL
#define TINYLLM_UNROLL _Pragma("GCC unroll 16")
#endif

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

namespace detail {

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// N weights as floats; F16 storage has the layout of hwy::float16_t.
HWY_INLINE VF load_f32(DF d, const float* p) { return hn::LoadU(d, p); }
HWY_INLINE VF load_f32(DF d, const F16* p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
}
// A bfloat16 is the top half of a float: widen the 16 bits and shift them up.
HWY_INLINE VF load_f32(DF d, const BF16* p) {
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<std::uint16_t, DF> du16;
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(du16, reinterpret_cast<const std::uint16_t*>(p)))));
}

// AVX2 and AVX-512 mask 32-bit loads and stores in hardware, touching no memory in lanes that are
// off. Highway emulates them on SSE4/SSSE3 with full-width accesses, which would read and write
// past the end of a row; there the tail goes through a buffer on the stack.
inline constexpr bool kNativeMasking = HWY_TARGET <= HWY_AVX2;

// The first min(n, N) values of p, zeros after; reads nothing past p[n - 1].
HWY_INLINE VF load_upto(DF d, const float* p, std::size_t n) {
  if (n >= hn::Lanes(d)) return hn::LoadU(d, p);
  if constexpr (kNativeMasking) return hn::MaskedLoad(hn::FirstN(d, n), d, p);
  alignas(64) float buf[hn::MaxLanes(DF())] = {};
  std::memcpy(buf, p, n * sizeof(float));
  return hn::Load(d, buf);
}

// Stores the first min(n, N) lanes of v; writes nothing past p[n - 1].
HWY_INLINE void store_upto(VF v, DF d, float* p, std::size_t n) {
  if (n >= hn::Lanes(d)) return hn::StoreU(v, d, p);
  if constexpr (kNativeMasking) return hn::BlendedStore(v, hn::FirstN(d, n), d, p);
  alignas(64) float buf[hn::MaxLanes(DF())];
  hn::Store(v, d, buf);
  std::memcpy(p, buf, n * sizeof(float));
}

// The first n < N values, zeros after; reads nothing past p[n - 1].
HWY_INLINE VF load_f32_partial(DF d, const float* p, std::size_t n) { return load_upto(d, p, n); }
// AVX-512 masks 16-bit loads in hardware. Below it Highway emulates them at full width, so the
// values are copied through a zeroed buffer (whose stores stall the load that follows: on
// AVX-512 that copy took a quarter of stories260K's F16 attention, its heads of 8 values all tails).
template <class Half>   // F16 or BF16
HWY_INLINE VF load_f32_partial(DF d, const Half* p, std::size_t n) {
#if HWY_TARGET <= HWY_AVX3
  const hn::Rebind<std::uint16_t, DF> du16;
  const auto bits = hn::MaskedLoad(hn::FirstN(du16, n), du16, reinterpret_cast<const std::uint16_t*>(p));
  if constexpr (std::is_same_v<Half, F16>) {
    return hn::PromoteTo(d, hn::BitCast(hn::Rebind<hwy::float16_t, DF>(), bits));
  } else {
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(hn::RebindToUnsigned<DF>(), bits)));
  }
#else
  Half buf[hn::MaxLanes(DF())] = {};
  std::memcpy(buf, p, n * sizeof(Half));
  return load_f32(d, buf);
#endif
}

template <class Half>
HWY_INLINE VF load_upto(DF d, const Half* p, std::size_t n) {
  return n >= hn::Lanes(d) ? load_f32(d, p) : load_f32_partial(d, p, n);
}

HWY_INLINE float reduce_sum(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }

// The 128-bit blocks of v added together.
template <class D>
HWY_INLINE hn::Vec<hn::Full128<float>> add_blocks(D d, hn::Vec<D> v) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    return add_blocks(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)));
  } else {
    return v;
  }
}

// [sum(a), sum(b), sum(c), sum(e)]: one transposing tree instead of four separate reductions.
HWY_INLINE hn::Vec<hn::Full128<float>> sum_of_four(DF d, VF a, VF b, VF c, VF e) {
  const hn::Repartition<double, DF> dd;
  // Within each 128-bit block: (a0 + a2, b0 + b2, a1 + a3, b1 + b3), likewise for c and e.
  const VF ab = hn::Add(hn::InterleaveLower(d, a, b), hn::InterleaveUpper(d, a, b));
  const VF ce = hn::Add(hn::InterleaveLower(d, c, e), hn::InterleaveUpper(d, c, e));
  // Within each block: the block's partial sums of a, b, c, e.
  const VF abce = hn::Add(hn::BitCast(d, hn::InterleaveLower(dd, hn::BitCast(dd, ab), hn::BitCast(dd, ce))),
                          hn::BitCast(d, hn::InterleaveUpper(dd, hn::BitCast(dd, ab), hn::BitCast(dd, ce))));
  return add_blocks(d, abce);
}

// sum_i a[i] * b[i] in float, b stored as float or F16; two accumulators hide the FMA latency.
template <class T>
HWY_INLINE float dot(const float* a, const T* b, std::size_t n) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  VF acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  std::size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), load_f32(d, b + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(d, a + i + N), load_f32(d, b + i + N), acc1);
  }
  if (i + N <= n) {
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), load_f32(d, b + i), acc0);
    i += N;
  }
  if (i < n) acc1 = hn::MulAdd(load_f32_partial(d, a + i, n - i), load_f32_partial(d, b + i, n - i), acc1);
  return reduce_sum(d, hn::Add(acc0, acc1));
}

// out[i] = f(a[i], b[i]) a vector at a time, the tail masked; out may alias a or b.
template <class F>
HWY_INLINE void map2(const float* a, const float* b, float* out, std::size_t n, F f) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  std::size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(f(hn::LoadU(d, a + i), hn::LoadU(d, b + i)), d, out + i);
  if (i < n) store_upto(f(load_upto(d, a + i, n - i), load_upto(d, b + i, n - i)), d, out + i, n - i);
}

// x[i] = f(x[i]) in place.
template <class F>
HWY_INLINE void map1(float* x, std::size_t n, F f) {
  map2(x, x, x, n, [&](VF v, VF) HWY_ATTR { return f(v); });
}

}  // namespace detail
}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
