#pragma once
// The one place that reads each quantized format's bits: a block turned into its integer quants
// and its scales. Dequantization (dequantize.hpp), the packer of the CPU kernels
// (kernels/cpu/qpack.hpp) and through it every quantized matmul start from here.
//
// For a block of type B with the traits BlockFormat<B>, value i is
//   scale(u) * (q[i] - offset)                        without mins (Q8_0, Q4_0, Q6_K)
//   scale(u) * q[i] - dmin * m[u]                     with mins (Q4_K, Q5_K)
// where u = i / unit, scale(u) = d * sc[u] for the K-quants (integer sub-block scales) and d for
// the legacy formats.
#include <cstddef>
#include <cstdint>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/half.hpp>

namespace tinyllm {

// Compile-time facts of a block format: values per block, values per scale, the quants' offset,
// and whether there are sub-block scales and mins.
template <class Block> struct BlockFormat;
template <> struct BlockFormat<BlockQ8_0> {
  static constexpr std::size_t values = 32, unit = 32;
  static constexpr int offset = 0;
  static constexpr bool sub_scales = false, has_min = false;
};
template <> struct BlockFormat<BlockQ4_0> {
  static constexpr std::size_t values = 32, unit = 32;
  static constexpr int offset = 8;
  static constexpr bool sub_scales = false, has_min = false;
};
template <> struct BlockFormat<BlockQ4_K> {
  static constexpr std::size_t values = 256, unit = 32;
  static constexpr int offset = 0;
  static constexpr bool sub_scales = true, has_min = true;
};
template <> struct BlockFormat<BlockQ5_K> {
  static constexpr std::size_t values = 256, unit = 32;
  static constexpr int offset = 0;
  static constexpr bool sub_scales = true, has_min = true;
};
template <> struct BlockFormat<BlockQ6_K> {
  static constexpr std::size_t values = 256, unit = 16;
  static constexpr int offset = 32;
  static constexpr bool sub_scales = true, has_min = false;
};

// One block in integer form. Quants as stored: Q8_0 -128..127, Q4_0 0..15, Q4_K 0..15,
// Q5_K 0..31, Q6_K 0..63.
struct BlockInts {
  float d = 0, dmin = 0;
  std::int8_t q[256];
  std::int8_t sc[16];   // sub-block scales: Q4_K, Q5_K 0..63 (8 of them); Q6_K signed (16)
  std::uint8_t m[8];    // sub-block mins: Q4_K, Q5_K 0..63
};

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block. Sub-blocks 0-3
// keep theirs in the low 6 bits of scales[j] (scale) and scales[j + 4] (min); sub-blocks 4-7 keep
// their low 4 bits in the nibbles of scales[j + 4] (scale low, min high) and their top 2 bits in
// the otherwise unused top bits of scales[j - 4] (scale) and scales[j] (min).
inline void get_scale_min_k4(int j, const std::uint8_t* scales, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = scales[j] & 63;
    m = scales[j + 4] & 63;
  } else {
    sc = std::uint8_t((scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4));
    m = std::uint8_t((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// value i = d * qs[i]
inline void decode_block(const BlockQ8_0& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  for (int i = 0; i < 32; ++i) out.q[i] = b.qs[i];
}

// value i = d * (q_i - 8); byte l holds value l in its low nibble and value l + 16 in its high one.
inline void decode_block(const BlockQ4_0& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  for (int l = 0; l < 16; ++l) {
    out.q[l] = std::int8_t(b.qs[l] & 15);
    out.q[l + 16] = std::int8_t(b.qs[l] >> 4);
  }
}

// Q4_K and Q5_K share their layout of quants: each 64-value group g uses 32 bytes of qs, whose low
// nibbles are the group's first 32 values (sub-block 2g) and whose high nibbles are the next 32
// (sub-block 2g + 1). Q5_K's fifth bit of value 32s + l (sub-block s) is bit s of qh[l].
namespace quant_detail {
inline void decode_k4(std::uint16_t d, std::uint16_t dmin, const std::uint8_t* scales, const std::uint8_t* qs,
                      const std::uint8_t* qh, BlockInts& out) {
  out.d = f16_to_f32(d), out.dmin = f16_to_f32(dmin);
  for (int s = 0; s < 8; ++s) {
    std::uint8_t sc, m;
    get_scale_min_k4(s, scales, sc, m);
    out.sc[s] = std::int8_t(sc), out.m[s] = m;
    for (int l = 0; l < 32; ++l) {
      int v = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 15;
      if (qh) v |= ((qh[l] >> s) & 1) << 4;
      out.q[32 * s + l] = std::int8_t(v);
    }
  }
}
}  // namespace quant_detail

inline void decode_block(const BlockQ4_K& b, BlockInts& out) {
  quant_detail::decode_k4(b.d, b.dmin, b.scales, b.qs, nullptr, out);
}
inline void decode_block(const BlockQ5_K& b, BlockInts& out) {
  quant_detail::decode_k4(b.d, b.dmin, b.scales, b.qs, b.qh, out);
}

// value i = d * scales[i / 16] * (q_i - 32), q_i 6 bits. The super-block is two halves of 128
// values, each with 64 bytes of ql and 32 of qh. In a half, value 32k + l (k = 0..3) takes its low
// 4 bits from ql[l + 32 * (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits from
// bits 2k, 2k + 1 of qh[l].
inline void decode_block(const BlockQ6_K& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  for (int j = 0; j < 16; ++j) out.sc[j] = b.scales[j];
  for (int half = 0; half < 2; ++half)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int low = (b.ql[64 * half + l + 32 * (k % 2)] >> (4 * (k / 2))) & 15;
        const int high = (b.qh[32 * half + l] >> (2 * k)) & 3;
        out.q[128 * half + 32 * k + l] = std::int8_t(low | high << 4);
      }
}

}  // namespace tinyllm
