// Reading packed units (qpack.hpp) with SIMD: for each format, the unsigned 8-bit quants of
// every 4-input step of a sub-block (the unit of one scale), and the sub-block's per-row float
// scale and min. Both kernels take their weights from here: decode straight from the units,
// prefill through the L1 panel (qkernel.hpp) that it fills from here once per group.
//
// Vectors are kVecBytes wide (int8_dot.hpp): a 64-byte step is kParts vectors, part p holding rows
// p * kPartRows .. + kPartRows; every function takes the part.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_QUNIT_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_QUNIT_HPP_
#undef TINYLLM_KERNELS_CPU_QUNIT_HPP_
#else
#define TINYLLM_KERNELS_CPU_QUNIT_HPP_
#endif
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/kernels/cpu/int8_dot.hpp>
#include <tinyllm/kernels/cpu/qpack.hpp>
#include <tinyllm/quant/block_ints.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE::detail {

HWY_INLINE VU8 load_part(const std::uint8_t* step, std::size_t p) { return hn::Load(DU8(), step + p * kVecBytes); }
HWY_INLINE VU8 low4(VU8 v) { return hn::And(v, hn::Set(DU8(), 0x0F)); }
// Shifts by 16-bit lanes where the caller masks the bits that cross bytes anyway.
template <int kBits>
HWY_INLINE VU8 shift_left(VU8 v) {
  const hn::Repartition<std::uint16_t, DU8> d16;
  if constexpr (kBits == 0) return v;
  else if constexpr (kBits > 0) return hn::BitCast(DU8(), hn::ShiftLeft<kBits>(hn::BitCast(d16, v)));
  else return hn::BitCast(DU8(), hn::ShiftRight<-kBits>(hn::BitCast(d16, v)));
}
HWY_INLINE VU8 high4(VU8 v) { return low4(shift_left<-4>(v)); }
// Bits kFrom .. kFrom + kWidth of every byte, moved to bit 4 and up.
template <int kFrom, int kWidth>
HWY_INLINE VU8 bits_to_4(VU8 v) {
  return hn::And(shift_left<4 - kFrom>(v), hn::Set(DU8(), std::uint8_t(((1 << kWidth) - 1) << 4)));
}

// Per-row values of part p: f16 as floats, unsigned or signed bytes as int32.
HWY_INLINE VF32 f16_rows(const std::uint8_t* p16, std::size_t p) {
  const hn::Rebind<hwy::float16_t, DF32> dh;
  return hn::PromoteTo(DF32(), hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p16) + p * kPartRows));
}
template <class T>
HWY_INLINE VI32 byte_ints(const std::uint8_t* p8, std::size_t p) {
  const hn::Rebind<T, DI32> d8;
  return hn::PromoteTo(DI32(), hn::LoadU(d8, reinterpret_cast<const T*>(p8) + p * kPartRows));
}

// What each format's unit holds, in the kernels' terms:
//   subs         sub-blocks (scales) per unit; sub_values inputs each, steps = sub_values / 4
//   act_subs     sub-blocks per activation block (one d per 32 inputs, or per 256 for K-quants)
//   q8           the weights are Q8_0's (dot_q8); otherwise below 64 (dot_small, dot_scaled)
//   bias         add the activations' aux value (-offset * sum(q), quant_acts.hpp) to the sums
//   int_scales   the K-quants: sub-block sums times the integer scale int_scale() add up in
//                int32 over the unit, then scale() (d) applies once; otherwise scale() is each
//                sub-block's float scale
//   has_min      Q4_K, Q5_K: "- dmin * m * sum(q)" likewise, two sub-blocks at a time (the
//                int16 pairs of int_min_pair() (m) and of aux (sum(q)) through madd16), min()
//                (dmin) once per unit
//   steps(u, j, p, f)  f(k, weights) for steps k of sub-block j, part p
template <class Block> struct QUnit;

template <class Block>
struct LegacyUnit {
  using U = PackedUnit<Block>;
  static constexpr bool q8 = std::is_same_v<Block, BlockQ8_0>;
  static constexpr std::size_t subs = 2, sub_values = 32, steps_per_sub = 8, act_subs = 1;
  static constexpr bool bias = q8 ? kQ8Biased : true, has_min = false, int_scales = false;
  template <class F>
  static HWY_INLINE void steps(const std::uint8_t* u, std::size_t j, std::size_t p, F&& f) {
    const std::uint8_t* q = u + U::body + U::sub_bytes * j;
    if constexpr (q8) {
      TINYLLM_UNROLL
      for (std::size_t k = 0; k < 8; ++k) f(k, load_part(q + 64 * k, p));
    } else {
      TINYLLM_UNROLL
      for (std::size_t k = 0; k < 4; ++k) {
        const VU8 v = load_part(q + 64 * k, p);
        f(2 * k, low4(v));
        f(2 * k + 1, high4(v));
      }
    }
  }
  static HWY_INLINE VF32 scale(const std::uint8_t* u, std::size_t j, std::size_t p) {
    return f16_rows(u + U::scales + 32 * j, p);
  }
};
template <> struct QUnit<BlockQ4_0> : LegacyUnit<BlockQ4_0> {};
template <> struct QUnit<BlockQ8_0> : LegacyUnit<BlockQ8_0> {};

