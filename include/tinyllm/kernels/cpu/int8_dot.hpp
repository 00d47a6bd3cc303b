// The one instruction the quantized kernels are built on, for each SIMD target: in every int32
// lane, add the four products of 4 unsigned weight bytes by 4 signed activation bytes.
//
//   AVX-512 VNNI     vpdpbusd (AVX3_DL, or AVX3 when the compiler targets VNNI)
//   AVX2, AVX-512    vpmaddubsw (u8 x s8 pairs to int16) then vpmaddwd by ones (pairs to int32):
//   SSSE3, SSE4      the widening multiply-add idiom; exact while a pair's sum fits int16
//   NEON             sdot where the CPU has the dot-product extension, else widening multiplies
//   others           scalar
//
// Two forms, because vpmaddubsw saturates: dot_small for weights below 128 (every format but
// Q8_0, whose pairs stay under 2 * 127 * 127), and dot_q8 for Q8_0's weights stored as w + 128.
// dot_q8 gives sum(w * x) plus, where kQ8Biased, 128 * sum(x), which the kernel then removes
// with the activation sums quantize_act.hpp stores (VNNI multiplies unsigned by signed only);
// elsewhere it gives sum(w * x) itself, by the sign trick |w| * (x * sign(w)).
//
// Where the int16 pairs of vpmaddubsw exist (kScaleInMadd), dot_scaled multiplies them by a
// per-lane integer scale in place of vpmaddwd's ones, so that a K-quant sub-block's scale costs
// nothing; elsewhere the kernels multiply a sub-block's int32 sums by it once. (K-quant weights
// have at most 6 bits: a pair is at most 2 * 63 * 127, times a scale of at most 128.) madd16 is
// vpmaddwd alone, for the K-quants' mins: two sub-blocks' m * sum(q) in one op.
//
// A "step" is 64 bytes: 4 consecutive quants of each of 16 weight rows ([row][4]); it fills one
// AVX-512 vector, two AVX2 vectors, four 128-bit ones. The kernels work on vectors of kVecBytes.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_INT8_DOT_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_INT8_DOT_HPP_
#undef TINYLLM_KERNELS_CPU_INT8_DOT_HPP_
#else
#define TINYLLM_KERNELS_CPU_INT8_DOT_HPP_
#endif
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <tinyllm/kernels/cpu/simd.hpp>

#if HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64
#include <arm_neon.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE::detail {

inline constexpr std::size_t kStepRows = 16, kStepBytes = 64;
#if HWY_HAVE_SCALABLE
inline constexpr std::size_t kVecBytes = 16;
#else
inline constexpr std::size_t kVecBytes = HWY_MAX_BYTES < kStepBytes ? HWY_MAX_BYTES : kStepBytes;
#endif
inline constexpr std::size_t kParts = kStepBytes / kVecBytes;   // vectors per step
inline constexpr std::size_t kPartRows = kStepRows / kParts;    // weight rows per vector

using DU8 = hn::FixedTag<std::uint8_t, kVecBytes>;
using DI8 = hn::FixedTag<std::int8_t, kVecBytes>;
using DI32 = hn::FixedTag<std::int32_t, kVecBytes / 4>;
using DF32 = hn::FixedTag<float, kVecBytes / 4>;
using VU8 = hn::Vec<DU8>;
using VI8 = hn::Vec<DI8>;
using VI32 = hn::Vec<DI32>;
using VF32 = hn::Vec<DF32>;

#if HWY_TARGET == HWY_AVX3_DL || (HWY_TARGET == HWY_AVX3 && defined(__AVX512VNNI__))
inline constexpr bool kQ8Biased = true;
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) {
#if defined(__AVX512VNNI__)
  return VI32{_mm512_dpbusd_epi32(acc.raw, w.raw, x.raw)};
#else
  // AVX3_DL under run-time dispatch: Highway 1.0.3's attributes for it leave out avx512vnni, so
  // the intrinsic cannot be inlined; every CPU Highway picks AVX3_DL for has the instruction.
  __m512i r = acc.raw;
  asm("vpdpbusd %2, %1, %0" : "+v"(r) : "v"(w.raw), "v"(x.raw));
  return VI32{r};
#endif
}
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) { return dot_small(acc, w, x); }
inline constexpr bool kScaleInMadd = false;
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) { return VI32{_mm512_add_epi32(acc.raw, _mm512_madd_epi16(a.raw, b.raw))}; }

#elif HWY_TARGET == HWY_AVX3
inline constexpr bool kQ8Biased = false;
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) {
  const __m512i pairs = _mm512_maddubs_epi16(w.raw, x.raw);
  return VI32{_mm512_add_epi32(acc.raw, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))};
}
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) {
  const __m512i s = _mm512_xor_si512(w.raw, _mm512_set1_epi8(char(0x80)));  // the signed weights
  const __m512i sx = _mm512_mask_sub_epi8(x.raw, _mm512_movepi8_mask(s), _mm512_setzero_si512(), x.raw);
  const __m512i pairs = _mm512_maddubs_epi16(_mm512_abs_epi8(s), sx);
  return VI32{_mm512_add_epi32(acc.raw, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))};
}
inline constexpr bool kScaleInMadd = true;
HWY_INLINE VI32 dot_scaled(VI32 acc, VU8 w, VI8 x, VI32 scale_pairs) {
  return VI32{_mm512_add_epi32(acc.raw, _mm512_madd_epi16(_mm512_maddubs_epi16(w.raw, x.raw), scale_pairs.raw))};
}
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) { return VI32{_mm512_add_epi32(acc.raw, _mm512_madd_epi16(a.raw, b.raw))}; }

