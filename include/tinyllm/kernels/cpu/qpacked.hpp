#pragma once
// Quantized weights regrouped ("packed") for the VNNI kernels: 16 consecutive rows side by side.
//
// In the file's layout every row is its own short stream of blocks, so a decode step that reads
// a few rows at once makes many short interleaved streams that the hardware prefetcher follows
// poorly, and each weight vector needs a horizontal sum per row. Packed, a group of 16 rows is
// one contiguous run of "units" (2 blocks of Q8_0/Q4_0, one super-block of Q4_K/Q6_K) in which
// every 64-byte vector holds 4 consecutive inputs of each of the 16 rows ([row][4 quants]; 4-bit
// formats keep two such steps in the low and high nibbles). One vpdpbusd of such a vector by 4
// broadcast activation quants gives 16 rows' partial sums in 16 lanes: no horizontal sums, the
// scales of 16 rows are applied by one vector op, and the whole matrix is read as one stream.
// The prefill kernel unpacks the same units into its L1 panel (qmatmul.hpp) with a few shifts.
//
// Unit layouts (bytes; q are the unsigned quants the kernels use: Q4_0 0..15 with offset 8, Q8_0
// q + 128, Q4_K 0..15, Q6_K 0..63 with offset 32; row r's 4 bytes of a vector at 4r):
//   Q4_0 (576):  per block h of 2: 4 vectors, vector k: low nibbles inputs 8k..8k+3, high
//                8k+4..8k+7 of the block; then 16 f16 scales of block 0, 16 of block 1.
//   Q8_0 (1088): per block of 2: 8 vectors of inputs 4k..4k+3; then 16 + 16 f16 scales.
//   Q4_K (2368): 32 vectors, 4 per sub-block j of 32, vector 4j + k: low nibbles inputs
//                32j + 8k + 0..3, high + 4..7; scales [j][row] u8 (128), mins [j][row] u8 (128),
//                d [row] f16 (32), dmin [row] f16 (32).
//   Q6_K (3392): per sub-block j of 16: 2 vectors of low nibbles (inputs 16j + 0..3 | 4..7, then
//                8..11 | 12..15) at 128j; high bit pairs at 2048 + 64j (bits 2i..2i+1 of byte
//                l: input 16j + 4i + l); scales [j][row] i8 (256) at 3072, d [row] f16 at 3328,
//                32 bytes of padding.
// Rows past n_out in the last group and blocks past the row's end in the last unit are zeros.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/qmatmul.hpp>
#include <tinyllm/kernels/cpu/quantize_act.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm::cpu {

inline constexpr std::size_t kPackRows = 16;
// Fewer tokens than kPackedPrefillMinTokens run through the decode kernel, up to
// kPackedDecodeTokens at a time against each group; more unpack each group into the panel kernel
// (tinyllm-quant-bench BM_packed_qbatch, 5632 x 2048, 2 threads, Q4_0: 12 tokens 410 us decode
// against 480-510 panel, 16 tokens 510-540 against 450-510, 24 tokens 770-840 against 680-690).
inline constexpr std::size_t kPackedDecodeTokens = 8;
inline constexpr std::size_t kPackedPrefillMinTokens = 16;

namespace pdetail {

// The unsigned quants of one block (or super-block) as the kernels use them.
inline void quants(const BlockQ4_0& b, std::uint8_t* q) {
  for (int i = 0; i < 16; ++i) q[i] = b.qs[i] & 15, q[i + 16] = b.qs[i] >> 4;
}
inline void quants(const BlockQ8_0& b, std::uint8_t* q) {
  for (int i = 0; i < 32; ++i) q[i] = std::uint8_t(b.qs[i] + 128);
}
inline void quants(const BlockQ4_K& b, std::uint8_t* q) {
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) q[32 * j + l] = (b.qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
}
inline void quants(const BlockQ6_K& b, std::uint8_t* q) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const std::uint8_t* ql = b.ql + 64 * h;
      const int qh = b.qh[32 * h + l];
      std::uint8_t* o = q + 128 * h;
      o[l] = std::uint8_t((ql[l] & 15) | (qh & 3) << 4);
      o[l + 32] = std::uint8_t((ql[l + 32] & 15) | (qh >> 2 & 3) << 4);
      o[l + 64] = std::uint8_t((ql[l] >> 4) | (qh >> 4 & 3) << 4);
      o[l + 96] = std::uint8_t((ql[l + 32] >> 4) | (qh >> 6 & 3) << 4);
    }
}

