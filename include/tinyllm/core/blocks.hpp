#pragma once
// GGUF's quantized block layouts, byte for byte as ggml stores them (little-endian). A block holds
// block_size consecutive values of one row; the quant/ layer gives their meaning.
#include <cstdint>

#include <tinyllm/core/dtype.hpp>

namespace tinyllm {

inline constexpr int kQK = 32;    // values per block of the legacy formats (Q4_0, Q8_0)
inline constexpr int kQKK = 256;  // values per super-block of the K-quants

// Q8_0: value = d * qs[i].
struct BlockQ8_0 {
  std::uint16_t d;      // f16 scale
  std::int8_t qs[kQK];
};

// Q4_0: value i (i < 16) = d * ((qs[i] & 15) - 8); value i + 16 = d * ((qs[i] >> 4) - 8).
struct BlockQ4_0 {
  std::uint16_t d;      // f16 scale
  std::uint8_t qs[kQK / 2];
};

// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales`;
// value = d * scale_j * q - dmin * min_j, q a 4-bit quant.
struct BlockQ4_K {
  std::uint16_t d;      // f16 super-block scale of the scales
  std::uint16_t dmin;   // f16 super-block scale of the mins
  std::uint8_t scales[12];
  std::uint8_t qs[kQKK / 2];
};

// Q5_K: as Q4_K with a fifth bit per quant in qh.
struct BlockQ5_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[kQKK / 8];
  std::uint8_t qs[kQKK / 2];
};

// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; value = d * scales[j] * (q - 32), q 6-bit
// split into 4 low bits (ql) and 2 high bits (qh).
struct BlockQ6_K {
  std::uint8_t ql[kQKK / 2];
  std::uint8_t qh[kQKK / 4];
  std::int8_t scales[kQKK / 16];
  std::uint16_t d;      // f16
};

// Q8_K: the 8-bit form activations take for dot products with K-quant weights.
struct BlockQ8_K {
  float d;
  std::int8_t qs[kQKK];
  std::int16_t bsums[kQKK / 16];   // sums of each 16 quants
};

// The block type of each DType, for templates that take a DType at compile time.
template <DType> struct BlockOf;
template <> struct BlockOf<DType::Q8_0> { using type = BlockQ8_0; };
template <> struct BlockOf<DType::Q4_0> { using type = BlockQ4_0; };
template <> struct BlockOf<DType::Q4_K> { using type = BlockQ4_K; };
template <> struct BlockOf<DType::Q5_K> { using type = BlockQ5_K; };
template <> struct BlockOf<DType::Q6_K> { using type = BlockQ6_K; };
template <> struct BlockOf<DType::Q8_K> { using type = BlockQ8_K; };

static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292,
              "block layouts must match GGUF byte for byte");

}  // namespace tinyllm
