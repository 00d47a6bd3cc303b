#pragma once
// Dequantization: GGUF blocks to f32, value for value as ggml defines each format (the formats'
// bits are read in block_ints.hpp). This is the reference that the fused kernels are tested
// against, so it is plain scalar code.
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
#include <tinyllm/quant/block_ints.hpp>

namespace tinyllm {

inline void dequantize_row(const float* src, float* dst, std::size_t n) {
  std::memcpy(dst, src, n * sizeof(float));
}

inline void dequantize_row(const F16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
}

inline void dequantize_row(const BF16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
}

// The five formats of block_ints.hpp, each value computed as BlockFormat describes it.
template <class Block>
  requires requires { BlockFormat<Block>::values; }
inline void dequantize_row(const Block* src, float* dst, std::size_t n) {
  using F = BlockFormat<Block>;
  assert(n % F::values == 0);
  BlockInts b;
  for (std::size_t k = 0; k < n / F::values; ++k) {
    decode_block(src[k], b);
    for (std::size_t u = 0; u < F::values / F::unit; ++u) {
      const float scale = F::sub_scales ? b.d * float(b.sc[u]) : b.d;
      const float min = F::has_min ? b.dmin * float(b.m[u]) : 0.0f;
      for (std::size_t i = F::unit * u; i < F::unit * (u + 1); ++i)
        *dst++ = F::has_min ? scale * float(b.q[i]) - min : scale * float(b.q[i] - F::offset);
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