template <class Block> struct Pack;

template <> struct Pack<BlockQ4_0> {
  static constexpr std::size_t unit_blocks = 2, unit_bytes = 576;
  // rows[r] points at the unit's first block of row r (null: a zero row); nb blocks (1 or 2).
  static void pack(const BlockQ4_0* const* rows, std::size_t nb, std::uint8_t* o) {
    std::uint8_t q[32];
    for (std::size_t h = 0; h < nb; ++h)
      for (std::size_t r = 0; r < kPackRows; ++r) {
        if (!rows[r]) continue;
        quants(rows[r][h], q);
        for (int k = 0; k < 4; ++k)
          for (int i = 0; i < 4; ++i) o[256 * h + 64 * k + 4 * r + i] = std::uint8_t(q[8 * k + i] | q[8 * k + 4 + i] << 4);
        std::memcpy(o + 512 + 32 * h + 2 * r, &rows[r][h].d, 2);
      }
  }
};

template <> struct Pack<BlockQ8_0> {
  static constexpr std::size_t unit_blocks = 2, unit_bytes = 1088;
  static void pack(const BlockQ8_0* const* rows, std::size_t nb, std::uint8_t* o) {
    std::uint8_t q[32];
    for (std::size_t h = 0; h < nb; ++h)
      for (std::size_t r = 0; r < kPackRows; ++r) {
        if (!rows[r]) continue;
        quants(rows[r][h], q);
        for (int k = 0; k < 8; ++k) std::memcpy(o + 512 * h + 64 * k + 4 * r, q + 4 * k, 4);
        std::memcpy(o + 1024 + 32 * h + 2 * r, &rows[r][h].d, 2);
      }
  }
};

template <> struct Pack<BlockQ4_K> {
  static constexpr std::size_t unit_blocks = 1, unit_bytes = 2368;
  static void pack(const BlockQ4_K* const* rows, std::size_t, std::uint8_t* o) {
    std::uint8_t q[256];
    for (std::size_t r = 0; r < kPackRows; ++r) {
      if (!rows[r]) continue;
      const BlockQ4_K& b = rows[r][0];
      quants(b, q);
      for (int j = 0; j < 8; ++j) {
        for (int k = 0; k < 4; ++k)
          for (int i = 0; i < 4; ++i)
            o[64 * (4 * j + k) + 4 * r + i] = std::uint8_t(q[32 * j + 8 * k + i] | q[32 * j + 8 * k + 4 + i] << 4);
        get_scale_min_k4(j, b.scales, o[2048 + 16 * j + r], o[2176 + 16 * j + r]);
      }
      std::memcpy(o + 2304 + 2 * r, &b.d, 2);
      std::memcpy(o + 2336 + 2 * r, &b.dmin, 2);
    }
  }
};

template <> struct Pack<BlockQ6_K> {
  static constexpr std::size_t unit_blocks = 1, unit_bytes = 3392;
  static void pack(const BlockQ6_K* const* rows, std::size_t, std::uint8_t* o) {
    std::uint8_t q[256];
    for (std::size_t r = 0; r < kPackRows; ++r) {
      if (!rows[r]) continue;
      const BlockQ6_K& b = rows[r][0];
      quants(b, q);
      for (int j = 0; j < 16; ++j) {
        const std::uint8_t* s = q + 16 * j;
        for (int i = 0; i < 4; ++i) {
          o[128 * j + 4 * r + i] = std::uint8_t((s[i] & 15) | (s[4 + i] & 15) << 4);
          o[128 * j + 64 + 4 * r + i] = std::uint8_t((s[8 + i] & 15) | (s[12 + i] & 15) << 4);
          o[2048 + 64 * j + 4 * r + i] =
              std::uint8_t((s[i] >> 4) | (s[4 + i] >> 4) << 2 | (s[8 + i] >> 4) << 4 | (s[12 + i] >> 4) << 6);
        }
        o[3072 + 16 * j + r] = std::uint8_t(b.scales[j]);
      }
      std::memcpy(o + 3328 + 2 * r, &b.d, 2);
    }
  }
};