#elif HWY_TARGET == HWY_AVX2
inline constexpr bool kQ8Biased = false;
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) {
  const __m256i pairs = _mm256_maddubs_epi16(w.raw, x.raw);
  return VI32{_mm256_add_epi32(acc.raw, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))};
}
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) {
  const __m256i s = _mm256_xor_si256(w.raw, _mm256_set1_epi8(char(0x80)));
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(s), _mm256_sign_epi8(x.raw, s));
  return VI32{_mm256_add_epi32(acc.raw, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))};
}
inline constexpr bool kScaleInMadd = true;
HWY_INLINE VI32 dot_scaled(VI32 acc, VU8 w, VI8 x, VI32 scale_pairs) {
  return VI32{_mm256_add_epi32(acc.raw, _mm256_madd_epi16(_mm256_maddubs_epi16(w.raw, x.raw), scale_pairs.raw))};
}
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) { return VI32{_mm256_add_epi32(acc.raw, _mm256_madd_epi16(a.raw, b.raw))}; }

#elif HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
inline constexpr bool kQ8Biased = false;
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) {
  const __m128i pairs = _mm_maddubs_epi16(w.raw, x.raw);
  return VI32{_mm_add_epi32(acc.raw, _mm_madd_epi16(pairs, _mm_set1_epi16(1)))};
}
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) {
  const __m128i s = _mm_xor_si128(w.raw, _mm_set1_epi8(char(0x80)));
  const __m128i pairs = _mm_maddubs_epi16(_mm_abs_epi8(s), _mm_sign_epi8(x.raw, s));
  return VI32{_mm_add_epi32(acc.raw, _mm_madd_epi16(pairs, _mm_set1_epi16(1)))};
}
inline constexpr bool kScaleInMadd = true;
HWY_INLINE VI32 dot_scaled(VI32 acc, VU8 w, VI8 x, VI32 scale_pairs) {
  return VI32{_mm_add_epi32(acc.raw, _mm_madd_epi16(_mm_maddubs_epi16(w.raw, x.raw), scale_pairs.raw))};
}
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) { return VI32{_mm_add_epi32(acc.raw, _mm_madd_epi16(a.raw, b.raw))}; }

#elif HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64
inline constexpr bool kQ8Biased = false;
// Signed 8-bit dot products: weights below 128 are the same bytes signed.
HWY_INLINE int32x4_t sdot4(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  // 16 products in int16 (|a * b| <= 128 * 128), pairs to int32, then adjacent pairs again.
  const int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  const int32x4_t hi = vpaddlq_s16(vmull_high_s8(a, b));
  return vaddq_s32(acc, vpaddq_s32(lo, hi));
#endif
}
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) { return VI32{sdot4(acc.raw, vreinterpretq_s8_u8(w.raw), x.raw)}; }
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) {
  return VI32{sdot4(acc.raw, vreinterpretq_s8_u8(veorq_u8(w.raw, vdupq_n_u8(0x80))), x.raw)};
}
inline constexpr bool kScaleInMadd = false;
// acc + a.lo * b.lo + a.hi * b.hi in every int32 lane, its int16 halves signed.
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) {
  const VI32 alo = hn::ShiftRight<16>(hn::ShiftLeft<16>(a)), blo = hn::ShiftRight<16>(hn::ShiftLeft<16>(b));
  return hn::Add(acc, hn::Add(hn::Mul(alo, blo), hn::Mul(hn::ShiftRight<16>(a), hn::ShiftRight<16>(b))));
}

#else
inline constexpr bool kQ8Biased = false;
template <bool kQ8>
HWY_INLINE VI32 dot_scalar(VI32 acc, VU8 w, VI8 x) {
  alignas(64) std::uint8_t wb[kVecBytes];
  alignas(64) std::int8_t xb[kVecBytes];
  alignas(64) std::int32_t sb[kVecBytes / 4];
  hn::Store(w, DU8(), wb);
  hn::Store(x, DI8(), xb);
  hn::Store(acc, DI32(), sb);
  for (std::size_t i = 0; i < kVecBytes; ++i) sb[i / 4] += (kQ8 ? int(wb[i]) - 128 : int(wb[i])) * int(xb[i]);
  return hn::Load(DI32(), sb);
}
HWY_INLINE VI32 dot_small(VI32 acc, VU8 w, VI8 x) { return dot_scalar<false>(acc, w, x); }
HWY_INLINE VI32 dot_q8(VI32 acc, VU8 w, VI8 x) { return dot_scalar<true>(acc, w, x); }
inline constexpr bool kScaleInMadd = false;
// acc + a.lo * b.lo + a.hi * b.hi in every int32 lane, its int16 halves signed.
HWY_INLINE VI32 madd16(VI32 acc, VI32 a, VI32 b) {
  const VI32 alo = hn::ShiftRight<16>(hn::ShiftLeft<16>(a)), blo = hn::ShiftRight<16>(hn::ShiftLeft<16>(b));
  return hn::Add(acc, hn::Add(hn::Mul(alo, blo), hn::Mul(hn::ShiftRight<16>(a), hn::ShiftRight<16>(b))));
}
#endif

// dot_scaled's scales: each int32 lane's s (|s| < 2^15) as two int16 halves s, s.
HWY_INLINE VI32 scale_pairs(VI32 s) { return hn::Or(hn::And(s, hn::Set(DI32(), 0xFFFF)), hn::ShiftLeft<16>(s)); }

// The 4 activation quants at p in every int32 lane.
HWY_INLINE VI8 broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return hn::BitCast(DI8(), hn::Set(DI32(), v));
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE::detail
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