template <class Block>
struct K4Unit {
  using U = PackedUnit<Block>;
  static constexpr bool q8 = false, bias = false, int_scales = true, has_min = true;
  static constexpr std::size_t subs = 8, sub_values = 32, steps_per_sub = 8, act_subs = 8;
  template <class F>
  static HWY_INLINE void steps(const std::uint8_t* u, std::size_t j, std::size_t p, F&& f) {
    constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5_K>;
    const std::uint8_t* sub = u + U::body + U::sub_bytes * j;
    VU8 hb;
    if constexpr (kFifthBit) hb = load_part(sub + U::high, p);
    auto pair = [&]<int k>(std::integral_constant<int, k>) HWY_ATTR {
      const VU8 v = load_part(sub + 64 * k, p);
      VU8 lo = low4(v), hi = high4(v);
      if constexpr (kFifthBit) {
        lo = hn::Or(lo, bits_to_4<k, 1>(hb));
        hi = hn::Or(hi, bits_to_4<4 + k, 1>(hb));
      }
      f(2 * k, lo);
      f(2 * k + 1, hi);
    };
    pair(std::integral_constant<int, 0>{});
    pair(std::integral_constant<int, 1>{});
    pair(std::integral_constant<int, 2>{});
    pair(std::integral_constant<int, 3>{});
  }
  static HWY_INLINE VI32 int_scale(const std::uint8_t* u, std::size_t j, std::size_t p) {
    return byte_ints<std::uint8_t>(u + U::scales + 16 * j, p);
  }
  // The mins of sub-blocks 2i and 2i + 1 as the int16 halves of each row's lane (madd16).
  static HWY_INLINE VI32 int_min_pair(const std::uint8_t* u, std::size_t i, std::size_t p) {
    const hn::Repartition<std::uint16_t, DI32> d16;
    const hn::Rebind<std::uint8_t, decltype(d16)> d8;
    return hn::BitCast(DI32(), hn::PromoteTo(d16, hn::LoadU(d8, u + U::mins + 32 * i + 2 * kPartRows * p)));
  }
  static HWY_INLINE VF32 scale(const std::uint8_t* u, std::size_t, std::size_t p) { return f16_rows(u + U::d, p); }
  static HWY_INLINE VF32 min(const std::uint8_t* u, std::size_t, std::size_t p) { return f16_rows(u + U::dmin, p); }
};
template <> struct QUnit<BlockQ4_K> : K4Unit<BlockQ4_K> {};
template <> struct QUnit<BlockQ5_K> : K4Unit<BlockQ5_K> {};

template <> struct QUnit<BlockQ6_K> {
  using U = PackedUnit<BlockQ6_K>;
  static constexpr bool q8 = false, bias = true, int_scales = true, has_min = false;
  static constexpr std::size_t subs = 16, sub_values = 16, steps_per_sub = 4, act_subs = 16;
  template <class F>
  static HWY_INLINE void steps(const std::uint8_t* u, std::size_t j, std::size_t p, F&& f) {
    const std::uint8_t* sub = u + U::body + U::sub_bytes * j;
    const VU8 lo0 = load_part(sub, p), lo1 = load_part(sub + 64, p), hb = load_part(sub + U::high, p);
    f(0, hn::Or(low4(lo0), bits_to_4<0, 2>(hb)));
    f(1, hn::Or(high4(lo0), bits_to_4<2, 2>(hb)));
    f(2, hn::Or(low4(lo1), bits_to_4<4, 2>(hb)));
    f(3, hn::Or(high4(lo1), bits_to_4<6, 2>(hb)));
  }
  static HWY_INLINE VI32 int_scale(const std::uint8_t* u, std::size_t j, std::size_t p) {
    return byte_ints<std::int8_t>(u + U::scales + 16 * j, p);
  }
  static HWY_INLINE VF32 scale(const std::uint8_t* u, std::size_t, std::size_t p) { return f16_rows(u + U::d, p); }
};

}  // namespace tinyllm::cpu::HWY_NAMESPACE::detail
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