template <class Block>
std::size_t units_per_row(std::size_t n_in) {
  const std::size_t nb = n_in / block_values<Block>;
  return (nb + Pack<Block>::unit_blocks - 1) / Pack<Block>::unit_blocks;
}

#if TINYLLM_QMATMUL_VNNI
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

using qdetail::broadcast4;
using qdetail::dpbusd;
using qdetail::Panel;

HWY_INLINE __m512i low4(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
HWY_INLINE __m512i high4(__m512i v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F)); }
HWY_INLINE __m512i load(const std::uint8_t* p) { return _mm512_load_si512(p); }
HWY_INLINE __m512 f16x16(const std::uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
}
HWY_INLINE __m512i u8x16(const std::uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
}
HWY_INLINE __m512i i8x16(const std::uint8_t* p) {
  return _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
}
HWY_INLINE std::int32_t aux_as_int(const QuantizedActs& a, std::size_t t, std::size_t u) {
  float f;
  std::memcpy(&f, a.aux_row(t) + u, sizeof f);
  return std::int32_t(f);  // a sum of quants: an integer
}

// The four 6-bit quant steps of a Q6_K sub-block: low nibbles from lo0/lo1, bits 4-5 from hb.
HWY_INLINE void q6_steps(const std::uint8_t* unit, int j, __m512i (&q)[4]) {
  const __m512i lo0 = load(unit + 128 * j), lo1 = load(unit + 128 * j + 64), hb = load(unit + 2048 + 64 * j);
  const __m512i m30 = _mm512_set1_epi8(0x30);
  q[0] = _mm512_ternarylogic_epi32(low4(lo0), _mm512_slli_epi16(hb, 4), m30, 0xF8);  // a | (b & c)
  q[1] = _mm512_ternarylogic_epi32(high4(lo0), _mm512_slli_epi16(hb, 2), m30, 0xF8);
  q[2] = _mm512_ternarylogic_epi32(low4(lo1), hb, m30, 0xF8);
  q[3] = _mm512_ternarylogic_epi32(high4(lo1), _mm512_srli_epi16(hb, 2), m30, 0xF8);
}

