#pragma once
// Quantized weights regrouped ("packed") for the CPU kernels: 16 consecutive rows side by side.
//
// In the file's layout every row is its own short stream of blocks, so a kernel that reads a few
// rows at once makes many short interleaved streams that the hardware prefetcher follows poorly,
// and each weight vector needs a horizontal sum per row. Packed, a group of 16 rows is one
// contiguous run of "units" (2 blocks of Q8_0/Q4_0, one super-block of a K-quant) in which every
// 64-byte step holds 4 consecutive quants of each of the 16 rows ([row][4 quants]; int8_dot.hpp),
// so one multiply-add of a step by 4 broadcast activation quants gives 16 rows' partial sums in
// 16 lanes, the scales of 16 rows are applied by one vector op, and the matrix is read as one
// stream. The quants are the unsigned ones of block_ints.hpp (Q8_0's as q + 128).
//
// Unit layouts (bytes). Each unit starts with its scales, then its sub-blocks in input order,
// each with its high bits right after it, so that a kernel reads the unit front to back and the
// whole group is one forward stream for the hardware prefetcher. "Nibble step pair" = 64 bytes
// whose low nibbles are one step and whose high nibbles the next; row r's bytes at 4r.
//   Q4_0 (576):  16 f16 scales of block 0 at 0, of block 1 at 32; block h at 64 + 256h: 4 nibble
//                step pairs (inputs 8k..8k+3 | 8k+4..8k+7 of the block).
//   Q8_0 (1088): 16 + 16 f16 scales at 0; block h at 64 + 512h: 8 steps.
//   Q4_K (2368): d [row] f16 at 0, dmin [row] f16 at 32, scales [j][row] u8 at 64, mins
//                [j / 2][row][j % 2] u8 at 192 (two sub-blocks' per row side by side); sub-block j
//                of 32 at 320 + 256j: 4 nibble step pairs.
//   Q5_K (2880): Q4_K's header; sub-block j at 320 + 320j: Q4_K's nibbles, then at 256 the fifth
//                bits: bit k of byte 4r + i is input 32j + 8k + i's, bit 4 + k input 32j + 8k + 4 + i's.
//   Q6_K (3392): d [row] f16 at 0, 32 bytes padding, scales [j][row] i8 at 64; sub-block j of 16
//                at 320 + 192j: 2 nibble step pairs (inputs 0..3 | 4..7, 8..11 | 12..15), then at
//                128 the top bit pairs (bits 2s, 2s + 1 of byte 4r + i: input 16j + 4s + i).
// Rows past n_out in the last group and blocks past the row's end in the last unit are zeros.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/quant/block_ints.hpp>

