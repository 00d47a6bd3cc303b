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
#include <cstring>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/host_device.hpp>

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
TINYLLM_HOST_DEVICE inline void get_scale_min_k4(int j, const std::uint8_t* scales, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = scales[j] & 63;
    m = scales[j + 4] & 63;
  } else {
    sc = std::uint8_t((scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4));
    m = std::uint8_t((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// ---- four quants at a time ----
// quants4(b, j): values 4j..4j+3 of block b as the signed bytes q - offset (offset as in
// BlockFormat), packed little-endian into an int32: one operand of a 4-way int8 dot product
// (CUDA's __dp4a), and what decode_block unpacks. Every quant fits a signed byte once the offset
// is removed (Q4_0 -8..7, Q6_K -32..31).
namespace quant_detail {
// Four bytes at p. The blocks of Q8_0, Q4_0 and Q6_K are only 2-byte aligned, those of Q4_K and
// Q5_K 4-byte aligned (their quants start at byte 16 or 48 of a 4-byte-multiple block); on the
// GPU the widest aligned loads are what keep a warp's reads few.
TINYLLM_HOST_DEVICE inline std::uint32_t load4_align2(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const auto* h = reinterpret_cast<const std::uint16_t*>(p);
  return std::uint32_t(h[0]) | std::uint32_t(h[1]) << 16;
#else
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
TINYLLM_HOST_DEVICE inline std::uint32_t load4_align4(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const std::uint32_t*>(p);
#else
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
// Each byte of x minus `offset`, as signed bytes; every byte of x is below 128. Setting the top
// bit first keeps a byte's borrow from reaching its neighbour.
TINYLLM_HOST_DEVICE inline std::int32_t minus_per_byte(std::uint32_t x, std::uint32_t offset) {
  return std::int32_t(((x | 0x80808080u) - offset * 0x01010101u) ^ 0x80808080u);
}
}  // namespace quant_detail

TINYLLM_HOST_DEVICE inline std::int32_t quants4(const BlockQ8_0& b, int j) {
  return std::int32_t(quant_detail::load4_align2(reinterpret_cast<const std::uint8_t*>(b.qs) + 4 * j));
}

// Byte l holds value l in its low nibble and value l + 16 in its high one.
TINYLLM_HOST_DEVICE inline std::int32_t quants4(const BlockQ4_0& b, int j) {
  const std::uint32_t bytes = quant_detail::load4_align2(b.qs + 4 * (j % 4));
  return quant_detail::minus_per_byte((bytes >> (4 * (j / 4))) & 0x0f0f0f0fu, 8);
}

// Q4_K and Q5_K share their layout of quants: each 64-value group g uses 32 bytes of qs, whose low
// nibbles are the group's first 32 values (sub-block 2g) and whose high nibbles are the next 32
// (sub-block 2g + 1). Q5_K's fifth bit of value 32s + l (sub-block s) is bit s of qh[l].
TINYLLM_HOST_DEVICE inline std::int32_t quants4(const BlockQ4_K& b, int j) {
  const int s = j / 8, l = 4 * (j % 8);
  return std::int32_t((quant_detail::load4_align4(b.qs + 32 * (s / 2) + l) >> (4 * (s % 2))) & 0x0f0f0f0fu);
}
TINYLLM_HOST_DEVICE inline std::int32_t quants4(const BlockQ5_K& b, int j) {
  const int s = j / 8, l = 4 * (j % 8);
  const std::uint32_t low = (quant_detail::load4_align4(b.qs + 32 * (s / 2) + l) >> (4 * (s % 2))) & 0x0f0f0f0fu;
  const std::uint32_t high = (quant_detail::load4_align4(b.qh + l) >> s) & 0x01010101u;
  return std::int32_t(low | high << 4);
}

// q_i 6 bits, stored as q + 32. The super-block is two halves of 128 values, each with 64 bytes of
// ql and 32 of qh. In a half, value 32k + l (k = 0..3) takes its low 4 bits from
// ql[l + 32 * (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits from bits 2k,
// 2k + 1 of qh[l].
TINYLLM_HOST_DEVICE inline std::int32_t quants4(const BlockQ6_K& b, int j) {
  const int half = j / 32, k = (j / 8) % 4, l = 4 * (j % 8);
  const std::uint32_t low = (quant_detail::load4_align2(b.ql + 64 * half + l + 32 * (k % 2)) >> (4 * (k / 2))) & 0x0f0f0f0fu;
  const std::uint32_t high = (quant_detail::load4_align2(b.qh + 32 * half + l) >> (2 * k)) & 0x03030303u;
  return quant_detail::minus_per_byte(low | high << 4, 32);
}

// value i = d * qs[i], value i = d * (q_i - 8), value i = d * scales[i / 16] * (q_i - 32): the
// quants of every format, read through quants4 and stored with their offset (BlockInts).
namespace quant_detail {
template <class Block>
inline void decode_quants(const Block& b, BlockInts& out) {
  constexpr int offset = BlockFormat<Block>::offset;
  for (int j = 0; j < int(BlockFormat<Block>::values / 4); ++j) {
    const auto packed = std::uint32_t(quants4(b, j));
    for (int k = 0; k < 4; ++k) out.q[4 * j + k] = std::int8_t(std::int8_t(packed >> (8 * k)) + offset);
  }
}
}  // namespace quant_detail

inline void decode_block(const BlockQ8_0& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  quant_detail::decode_quants(b, out);
}

inline void decode_block(const BlockQ4_0& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  quant_detail::decode_quants(b, out);
}

namespace quant_detail {
template <class Block>
inline void decode_k4(const Block& b, BlockInts& out) {
  out.d = f16_to_f32(b.d), out.dmin = f16_to_f32(b.dmin);
  for (int s = 0; s < 8; ++s) {
    std::uint8_t sc, m;
    get_scale_min_k4(s, b.scales, sc, m);
    out.sc[s] = std::int8_t(sc), out.m[s] = m;
  }
  decode_quants(b, out);
}
}  // namespace quant_detail

inline void decode_block(const BlockQ4_K& b, BlockInts& out) { quant_detail::decode_k4(b, out); }
inline void decode_block(const BlockQ5_K& b, BlockInts& out) { quant_detail::decode_k4(b, out); }

inline void decode_block(const BlockQ6_K& b, BlockInts& out) {
  out.d = f16_to_f32(b.d);
  for (int j = 0; j < 16; ++j) out.sc[j] = b.scales[j];
  quant_detail::decode_quants(b, out);
}

}  // namespace tinyllm