// acc[t] (16 rows) += unit u of the group · tokens t0 .. t0 + T (plain-row activations).
template <class Block, std::size_t T>
HWY_INLINE void decode_unit(const std::uint8_t* unit, std::size_t u, std::size_t nb, const QuantizedActs& a,
                            std::size_t t0, __m512 (&acc)[T]) {
  if constexpr (std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ8_0>) {
    constexpr bool kQ4 = std::is_same_v<Block, BlockQ4_0>;
    constexpr std::size_t kBlockBytes = kQ4 ? 256 : 512, kScales = 2 * kBlockBytes;
    const __m512 scale[2] = {f16x16(unit + kScales), f16x16(unit + kScales + 32)};
    for (std::size_t h = 0; h < 2; ++h) {
      const std::size_t b = 2 * u + h;
      if (b >= nb) break;
      const std::uint8_t* q = unit + kBlockBytes * h;
      // Few tokens: two chains of vpdpbusd per token, so their latency overlaps (more tokens
      // overlap anyway, and the registers are wanted).
      constexpr bool kTwo = T < 4;
      __m512i sum[T], sum2[T];
      for (std::size_t t = 0; t < T; ++t) sum[t] = _mm512_set1_epi32(a.aux_row(t0 + t)[b]), sum2[t] = _mm512_setzero_si512();
      if constexpr (kQ4) {
        for (int k = 0; k < 4; ++k) {
          const __m512i v = load(q + 64 * k), lo = low4(v), hi = high4(v);
          for (std::size_t t = 0; t < T; ++t) {
            const std::int8_t* x = a.q_row(t0 + t) + 32 * b + 8 * k;
            sum[t] = dpbusd(sum[t], lo, broadcast4(x));
            (kTwo ? sum2[t] : sum[t]) = dpbusd(kTwo ? sum2[t] : sum[t], hi, broadcast4(x + 4));
          }
        }
      } else {
        for (int k = 0; k < 8; k += 2) {
          const __m512i v = load(q + 64 * k), v2 = load(q + 64 * k + 64);
          for (std::size_t t = 0; t < T; ++t) {
            const std::int8_t* x = a.q_row(t0 + t) + 32 * b + 4 * k;
            sum[t] = dpbusd(sum[t], v, broadcast4(x));
            (kTwo ? sum2[t] : sum[t]) = dpbusd(kTwo ? sum2[t] : sum[t], v2, broadcast4(x + 4));
          }
        }
      }
      for (std::size_t t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(kTwo ? _mm512_add_epi32(sum[t], sum2[t]) : sum[t]),
                                 _mm512_mul_ps(scale[h], _mm512_set1_ps(a.d_row(t0 + t)[b])), acc[t]);
    }
  } else if constexpr (std::is_same_v<Block, BlockQ4_K>) {
    // Sub-block sums times their 6-bit scales stay in int32 (< 2^25); the mins meet sum(x).
    __m512i tot[T], mins[T];
    for (std::size_t t = 0; t < T; ++t) tot[t] = mins[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      __m512i sum[T];
      for (std::size_t t = 0; t < T; ++t) sum[t] = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k) {
        const __m512i v = load(unit + 64 * (4 * j + k)), lo = low4(v), hi = high4(v);
        for (std::size_t t = 0; t < T; ++t) {
          const std::int8_t* x = a.q_row(t0 + t) + 256 * u + 32 * j + 8 * k;
          sum[t] = dpbusd(dpbusd(sum[t], lo, broadcast4(x)), hi, broadcast4(x + 4));
        }
      }
      const __m512i sc = u8x16(unit + 2048 + 16 * j), m = u8x16(unit + 2176 + 16 * j);
      for (std::size_t t = 0; t < T; ++t) {
        tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(sum[t], sc));
        mins[t] = _mm512_add_epi32(mins[t], _mm512_mullo_epi32(m, _mm512_set1_epi32(aux_as_int(a, t0 + t, 8 * u + j))));
      }
    }
    const __m512 d = f16x16(unit + 2304), dmin = f16x16(unit + 2336);
    for (std::size_t t = 0; t < T; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d_row(t0 + t)[u]);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), _mm512_mul_ps(d, dx), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins[t]), _mm512_mul_ps(dmin, dx), acc[t]);
    }
  } else {  // Q6_K: (q - 32) per sub-block of 16 times a signed 8-bit scale, in int32 (< 2^29)
    __m512i tot[T];
    for (std::size_t t = 0; t < T; ++t) tot[t] = _mm512_setzero_si512();
    for (int j = 0; j < 16; ++j) {
      __m512i q[4];
      q6_steps(unit, j, q);
      const __m512i sc = i8x16(unit + 3072 + 16 * j);
      for (std::size_t t = 0; t < T; ++t) {
        const std::int8_t* x = a.q_row(t0 + t) + 256 * u + 16 * j;
        __m512i sum = _mm512_set1_epi32(a.aux_row(t0 + t)[16 * u + j]);  // -32 * sum(x)
        for (int i = 0; i < 4; ++i) sum = dpbusd(sum, q[i], broadcast4(x + 4 * i));
        tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(sum, sc));
      }
    }
    const __m512 d = f16x16(unit + 3328);
    for (std::size_t t = 0; t < T; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), _mm512_mul_ps(d, _mm512_set1_ps(a.d_row(t0 + t)[u])), acc[t]);
  }
}