namespace tinyllm::cpu {

inline constexpr std::size_t kPackRows = 16;

template <class Block>
inline constexpr bool is_qmatmul_block =
    std::is_same_v<Block, BlockQ8_0> || std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ4_K> ||
    std::is_same_v<Block, BlockQ5_K> || std::is_same_v<Block, BlockQ6_K>;

// Values per block of each weight type.
template <class Block>
inline constexpr std::size_t block_values = BlockFormat<Block>::values;

// Where each part of a packed unit lives (the layouts above).
template <class Block> struct PackedUnit;
// (body: the first sub-block or block; sub_bytes: from one to the next; high: a sub-block's high
// bits, from its start.)
template <> struct PackedUnit<BlockQ4_0> {
  static constexpr std::size_t blocks = 2, bytes = 576, scales = 0, body = 64, sub_bytes = 256;
};
template <> struct PackedUnit<BlockQ8_0> {
  static constexpr std::size_t blocks = 2, bytes = 1088, scales = 0, body = 64, sub_bytes = 512;
};
template <> struct PackedUnit<BlockQ4_K> {
  static constexpr std::size_t blocks = 1, bytes = 2368, d = 0, dmin = 32, scales = 64, mins = 192, body = 320,
                               sub_bytes = 256;
};
template <> struct PackedUnit<BlockQ5_K> {
  static constexpr std::size_t blocks = 1, bytes = 2880, d = 0, dmin = 32, scales = 64, mins = 192, body = 320,
                               sub_bytes = 320, high = 256;
};
template <> struct PackedUnit<BlockQ6_K> {
  static constexpr std::size_t blocks = 1, bytes = 3392, d = 0, scales = 64, body = 320, sub_bytes = 192, high = 128;
};

namespace pack_detail {

// Row r's 4 quants q[0..3] into step byte 4r, as their low nibbles, or their high ones where `high`.
inline void put_nibbles(std::uint8_t* step, std::size_t r, const std::int8_t* q, bool high) {
  for (int i = 0; i < 4; ++i) step[4 * r + i] |= std::uint8_t((q[i] & 15) << (high ? 4 : 0));
}

// Row r of the unit from its decoded block(s) b[0 .. nb).
template <class Block>
void pack_row(const BlockInts* b, std::size_t nb, std::size_t r, std::uint8_t* o) {
  using U = PackedUnit<Block>;
  if constexpr (std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ8_0>) {
    for (std::size_t h = 0; h < nb; ++h) {
      std::uint8_t* q = o + U::body + U::sub_bytes * h;
      for (int k = 0; k < 4; ++k) {
        if constexpr (std::is_same_v<Block, BlockQ4_0>) {
          put_nibbles(q + 64 * k, r, b[h].q + 8 * k, false);
          put_nibbles(q + 64 * k, r, b[h].q + 8 * k + 4, true);
        } else {
          for (int s = 0; s < 2; ++s)
            for (int i = 0; i < 4; ++i) q[64 * (2 * k + s) + 4 * r + i] = std::uint8_t(b[h].q[8 * k + 4 * s + i] + 128);
        }
      }
      const std::uint16_t d = f32_to_f16(b[h].d);
      std::memcpy(o + U::scales + 32 * h + 2 * r, &d, 2);
    }
  } else if constexpr (std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>) {
    for (int j = 0; j < 8; ++j) {
      const std::int8_t* q = b->q + 32 * j;
      std::uint8_t* sub = o + U::body + U::sub_bytes * j;
      for (int k = 0; k < 4; ++k) {
        put_nibbles(sub + 64 * k, r, q + 8 * k, false);
        put_nibbles(sub + 64 * k, r, q + 8 * k + 4, true);
        if constexpr (std::is_same_v<Block, BlockQ5_K>)
          for (int i = 0; i < 4; ++i)
            sub[U::high + 4 * r + i] |= std::uint8_t((q[8 * k + i] >> 4) << k | (q[8 * k + 4 + i] >> 4) << (4 + k));
      }
      o[U::scales + 16 * j + r] = std::uint8_t(b->sc[j]);
      o[U::mins + 32 * (j / 2) + 2 * r + j % 2] = b->m[j];
    }
    const std::uint16_t d = f32_to_f16(b->d), dmin = f32_to_f16(b->dmin);
    std::memcpy(o + U::d + 2 * r, &d, 2);
    std::memcpy(o + U::dmin + 2 * r, &dmin, 2);
  } else {
    for (int j = 0; j < 16; ++j) {
      const std::int8_t* q = b->q + 16 * j;
      std::uint8_t* sub = o + U::body + U::sub_bytes * j;
      for (int s = 0; s < 2; ++s) {
        put_nibbles(sub + 64 * s, r, q + 8 * s, false);
        put_nibbles(sub + 64 * s, r, q + 8 * s + 4, true);
      }
      for (int s = 0; s < 4; ++s)
        for (int i = 0; i < 4; ++i) sub[U::high + 4 * r + i] |= std::uint8_t((q[4 * s + i] >> 4) << (2 * s));
      o[U::scales + 16 * j + r] = std::uint8_t(b->sc[j]);
    }
    const std::uint16_t d = f32_to_f16(b->d);
    std::memcpy(o + U::d + 2 * r, &d, 2);
  }
}

}  // namespace pack_detail

template <class Block>
std::size_t packed_units_per_row(std::size_t n_in) {
  const std::size_t nb = n_in / block_values<Block>;
  return (nb + PackedUnit<Block>::blocks - 1) / PackedUnit<Block>::blocks;
}

// Packs groups [g0, g1) of the [n_out, n_in] matrix w (rows of n_in / block_values blocks,
// `stride` blocks apart) into out, which holds whole groups from group g0 on.
template <class Block>
void pack_groups(const Block* w, std::size_t stride, std::size_t n_out, std::size_t n_in, std::uint8_t* out,
                 std::size_t g0, std::size_t g1) {
  using U = PackedUnit<Block>;
  const std::size_t nb = n_in / block_values<Block>, units = packed_units_per_row<Block>(n_in);
  BlockInts b[U::blocks];
  for (std::size_t g = g0; g < g1; ++g)
    for (std::size_t u = 0; u < units; ++u) {
      std::uint8_t* o = out + ((g - g0) * units + u) * U::bytes;
      std::memset(o, 0, U::bytes);
      const std::size_t first = u * U::blocks, count = std::min(U::blocks, nb - first);
      for (std::size_t r = 0; r < kPackRows && kPackRows * g + r < n_out; ++r) {
        for (std::size_t h = 0; h < count; ++h) decode_block(w[(kPackRows * g + r) * stride + first + h], b[h]);
        pack_detail::pack_row<Block>(b, count, r, o);
      }
    }
}

// Every packed type; the switch that turns a run-time DType into the block type.
template <class F>
decltype(auto) with_qblock(DType type, const char* where, F&& f) {
  switch (type) {
    case DType::Q4_0: return f(std::type_identity<BlockQ4_0>{});
    case DType::Q8_0: return f(std::type_identity<BlockQ8_0>{});
    case DType::Q4_K: return f(std::type_identity<BlockQ4_K>{});
    case DType::Q5_K: return f(std::type_identity<BlockQ5_K>{});
    case DType::Q6_K: return f(std::type_identity<BlockQ6_K>{});
    default: throw Error("no quantized kernel for weight type " + std::string(name(type)), where, "Q4_0, Q8_0, Q4_K, Q5_K or Q6_K");
  }
}

// Whether qmatmul_packed has a kernel for `type` (every quantized type qmatmul takes).
inline bool can_pack(DType type) {
  return type == DType::Q4_0 || type == DType::Q8_0 || type == DType::Q4_K || type == DType::Q5_K || type == DType::Q6_K;
}

// Bytes of a packed [n_out, n_in] matrix of `type` (n_in a multiple of its block size).
inline std::size_t packed_bytes(DType type, std::size_t n_out, std::size_t n_in) {
  return with_qblock(type, "cpu::packed_bytes", [&]<class Block>(std::type_identity<Block>) {
    return (n_out + kPackRows - 1) / kPackRows * packed_units_per_row<Block>(n_in) * PackedUnit<Block>::bytes;
  });
}

// Packs groups [g0, g1) of n_out rows of n_in values stored as the file has them (contiguous rows)
// into `out`, packed_bytes(type, n_out, n_in) bytes, 64-byte aligned. Threads may pack disjoint
// group ranges at once.
inline void pack_rows(DType type, const void* w, std::size_t n_out, std::size_t n_in, std::byte* out, std::size_t g0,
                      std::size_t g1) {
  with_qblock(type, "cpu::pack_rows", [&]<class Block>(std::type_identity<Block>) {
    const std::size_t units = packed_units_per_row<Block>(n_in);
    pack_groups(static_cast<const Block*>(w), n_in / block_values<Block>, n_out, n_in,
                reinterpret_cast<std::uint8_t*>(out) + g0 * units * PackedUnit<Block>::bytes, g0, g1);
  });
}

}  // namespace tinyllm::cpu
