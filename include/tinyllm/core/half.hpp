#pragma once
// IEEE binary16 (f16) and bfloat16 conversions, bit-exact and portable (no F16C needed).
#include <bit>
#include <cstdint>

#include <tinyllm/core/host_device.hpp>

namespace tinyllm {

// Storage types: distinct from uint16_t so that templates can tell the element types apart.
struct F16 { std::uint16_t bits; };
struct BF16 { std::uint16_t bits; };

TINYLLM_HOST_DEVICE inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {                       // inf or NaN: keep the payload
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {                   // normal
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {                  // signed zero
    bits = sign;
  } else {                                 // subnormal: renormalise
    int e = -1;
    do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
    bits = sign | std::uint32_t(112 - e) << 23 | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// Round to nearest even, overflow to inf, NaN stays NaN (quiet).
TINYLLM_HOST_DEVICE inline std::uint16_t f32_to_f16(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                         // result is subnormal or zero
    if (abs < 0x33000000u) return sign;            // below half the smallest subnormal
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;           // 14..24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return sign | std::uint16_t(r);
  }
  std::uint32_t r = ((abs - 0x38000000u) >> 13);   // rebias exponent 127 -> 15
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return sign | std::uint16_t(r);
}

TINYLLM_HOST_DEVICE inline float bf16_to_f32(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t(h) << 16); }

TINYLLM_HOST_DEVICE inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);                                                // nearest even
  return std::uint16_t(x >> 16);
}

TINYLLM_HOST_DEVICE inline float to_f32(F16 h) { return f16_to_f32(h.bits); }
TINYLLM_HOST_DEVICE inline float to_f32(BF16 h) { return bf16_to_f32(h.bits); }

}  // namespace tinyllm