// Unit u into the panel at unit position i (blocks or super-blocks from i * unit_blocks).
template <class Block>
HWY_INLINE void unpack_unit(const std::uint8_t* unit, std::size_t u, std::size_t nb, std::size_t i, Panel& p) {
  if constexpr (std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ8_0>) {
    constexpr bool kQ4 = std::is_same_v<Block, BlockQ4_0>;
    constexpr std::size_t kBlockBytes = kQ4 ? 256 : 512;
    for (std::size_t h = 0; h < 2 && 2 * u + h < nb; ++h) {
      const std::size_t c = 2 * i + h;  // the panel's block
      for (int k = 0; k < (kQ4 ? 4 : 8); ++k) {
        const __m512i v = load(unit + kBlockBytes * h + 64 * k);
        if constexpr (kQ4) {
          _mm512_store_si512(p.w[8 * c + 2 * k], low4(v));
          _mm512_store_si512(p.w[8 * c + 2 * k + 1], high4(v));
        } else {
          _mm512_store_si512(p.w[8 * c + k], v);
        }
      }
      _mm512_store_ps(p.scale[c], f16x16(unit + 2 * kBlockBytes + 32 * h));
    }
  } else if constexpr (std::is_same_v<Block, BlockQ4_K>) {
    const __m512 d = f16x16(unit + 2304), dmin = f16x16(unit + 2336);
    for (int j = 0; j < 8; ++j) {
      for (int k = 0; k < 4; ++k) {
        const __m512i v = load(unit + 64 * (4 * j + k));
        _mm512_store_si512(p.w[64 * i + 8 * j + 2 * k], low4(v));
        _mm512_store_si512(p.w[64 * i + 8 * j + 2 * k + 1], high4(v));
      }
      _mm512_store_ps(p.scale[8 * i + j], _mm512_mul_ps(_mm512_cvtepi32_ps(u8x16(unit + 2048 + 16 * j)), d));
      _mm512_store_ps(p.min[8 * i + j], _mm512_mul_ps(_mm512_cvtepi32_ps(u8x16(unit + 2176 + 16 * j)), dmin));
    }
  } else {
    const __m512 d = f16x16(unit + 3328);
    for (int j = 0; j < 16; ++j) {
      __m512i q[4];
      q6_steps(unit, j, q);
      for (int s = 0; s < 4; ++s) _mm512_store_si512(p.w[64 * i + 4 * j + s], q[s]);
      _mm512_store_ps(p.scale[16 * i + j], _mm512_mul_ps(_mm512_cvtepi32_ps(i8x16(unit + 3072 + 16 * j)), d));
    }
  }
}

// Group g against 1 .. T tokens from t0.
template <class Block, std::size_t T>
HWY_INLINE void decode_group(const std::uint8_t* w, std::size_t units, std::size_t nb, std::size_t n_out,
                             const QuantizedActs& a, std::size_t t0, MatrixView<float> y, std::size_t g) {
  constexpr std::size_t kUnit = Pack<Block>::unit_bytes, kAhead = 4096;
  // Sums per chunk of the prefill kernel's panel, added up in the same order as it adds them, so
  // a token's outputs match whichever kernel a batch size picks (up to the K-quants' scale order).
  constexpr std::size_t kChunk = qdetail::kPanelInputs / (Pack<Block>::unit_blocks * block_values<Block>);
  const std::uint8_t* unit = w + g * units * kUnit;
  __m512 total[T];
  for (std::size_t u0 = 0; u0 < units; u0 += kChunk) {
    __m512 acc[T];
    for (std::size_t t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t u = u0; u < std::min(units, u0 + kChunk); ++u, unit += kUnit) {
      // Ahead of the hardware prefetcher, which restarts at every 4 KiB page.
      for (std::size_t l = 0; l < kUnit; l += 64) _mm_prefetch(reinterpret_cast<const char*>(unit) + kAhead + l, _MM_HINT_T0);
      decode_unit<Block, T>(unit, u, nb, a, t0, acc);
    }
    for (std::size_t t = 0; t < T; ++t) total[t] = u0 == 0 ? acc[t] : _mm512_add_ps(total[t], acc[t]);
  }
  const std::size_t rows = std::min(kPackRows, n_out - kPackRows * g);
  for (std::size_t t = 0; t < T; ++t)
    qdetail::store_rows(y.row(t0 + t) + kPackRows * g, total[t], __mmask16((1u << rows) - 1), false);
}

