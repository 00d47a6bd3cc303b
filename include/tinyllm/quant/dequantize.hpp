#pragma once
// Dequantization: GGUF blocks to f32, value for value as ggml defines each format. This is the
// reference that the fused kernels are tested against, so it is plain scalar code.
//
// Every result is exact or rounded once: a scale is an f16 (11 significant bits) times a 6- or
// 8-bit sub-block scale times a quant of at most 6 bits, which f32 holds exactly, and only the
// K-quants' "- min" (or Q8_K's f32 scale) rounds. So the values do not depend on evaluation order
// or FMA contraction, and tests can compare them bit for bit.
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>

namespace tinyllm {

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block. Sub-blocks 0-3
// keep theirs in the low 6 bits of scales[j] (scale) and scales[j + 4] (min); sub-blocks 4-7 keep
// their low 4 bits in the nibbles of scales[j + 4] (scale low, min high) and their top 2 bits in
// the otherwise unused top bits of scales[j - 4] (scale) and scales[j] (min).
inline void get_scale_min_k4(int j, const std::uint8_t* scales, std::uint8_t& sc, std::uint8_t& m) {
  assert(j >= 0 && j < 8);
  if (j < 4) {
    sc = scales[j] & 63;
    m = scales[j + 4] & 63;
  } else {
    sc = std::uint8_t((scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4));
    m = std::uint8_t((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

inline void dequantize_row(const float* src, float* dst, std::size_t n) {
  std::memcpy(dst, src, n * sizeof(float));
}

inline void dequantize_row(const F16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
}

inline void dequantize_row(const BF16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
}

// value i = d * qs[i]
inline void dequantize_row(const BlockQ8_0* src, float* dst, std::size_t n) {
  assert(n % kQK == 0);
  for (std::size_t b = 0; b < n / kQK; ++b, dst += kQK) {
    const float d = f16_to_f32(src[b].d);
    for (int i = 0; i < kQK; ++i) dst[i] = d * float(src[b].qs[i]);
  }
}

// value i = d * (q_i - 8); byte l holds value l in its low nibble and value l + 16 in its high one.
inline void dequantize_row(const BlockQ4_0* src, float* dst, std::size_t n) {
  assert(n % kQK == 0);
  for (std::size_t b = 0; b < n / kQK; ++b, dst += kQK) {
    const float d = f16_to_f32(src[b].d);
    for (int l = 0; l < kQK / 2; ++l) {
      dst[l] = d * float((src[b].qs[l] & 15) - 8);
      dst[l + kQK / 2] = d * float((src[b].qs[l] >> 4) - 8);
    }
  }
}

// Q4_K and Q5_K share their layout of quants: each 64-value group g uses 32 bytes of qs, whose low
// nibbles are the group's first 32 values (sub-block 2g) and whose high nibbles are the next 32
// (sub-block 2g + 1). Q5_K's fifth bit of value 32s + l (sub-block s) is bit s of qh[l].
// value = d * scale_s * q - dmin * min_s.
namespace quant_detail {
template <bool kHighBit>
inline void dequantize_k4_super_block(std::uint16_t d_bits, std::uint16_t dmin_bits,
                                      const std::uint8_t* scales, const std::uint8_t* qs,
                                      const std::uint8_t* qh, float* dst) {
  const float d = f16_to_f32(d_bits), dmin = f16_to_f32(dmin_bits);
  for (int s = 0; s < 8; ++s) {
    std::uint8_t sc, m;
    get_scale_min_k4(s, scales, sc, m);
    const float scale = d * float(sc), min = dmin * float(m);
    const std::uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> shift) & 15;
      if constexpr (kHighBit) v |= ((qh[l] >> s) & 1) << 4;
      *dst++ = scale * float(v) - min;
    }
  }
}
}  // namespace quant_detail

inline void dequantize_row(const BlockQ4_K* src, float* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, dst += kQKK)
    quant_detail::dequantize_k4_super_block<false>(src[b].d, src[b].dmin, src[b].scales,
                                                   src[b].qs, nullptr, dst);
}

inline void dequantize_row(const BlockQ5_K* src, float* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, dst += kQKK)
    quant_detail::dequantize_k4_super_block<true>(src[b].d, src[b].dmin, src[b].scales,
                                                  src[b].qs, src[b].qh, dst);
}

// value i = d * scales[i / 16] * (q_i - 32), q_i 6 bits. The super-block is two halves of 128
// values, each with 64 bytes of ql and 32 of qh. In a half, value 32k + l (k = 0..3) takes its low
// 4 bits from ql[l + 32 * (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits from
// bits 2k, 2k + 1 of qh[l].
inline void dequantize_row(const BlockQ6_K* src, float* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b) {
    const float d = f16_to_f32(src[b].d);
    for (int half = 0; half < 2; ++half, dst += 128) {
      const std::uint8_t* ql = src[b].ql + 64 * half;
      const std::uint8_t* qh = src[b].qh + 32 * half;
      const std::int8_t* sc = src[b].scales + 8 * half;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 15;
          const int high = (qh[l] >> (2 * k)) & 3;
          const int i = 32 * k + l;
          dst[i] = d * float(sc[i / 16]) * float((low | (high << 4)) - 32);
        }
      }
    }
  }
}

// value i = d * qs[i], d an f32.
inline void dequantize_row(const BlockQ8_K* src, float* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, dst += kQKK)
    for (int i = 0; i < kQKK; ++i) dst[i] = src[b].d * float(src[b].qs[i]);
}

// Whether dequantize_row(type, ...) handles this type.
inline bool can_dequantize(DType type) {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::Q8_K:
      return true;
    default:
      return false;
  }
}

// dst[n] = the n values at src, which hold a whole number of blocks of `type`.
inline void dequantize_row(DType type, const void* src, float* dst, std::size_t n) {
  if (!can_dequantize(type))
    throw Error("cannot dequantize tensor type " + std::string(name(type)), "dequantize_row",
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K or Q8_K");
  const std::size_t block = info(type).block_size;
  if (n % block != 0)
    throw Error("a row of " + std::to_string(n) + " " + std::string(name(type)) +
                " values is not a whole number of blocks", "dequantize_row",
                "a multiple of " + std::to_string(block));
  switch (type) {
    case DType::F32: return dequantize_row(static_cast<const float*>(src), dst, n);
    case DType::F16: return dequantize_row(static_cast<const F16*>(src), dst, n);
    case DType::BF16: return dequantize_row(static_cast<const BF16*>(src), dst, n);
    case DType::Q8_0: return dequantize_row(static_cast<const BlockQ8_0*>(src), dst, n);
    case DType::Q4_0: return dequantize_row(static_cast<const BlockQ4_0*>(src), dst, n);
    case DType::Q4_K: return dequantize_row(static_cast<const BlockQ4_K*>(src), dst, n);
    case DType::Q5_K: return dequantize_row(static_cast<const BlockQ5_K*>(src), dst, n);
    case DType::Q6_K: return dequantize_row(static_cast<const BlockQ6_K*>(src), dst, n);
    case DType::Q8_K: return dequantize_row(static_cast<const BlockQ8_K*>(src), dst, n);
    default: break;
  }
}

}  // namespace tinyllm