template <class Block, std::size_t T = kPackedDecodeTokens>
HWY_INLINE void decode_any(std::size_t t_count, const std::uint8_t* w, std::size_t units, std::size_t nb,
                           std::size_t n_out, const QuantizedActs& a, std::size_t t0, MatrixView<float> y, std::size_t g) {
  if constexpr (T > 1)
    if (t_count < T) return decode_any<Block, T - 1>(t_count, w, units, nb, n_out, a, t0, y, g);
  decode_group<Block, T>(w, units, nb, n_out, a, t0, y, g);
}

// Groups [g0, g1) against every token, 8 at a time: a group's later passes find it in cache.
template <class Block>
void decode_groups(const std::uint8_t* w, std::size_t units, std::size_t nb, std::size_t n_out, const QuantizedActs& a,
                   MatrixView<float> y, std::size_t g0, std::size_t g1) {
  for (std::size_t g = g0; g < g1; ++g)
    for (std::size_t t = 0; t < a.n_tok; t += kPackedDecodeTokens)
      decode_any<Block>(std::min(kPackedDecodeTokens, a.n_tok - t), w, units, nb, n_out, a, t, y, g);
}

template <class Block>
void prefill_groups(const std::uint8_t* w, std::size_t units, std::size_t nb, std::size_t n_out, const QuantizedActs& a,
                    MatrixView<float> y, std::size_t g0, std::size_t g1) {
  using Fmt = typename qdetail::VnniFmt<Block>::type;
  constexpr std::size_t kUnit = Pack<Block>::unit_bytes, kPer = Pack<Block>::unit_blocks;
  constexpr std::size_t kPanelUnits = qdetail::kPanelInputs / (kPer * block_values<Block>);
  Panel panel;
  for (std::size_t g = g0; g < g1; ++g) {
    const std::size_t rows = std::min(kPackRows, n_out - kPackRows * g);
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    for (std::size_t u0 = 0; u0 < units; u0 += kPanelUnits) {
      const std::size_t count_units = std::min(kPanelUnits, units - u0);
      for (std::size_t i = 0; i < count_units; ++i) {
        const std::uint8_t* unit = w + (g * units + u0 + i) * kUnit;
        // The next panel's bytes (the same group's or the next group's) arrive while this one computes.
        for (std::size_t l = 0; l < kUnit; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(unit) + kPanelUnits * kUnit + l, _MM_HINT_T0);
        unpack_unit<Block>(unit, u0 + i, nb, i, panel);
      }
      const std::size_t first = u0 * kPer, count = std::min(count_units * kPer, nb - first);
      for (std::size_t t = 0; t < a.n_tok; t += qdetail::kPanelTokens)
        qdetail::panel_any<Fmt>(std::min(qdetail::kPanelTokens, a.n_tok - t), panel, first, count, a, t,
                                y.row(t) + kPackRows * g, y.stride, mask, u0 > 0);
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // TINYLLM_QMATMUL_VNNI

}  // namespace pdetail

// Whether qmatmul_packed has a kernel for `type` in this build (VNNI: Q4_0, Q8_0, Q4_K, Q6_K).
inline bool can_pack(DType type) {
  if (!TINYLLM_QMATMUL_VNNI) return false;
  return type == DType::Q4_0 || type == DType::Q8_0 || type == DType::Q4_K || type == DType::Q6_K;
}

namespace pdetail {
template <class F>
decltype(auto) with_block(DType type, const char* where, F&& f) {
  switch (type) {
    case DType::Q4_0: return f(std::type_identity<BlockQ4_0>{});
    case DType::Q8_0: return f(std::type_identity<BlockQ8_0>{});
    case DType::Q4_K: return f(std::type_identity<BlockQ4_K>{});
    case DType::Q6_K: return f(std::type_identity<BlockQ6_K>{});
    default: throw Error("no packed layout for weight type " + std::string(name(type)), where, "Q4_0, Q8_0, Q4_K or Q6_K");
  }
}
}  // namespace pdetail

// Bytes of a packed [n_out, n_in] matrix of `type` (n_in a multiple of its block size).
inline std::size_t packed_bytes(DType type, std::size_t n_out, std::size_t n_in) {
  return pdetail::with_block(type, "cpu::packed_bytes", [&]<class Block>(std::type_identity<Block>) {
    return (n_out + kPackRows - 1) / kPackRows * pdetail::units_per_row<Block>(n_in) * pdetail::Pack<Block>::unit_bytes;
  });
}

// Packs groups [g0, g1) of n_out rows of n_in values stored as the file has them (contiguous rows)
// into `out`, packed_bytes(type, n_out, n_in) bytes, 64-byte aligned. Threads may pack disjoint
// group ranges at once.
inline void pack_rows(DType type, const void* w, std::size_t n_out, std::size_t n_in, std::byte* out, std::size_t g0,
                      std::size_t g1) {
  pdetail::with_block(type, "cpu::pack_rows", [&]<class Block>(std::type_identity<Block>) {
    using P = pdetail::Pack<Block>;
    const std::size_t nb = n_in / block_values<Block>, units = pdetail::units_per_row<Block>(n_in);
    const Block* blocks = static_cast<const Block*>(w);
    for (std::size_t g = g0; g < g1; ++g)
      for (std::size_t u = 0; u < units; ++u) {
        auto* o = reinterpret_cast<std::uint8_t*>(out) + (g * units + u) * P::unit_bytes;
        std::memset(o, 0, P::unit_bytes);
        const Block* rows[kPackRows];
        for (std::size_t r = 0; r < kPackRows; ++r) {
          const std::size_t row = kPackRows * g + r;
          rows[r] = row < n_out ? blocks + row * nb + u * P::unit_blocks : nullptr;
        }
        P::pack(rows, std::min(P::unit_blocks, nb - u * P::unit_blocks), o);
      }
  });
}

// y[n_tok, n_out] = x[n_tok, n_in] · wᵀ for a packed w: the same integer sums as qmatmul on the
// file's layout (so the same result up to float summation order).
inline void qmatmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                           MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  assert(x.cols == n_in && y.rows == x.rows && y.cols == n_out);
  if (x.rows == 0 || n_out == 0) return;
#if TINYLLM_QMATMUL_VNNI
  pdetail::with_block(type, "cpu::qmatmul_packed", [&]<class Block>(std::type_identity<Block>) {
    const std::size_t nb = n_in / block_values<Block>, units = pdetail::units_per_row<Block>(n_in);
    const std::size_t groups = (n_out + kPackRows - 1) / kPackRows;
    const auto* p = reinterpret_cast<const std::uint8_t*>(w);
    if (x.rows < kPackedPrefillMinTokens) {
      const QuantizedActs a = quantize_activations<Block>(pool, x, scratch);
      pool.parallel_for(groups, [&](std::size_t g0, std::size_t g1) {
        pdetail::decode_groups<Block>(p, units, nb, n_out, a, y, g0, g1);
      });
    } else {
      const QuantizedActs a = quantize_activations<Block>(pool, x, scratch, qdetail::kPanelTokens);
      pool.parallel_for(groups, [&](std::size_t g0, std::size_t g1) {
        pdetail::prefill_groups<Block>(p, units, nb, n_out, a, y, g0, g1);
      });
    }
  });
#else
  throw Error("packed weights need the AVX-512 VNNI kernels", "cpu::qmatmul_packed");
#endif
}

}  // namespace tinyllm::cpu
