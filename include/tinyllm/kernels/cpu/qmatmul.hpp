#pragma once
// y = x · wᵀ with quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), read where the file keeps them.
//
// The activations are quantized once per call to 8-bit blocks (quantize_act.hpp), so every
// weight block meets them in integer dot products: VNNI's vpdpbusd multiplies 64 unsigned bytes by
// 64 signed bytes and adds each four products into one of 16 int32 lanes. The weights are the
// unsigned operand: 4-, 5- and 6-bit quants are unsigned already (Q4_0's -8 and Q6_K's -32 come
// back as a correction from the activation sums), Q8_0's signed bytes are read as w + 128. The
// scales are applied per block or sub-block, in float or, for the K-quants' integer sub-block
// scales, with vpdpwssd before one conversion per 256 values.
//
// Two loop nests, both split over the output rows:
//   decode (fewer than kPrefillMinTokens tokens): 4 weight rows × 2 tokens in registers, dot
//     products along the rows; each weight vector is unpacked once for the tokens, the weights
//     stream from memory once, with the next rows prefetched.
//   prefill: a panel of 16 weight rows × kPanelInputs inputs is unpacked into L1 with the rows
//     in the vector lanes ([input / 4][row][4 quants]); then 4 quants of a token at a time are
//     broadcast against it: one vpdpbusd per 16 rows × 4 inputs, no horizontal sums, and each
//     block's scales applied to 16 rows at once. Every unpacked panel serves all the tokens, 8 at
//     a time (the activations are stored interleaved by 8 tokens for this). The weights stay as
//     the file has them; only the L1 panel is rewritten.
//
// Without AVX-512 VNNI (or with TINYLLM_QMATMUL_PORTABLE defined) a portable Highway path computes
// the same integer sums with int16 multiply-adds.
//
// Models loaded from files use qpacked.hpp instead where it has a layout for the type: the same
// sums over weights regrouped 16 rows at a time at load (faster decode); this file keeps the
// kernels for weights as the file lays them out, and the panel kernels both share.
#include <algorithm>
#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/matmul.hpp>
#include <tinyllm/kernels/cpu/quantize_act.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>
#include <tinyllm/quant/dequantize.hpp>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VBMI__) && \
    defined(__F16C__) && !defined(TINYLLM_QMATMUL_PORTABLE)
#define TINYLLM_QMATMUL_VNNI 1
#include <immintrin.h>
#else
#define TINYLLM_QMATMUL_VNNI 0
#endif

namespace tinyllm::cpu {

template <class Block>
inline constexpr bool is_qmatmul_block =
    std::is_same_v<Block, BlockQ8_0> || std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ4_K> ||
    std::is_same_v<Block, BlockQ5_K> || std::is_same_v<Block, BlockQ6_K>;

// Values per block of each weight type.
template <class Block>
inline constexpr std::size_t block_values = ActFormat<Block>::block;

namespace qdetail {

#if TINYLLM_QMATMUL_VNNI

// g++ 12 warns that the placeholders (_mm512_undefined_*) inside its own AVX-512 intrinsics are
// used uninitialized (GCC bug 105593, fixed in 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// ---------------------------------------------------------------------------------------------
// Weights as unsigned bytes, 64 values (a "chunk") at a time, and their scales.

HWY_INLINE float half_to_float(std::uint16_t h) { return _cvtsh_ss(h); }

// A 64-byte table of words (or dwords) made from a function of the position.
template <class F>
constexpr auto make_words(F f) {
  struct { alignas(64) std::uint16_t v[32]; } t{};
  for (int i = 0; i < 32; ++i) t.v[i] = static_cast<std::uint16_t>(f(i));
  return t;
}
template <class F>
constexpr auto make_dwords(F f) {
  struct { alignas(64) std::uint32_t v[16]; } t{};
  for (int i = 0; i < 16; ++i) t.v[i] = static_cast<std::uint32_t>(f(i));
  return t;
}
template <class T>
HWY_INLINE __m512i load_table(const T& t) { return _mm512_load_si512(t.v); }

// Q4_0: two blocks of 18 bytes; value i of a block is d * ((qs[i % 16] >> (i / 16 * 4) & 15) - 8).
struct FmtQ4_0 {
  using Block = BlockQ4_0;
  static constexpr int offset = 8;
  // Quants [block 0: 32 | block 1: 32] (zeros for a missing second block) and scales [d0 × 8, d1 × 8].
  // Plain loads only: masked ones defeat the hardware prefetcher on some CPUs (Zen 5: 4x slower).
  template <bool kTwo>
  static HWY_INLINE void load(const Block* p, __m512i& w, __m512& s) {
    const __m512i q0 = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0].qs)));
    const __m512i z =  // [qs0, qs0, qs1, qs1]
        kTwo ? _mm512_mask_broadcast_i32x4(q0, 0xFF00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1].qs)))
             : _mm512_maskz_mov_epi64(0x0F, q0);
    w = _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4), _mm512_set1_epi8(0x0F));
    const __m256i d0 = _mm256_set1_epi16(short(p[0].d));
    s = _mm512_cvtph_ps(kTwo ? _mm256_mask_set1_epi16(d0, 0xFF00, short(p[1].d)) : _mm256_maskz_mov_epi16(0x00FF, d0));
  }
};

// Q8_0: two blocks of 34 bytes; value = d * qs[i]. The quants are read as qs + 128.
struct FmtQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int offset = 128;
  template <bool kTwo>
  static HWY_INLINE void load(const Block* p, __m512i& w, __m512& s) {
    static constexpr auto kScales = make_words([](int i) { return i < 8 ? 0 : 17; });
    const auto* b = reinterpret_cast<const std::uint8_t*>(p);
    const __m256i q0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    const __m256i q1 = kTwo ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 36)) : _mm256_setzero_si256();
    w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1), _mm512_set1_epi8(char(0x80)));
    const __m512i v = kTwo ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi8((1ull << 34) - 1, b);
    s = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(load_table(kScales), v)));
  }
};

// The 6-bit scales and mins of Q4_K and Q5_K as 16 bytes [sc0..sc7, m0..m7] (llama.cpp's unpacking).
HWY_INLINE __m128i k4_scales_mins(const std::uint8_t* s) {
  std::uint32_t u[4];
  std::memcpy(u, s, 12);
  constexpr std::uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
  u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
  const std::uint32_t mins_lo = u[1] & m1;
  u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
  u[2] = mins_lo;
  u[0] &= m1;
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
}

// 32 bytes of packed nibbles as 64 quants [low nibbles | high nibbles].
HWY_INLINE __m512i nibbles(const std::uint8_t* q) {
  const __m512i z = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
  return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFFFF0000u, z, 4), _mm512_set1_epi8(0x0F));
}

// Per chunk c of a K-quant super-block: each int32 lane of vpdpbusd's result (4 values) times the
// scale of its sub-block, as vpdpwssd pairs [scale, 0] (a lane's sum fits in its low int16).
// `sc` holds the super-block's scales as int16 words.
template <int kLanesPerScale>
HWY_INLINE __m512i lane_scales(__m256i sc, int c) {
  static constexpr auto kIdx = [] {
    struct { alignas(64) std::uint16_t v[4][32]; } t{};
    for (int cc = 0; cc < 4; ++cc)
      for (int i = 0; i < 32; ++i) t.v[cc][i] = static_cast<std::uint16_t>(cc * 16 / kLanesPerScale + i / 2 / kLanesPerScale);
    return t;
  }();
  return _mm512_maskz_permutexvar_epi16(0x55555555u, _mm512_load_si512(kIdx.v[c]), _mm512_castsi256_si512(sc));
}

// The scales and mins of a Q4_K or Q5_K super-block as int16 words [sc0..sc7, m0..m7].
struct K4Scales {
  __m256i sm;
  HWY_INLINE explicit K4Scales(const std::uint8_t* packed) : sm(_mm256_cvtepu8_epi16(k4_scales_mins(packed))) {}
  HWY_INLINE __m512i lanes(int c) const { return lane_scales<8>(sm, c); }
  // Words [m0, m0, m1, m1, ..., m7, m7], against the 16 sums of 16 activations.
  HWY_INLINE __m256i min_pairs() const {
    static constexpr auto kIdx = make_words([](int i) { return 8 + (i % 16) / 2; });
    return _mm256_permutexvar_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(kIdx.v)), sm);
  }
  // [d * sc0..7, dmin * m0..7]
  HWY_INLINE __m512 units(float d, float dmin) const {
    const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(sm));
    return _mm512_mul_ps(f, _mm512_insertf32x8(_mm512_set1_ps(d), _mm256_set1_ps(dmin), 1));
  }
};

// Q4_K: value = d * sc_j * q - dmin * m_j for sub-block j of 32; chunk c holds sub-blocks 2c, 2c + 1
// as the low and high nibbles of qs[32c .. 32c + 32).
struct FmtQ4_K {
  using Block = BlockQ4_K;
  static constexpr bool has_min = true;
  struct Row {
    const Block* b;
    K4Scales k;
    HWY_INLINE explicit Row(const Block* p) : b(p), k(p->scales) {}
    HWY_INLINE __m512i weights(int c) const { return nibbles(b->qs + 32 * c); }
    HWY_INLINE __m512i scales(int c) const { return k.lanes(c); }
    HWY_INLINE __m256i min_pairs() const { return k.min_pairs(); }
    HWY_INLINE float d() const { return half_to_float(b->d); }
    HWY_INLINE float dmin() const { return half_to_float(b->dmin); }
    HWY_INLINE __m512 unit_scales() const { return k.units(d(), dmin()); }
  };
};

// Q5_K: Q4_K with a fifth bit: chunk c takes bit 2c of qh[l] for its first 32 values and bit
// 2c + 1 for the others.
struct FmtQ5_K {
  using Block = BlockQ5_K;
  static constexpr bool has_min = true;
  struct Row {
    const Block* b;
    K4Scales k;
    __m512i qh;  // the 32 high-bit bytes, twice
    HWY_INLINE explicit Row(const Block* p)
        : b(p), k(p->scales), qh(_mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p->qh)))) {}
    HWY_INLINE __m512i weights(int c) const {
      static constexpr auto kBits = [] {
        struct { alignas(64) std::uint8_t v[4][64]; } t{};
        for (int cc = 0; cc < 4; ++cc)
          for (int i = 0; i < 64; ++i) t.v[cc][i] = static_cast<std::uint8_t>(1u << (2 * cc + i / 32));
        return t;
      }();
      const __m512i lo = nibbles(b->qs + 32 * c);
      const __mmask64 high = _mm512_test_epi8_mask(qh, _mm512_load_si512(kBits.v[c]));
      return _mm512_mask_add_epi8(lo, high, lo, _mm512_set1_epi8(16));
    }
    HWY_INLINE __m512i scales(int c) const { return k.lanes(c); }
    HWY_INLINE __m256i min_pairs() const { return k.min_pairs(); }
    HWY_INLINE float d() const { return half_to_float(b->d); }
    HWY_INLINE float dmin() const { return half_to_float(b->dmin); }
    HWY_INLINE __m512 unit_scales() const { return k.units(d(), dmin()); }
  };
};

// Q6_K: value = d * sc[i / 16] * (q - 32), q = 4 low bits from ql and 2 high bits from qh.
struct FmtQ6_K {
  using Block = BlockQ6_K;
  static constexpr bool has_min = false;
  struct Row {
    const Block* b;
    __m256i sc;  // 16 signed scales as words
    HWY_INLINE explicit Row(const Block* p)
        : b(p), sc(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p->scales)))) {}
    // Chunk c = 64 values of half h = c / 2: ql[64h + l] low (c even) or high (c odd) nibbles, with
    // qh[32h + l % 32] bits 2 * (2 * (c % 2) + l / 32) and up as bits 4 and 5.
    HWY_INLINE __m512i weights(int c) const {
      static constexpr auto kShift = make_words([](int i) { return i < 16 ? 4 : 2; });
      const int h = c >> 1;
      const __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh + 32 * h)));
      const __m512i mask4 = _mm512_set1_epi8(0x0F);
      __m512i lo, hi;
      if ((c & 1) == 0) {
        lo = _mm512_and_si512(ql, mask4);
        hi = _mm512_sllv_epi16(qh, load_table(kShift));  // bits 0-1 or 2-3 up to 4-5
      } else {
        lo = _mm512_and_si512(_mm512_srli_epi16(ql, 4), mask4);
        hi = _mm512_mask_srli_epi16(qh, 0xFFFF0000u, qh, 2);  // bits 4-5 stay, 6-7 down to 4-5
      }
      return _mm512_ternarylogic_epi32(lo, hi, _mm512_set1_epi8(0x30), 0xF8);  // lo | (hi & 0x30)
    }
    HWY_INLINE __m512i scales(int c) const { return lane_scales<4>(sc, c); }
    // -32 * sc: the weights' offset against the 16 sums of 16 activations.
    HWY_INLINE __m256i offset_scales() const { return _mm256_mullo_epi16(sc, _mm256_set1_epi16(-32)); }
    HWY_INLINE float d() const { return half_to_float(b->d); }
    HWY_INLINE __m512 unit_scales() const {
      return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(sc)), _mm512_set1_ps(d()));
    }
  };
};

template <class Block> struct VnniFmt;
template <> struct VnniFmt<BlockQ4_0> { using type = FmtQ4_0; };
template <> struct VnniFmt<BlockQ8_0> { using type = FmtQ8_0; };
template <> struct VnniFmt<BlockQ4_K> { using type = FmtQ4_K; };
template <> struct VnniFmt<BlockQ5_K> { using type = FmtQ5_K; };
template <> struct VnniFmt<BlockQ6_K> { using type = FmtQ6_K; };

HWY_INLINE __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) { return _mm512_dpbusd_epi32(acc, u8, s8); }

// Four activation quants broadcast to every lane.
HWY_INLINE __m512i broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// ---------------------------------------------------------------------------------------------
// Decode: R rows × T tokens, dot products along the row.

// Prefetches [p, p + bytes) spread evenly over `steps` calls of step(): the rows of the next
// register block while this one is computed. Reading R rows at once makes R short interleaved
// streams, which the hardware prefetcher alone serves poorly (Zen 5: a third of the bandwidth).
class Prefetcher {
 public:
  Prefetcher(const void* p, std::size_t bytes, std::size_t steps)
      : p_(static_cast<const char*>(p)), end_(p_ + bytes), per_step_(steps ? (bytes / 64 + steps) / steps * 64 : 0) {}
  HWY_INLINE void step() {
    const char* stop = std::min(end_, p_ + per_step_);
    for (; p_ < stop; p_ += 64) _mm_prefetch(p_, _MM_HINT_T0);
  }

 private:
  const char* p_;
  const char* end_;
  std::size_t per_step_;
};

// y[t * y_stride + r] = row r of w · token t0 + t, for Q4_0 / Q8_0 weights of nb blocks per row.
template <class Fmt, std::size_t R, std::size_t T>
void legacy_dot(const typename Fmt::Block* w, std::size_t w_stride, std::size_t nb, const QuantizedActs& a,
                std::size_t t0, float* y, std::size_t y_stride, Prefetcher next) {
  static constexpr auto kPair = make_dwords([](int i) { return i / 8; });
  const __m512i pair = load_table(kPair);
  const __m512i offset = _mm512_set1_epi8(char(Fmt::offset));
  const __m512i zero = _mm512_setzero_si512();
  __m512 acc[R][T];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();

  auto chunk = [&](std::size_t b, auto two) {
    constexpr bool kTwo = decltype(two)::value;
    __m512i xq[T], bias[T];
    __m512 dx[T];
    for (std::size_t t = 0; t < T; ++t) {
      const std::int8_t* q = a.q_row(t0 + t) + 32 * b;
      xq[t] = kTwo ? _mm512_loadu_si512(q) : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
      // Each lane's share of -offset * sum(x) for the weights' offset.
      bias[t] = _mm512_sub_epi32(zero, dpbusd(zero, offset, xq[t]));
      const float* d = a.d_row(t0 + t) + b;
      const __m128 d2 = kTwo ? _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(d))) : _mm_load_ss(d);
      dx[t] = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(d2));
    }
    for (std::size_t r = 0; r < R; ++r) {
      __m512i wq;
      __m512 ws;
      Fmt::template load<kTwo>(w + r * w_stride + b, wq, ws);
      for (std::size_t t = 0; t < T; ++t)
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dpbusd(bias[t], wq, xq[t])), _mm512_mul_ps(ws, dx[t]), acc[r][t]);
    }
  };
  std::size_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    next.step();
    chunk(b, std::true_type{});
  }
  if (b < nb) chunk(b, std::false_type{});

  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t r = 0; r < R; ++r) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// Row views of the super-block s of R consecutive rows.
template <class Fmt, std::size_t R>
HWY_INLINE std::array<typename Fmt::Row, R> make_rows(const typename Fmt::Block* w, std::size_t w_stride, std::size_t s) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<typename Fmt::Row, R>{typename Fmt::Row(w + I * w_stride + s)...};
  }(std::make_index_sequence<R>());
}

// The same for K-quant weights of ns super-blocks per row.
template <class Fmt, std::size_t R, std::size_t T>
void kquant_dot(const typename Fmt::Block* w, std::size_t w_stride, std::size_t ns, const QuantizedActs& a,
                std::size_t t0, float* y, std::size_t y_stride, Prefetcher next) {
  const __m512i zero = _mm512_setzero_si512();
  __m512 acc[R][T];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();

  for (std::size_t s = 0; s < ns; ++s) {
    next.step();
    const auto rows = make_rows<Fmt, R>(w, w_stride, s);
    __m512i sum[R][T];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t t = 0; t < T; ++t) sum[r][t] = zero;
    for (int c = 0; c < 4; ++c) {
      __m512i xq[T];
      for (std::size_t t = 0; t < T; ++t) xq[t] = _mm512_loadu_si512(a.q_row(t0 + t) + 256 * s + 64 * c);
      for (std::size_t r = 0; r < R; ++r) {
        const __m512i wq = rows[r].weights(c), sc = rows[r].scales(c);
        for (std::size_t t = 0; t < T; ++t) sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], dpbusd(zero, wq, xq[t]), sc);
      }
    }
    for (std::size_t t = 0; t < T; ++t) {
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums_row(t0 + t) + 16 * s));
      const float dx = a.d_row(t0 + t)[s];
      for (std::size_t r = 0; r < R; ++r) {
        if constexpr (Fmt::has_min) {
          const __m256i m = _mm256_dpwssd_epi32(_mm256_setzero_si256(), rows[r].min_pairs(), bsums);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][t]), _mm512_set1_ps(rows[r].d() * dx), acc[r][t]);
          acc[r][t] = _mm512_fnmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(m)), _mm512_set1_ps(rows[r].dmin() * dx),
                                       acc[r][t]);
        } else {
          const __m512i s2 = _mm512_dpwssd_epi32(sum[r][t], _mm512_zextsi256_si512(rows[r].offset_scales()),
                                                 _mm512_zextsi256_si512(bsums));
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s2), _mm512_set1_ps(rows[r].d() * dx), acc[r][t]);
        }
      }
    }
  }
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t r = 0; r < R; ++r) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// ---------------------------------------------------------------------------------------------
// Prefill: a panel of 16 rows unpacked with the rows in the lanes, against every token.

inline constexpr std::size_t kPanelRows = 16;
// 8 KiB of unpacked quants: the two threads of a core share its L1, each with a panel, its tokens'
// share and the next chunk on the way (tinyllm-quant-bench BM_packed_qbatch, 5632 x 2048, Q4_0, 2
// threads: 16 tokens 432-438 us against 490-506 with 1024 inputs, 32 tokens 800-830 against 860).
inline constexpr std::size_t kPanelInputs = 512;
inline constexpr std::size_t kPanelTokens = 8;     // tokens per register block: 8 sums, 8 accumulators (+ 8 for K)

struct Panel {
  alignas(64) std::uint8_t w[kPanelInputs / 4][64];  // [input / 4][row][4 quants]
  alignas(64) float scale[kPanelInputs / 16][16];    // per block or sub-block: [row]
  alignas(64) float min[kPanelInputs / 32][16];      // Q4_K, Q5_K: dmin * m_j per sub-block: [row]
};

// The 16 x 16 matrix of dwords in v, transposed in place (64 shuffles).
HWY_INLINE void transpose16(__m512i (&v)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  // u[4g + k] holds, in 128-bit lane L, column 4L + k of rows 4g .. 4g + 3.
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88);
    t[4 + k] = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xDD);
    t[8 + k] = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88);
    t[12 + k] = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xDD);
  }
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0x88);
    v[8 + k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0xDD);
    v[4 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0x88);
    v[12 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0xDD);
  }
}

// Blocks [b0, b0 + nb) of rows w[0 .. nr), nr <= 16, into p; rows nr.. are zeros.
template <class Fmt>
void unpack_legacy(const typename Fmt::Block* w, std::size_t w_stride, std::size_t nr, std::size_t b0, std::size_t nb,
                   Panel& p) {
  using Block = typename Fmt::Block;
  for (std::size_t c = 0; c < nb; c += 2) {
    const bool two = c + 1 < nb;
    __m512i v[16];
    for (std::size_t r = 0; r < 16; ++r) {
      __m512 unused;
      v[r] = _mm512_setzero_si512();
      if (r >= nr) continue;
      if (two) Fmt::template load<true>(w + r * w_stride + b0 + c, v[r], unused);
      else Fmt::template load<false>(w + r * w_stride + b0 + c, v[r], unused);
    }
    transpose16(v);
    for (std::size_t k = 0; k < (two ? 16u : 8u); ++k) _mm512_store_si512(p.w[8 * c + k], v[k]);
  }
  // The f16 scale leads each block: gather it from the 16 rows at once.
  static constexpr auto kRow = make_dwords([](int i) { return i; });
  const __m512i offsets = _mm512_mullo_epi32(load_table(kRow), _mm512_set1_epi32(int(w_stride * sizeof(Block))));
  const __mmask16 rows = __mmask16((1u << nr) - 1);
  for (std::size_t b = 0; b < nb; ++b) {
    const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, offsets, w + b0 + b, 1);
    _mm512_store_ps(p.scale[b], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)));
  }
}

// Super-blocks [s0, s0 + ns) of rows w[0 .. nr) into p.
template <class Fmt>
void unpack_kquant(const typename Fmt::Block* w, std::size_t w_stride, std::size_t nr, std::size_t s0, std::size_t ns,
                   Panel& p) {
  for (std::size_t s = 0; s < ns; ++s) {
    __m512i q[4][16], sc[16];
    for (std::size_t r = 0; r < 16; ++r) {
      if (r < nr) {
        const typename Fmt::Row row(w + r * w_stride + s0 + s);
        for (int c = 0; c < 4; ++c) q[c][r] = row.weights(c);
        sc[r] = _mm512_castps_si512(row.unit_scales());
      } else {
        for (int c = 0; c < 4; ++c) q[c][r] = _mm512_setzero_si512();
        sc[r] = _mm512_setzero_si512();
      }
    }
    for (int c = 0; c < 4; ++c) {
      transpose16(q[c]);
      for (int k = 0; k < 16; ++k) _mm512_store_si512(p.w[64 * s + 16 * c + k], q[c][k]);
    }
    transpose16(sc);
    if constexpr (Fmt::has_min) {
      for (int j = 0; j < 8; ++j) {
        _mm512_store_si512(p.scale[8 * s + j], sc[j]);
        _mm512_store_si512(p.min[8 * s + j], sc[8 + j]);
      }
    } else {
      for (int j = 0; j < 16; ++j) _mm512_store_si512(p.scale[16 * s + j], sc[j]);
    }
  }
}

// y[t * y_stride + r] (+)= the panel's row r · token t, for the lanes in `rows`.
HWY_INLINE void store_rows(float* y, __m512 v, __mmask16 rows, bool accumulate) {
  if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(rows, y));
  _mm512_mask_storeu_ps(y, rows, v);
}

// T <= 8 tokens of the group at t0 against blocks [b0, b0 + nb) of a legacy panel. The
// activations are grouped by 8 tokens (QuantizedActs::group), so one pointer reaches them all.
template <class Fmt, std::size_t T>
void legacy_panel(const Panel& p, std::size_t b0, std::size_t nb, const QuantizedActs& a, std::size_t t0, float* y,
                  std::size_t y_stride, __mmask16 rows, bool accumulate) {
  constexpr std::size_t G = kPanelTokens;
  assert(a.group == G && t0 % G == 0);
  const std::int8_t* xq = a.qs + a.q_index(t0, 32 * b0);  // 4 quants of token t at xq + 4 * (G * step + t)
  const float* dx = a.d + t0 * a.d_stride + G * b0;       // block b of token t at dx[G * b + t]
  const std::int32_t* bias = a.aux + t0 * a.aux_stride + G * b0;
  __m512 acc[T];
  for (std::size_t t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (std::size_t b = 0; b < nb; ++b) {
    __m512i sum[T];
    for (std::size_t t = 0; t < T; ++t) sum[t] = _mm512_set1_epi32(bias[G * b + t]);
#pragma GCC unroll 8
    for (std::size_t k = 0; k < 8; ++k) {
      const __m512i wq = _mm512_load_si512(p.w[8 * b + k]);
      for (std::size_t t = 0; t < T; ++t) sum[t] = dpbusd(sum[t], wq, broadcast4(xq + 4 * (G * (8 * b + k) + t)));
    }
    const __m512 ws = _mm512_load_ps(p.scale[b]);
    for (std::size_t t = 0; t < T; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), _mm512_mul_ps(ws, _mm512_set1_ps(dx[G * b + t])), acc[t]);
  }
  for (std::size_t t = 0; t < T; ++t) store_rows(y + t * y_stride, acc[t], rows, accumulate);
}

// The same against super-blocks [s0, s0 + ns) of a K-quant panel. Units are the sub-blocks (32
// values for Q4_K and Q5_K, 16 for Q6_K); their float sums are scaled by the token's d once per
// super-block.
template <class Fmt, std::size_t T>
void kquant_panel(const Panel& p, std::size_t s0, std::size_t ns, const QuantizedActs& a, std::size_t t0, float* y,
                  std::size_t y_stride, __mmask16 rows, bool accumulate) {
  constexpr std::size_t G = kPanelTokens;
  constexpr std::size_t kUnits = Fmt::has_min ? 8 : 16, kSteps = 64 / kUnits;  // 4-quant steps per unit
  assert(a.group == G && t0 % G == 0);
  const std::int8_t* xq = a.qs + a.q_index(t0, 256 * s0);
  const float* dx = a.d + t0 * a.d_stride + G * s0;
  const std::int32_t* aux = a.aux + t0 * a.aux_stride + G * kUnits * s0;
  __m512 acc[T];
  for (std::size_t t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (std::size_t s = 0; s < ns; ++s) {
    __m512 part[T];
    for (std::size_t t = 0; t < T; ++t) part[t] = _mm512_setzero_ps();
    for (std::size_t u = 0; u < kUnits; ++u) {
      const std::size_t unit = kUnits * s + u;
      __m512i sum[T];
      for (std::size_t t = 0; t < T; ++t)  // Q6_K: -32 * sum(x) for the weights' offset
        sum[t] = Fmt::has_min ? _mm512_setzero_si512() : _mm512_set1_epi32(aux[G * unit + t]);
#pragma GCC unroll 8
      for (std::size_t k = 0; k < kSteps; ++k) {
        const __m512i wq = _mm512_load_si512(p.w[kSteps * unit + k]);
        for (std::size_t t = 0; t < T; ++t)
          sum[t] = dpbusd(sum[t], wq, broadcast4(xq + 4 * (G * (kSteps * unit + k) + t)));
      }
      const __m512 ws = _mm512_load_ps(p.scale[unit]);
      for (std::size_t t = 0; t < T; ++t) part[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), ws, part[t]);
      if constexpr (Fmt::has_min) {
        const __m512 wm = _mm512_load_ps(p.min[unit]);
        for (std::size_t t = 0; t < T; ++t) {
          float xsum;  // the sum of the sub-block's quants, as float bits
          std::memcpy(&xsum, &aux[G * unit + t], sizeof xsum);
          part[t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(xsum), part[t]);
        }
      }
    }
    for (std::size_t t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(part[t], _mm512_set1_ps(dx[G * s + t]), acc[t]);
  }
  for (std::size_t t = 0; t < T; ++t) store_rows(y + t * y_stride, acc[t], rows, accumulate);
}

template <class Fmt>
inline constexpr bool is_kquant = !std::is_same_v<Fmt, FmtQ4_0> && !std::is_same_v<Fmt, FmtQ8_0>;

// The panel kernel for t_count <= T tokens, T a compile-time bound.
template <class Fmt, std::size_t T = kPanelTokens>
HWY_INLINE void panel_any(std::size_t t_count, const Panel& p, std::size_t first, std::size_t count,
                          const QuantizedActs& a, std::size_t t0, float* y, std::size_t y_stride, __mmask16 rows,
                          bool accumulate) {
  if constexpr (T > 1)
    if (t_count < T) return panel_any<Fmt, T - 1>(t_count, p, first, count, a, t0, y, y_stride, rows, accumulate);
  if constexpr (is_kquant<Fmt>) kquant_panel<Fmt, T>(p, first, count, a, t0, y, y_stride, rows, accumulate);
  else legacy_panel<Fmt, T>(p, first, count, a, t0, y, y_stride, rows, accumulate);
}

// Asks for blocks [first, first + count) of rows w[0 .. nr) to be brought into L2.
template <class Block>
HWY_INLINE void prefetch_rows(const Block* w, std::size_t w_stride, std::size_t nr, std::size_t first, std::size_t count) {
  for (std::size_t r = 0; r < nr; ++r) {
    const char* p = reinterpret_cast<const char*>(w + r * w_stride + first);
    for (std::size_t i = 0; i < count * sizeof(Block); i += 64) _mm_prefetch(p + i, _MM_HINT_T1);
  }
}

template <class Fmt>
void prefill_rows(MatrixView<const typename Fmt::Block> w, const QuantizedActs& a, MatrixView<float> y,
                  std::size_t o0, std::size_t o1) {
  constexpr std::size_t kBlock = block_values<typename Fmt::Block>, kChunk = kPanelInputs / kBlock;
  const std::size_t n_blocks = w.cols / kBlock;
  Panel panel;
  for (std::size_t o = o0; o < o1; o += kPanelRows) {
    const std::size_t nr = std::min(kPanelRows, o1 - o);
    const __mmask16 rows = __mmask16((1u << nr) - 1);
    for (std::size_t first = 0; first < n_blocks; first += kChunk) {
      const std::size_t count = std::min(kChunk, n_blocks - first);
      if constexpr (is_kquant<Fmt>) unpack_kquant<Fmt>(w.row(o), w.stride, nr, first, count, panel);
      else unpack_legacy<Fmt>(w.row(o), w.stride, nr, first, count, panel);
      // The next panel's 16 short row pieces arrive while this one is used: with few tokens the
      // panels follow each other quickly, and the hardware prefetcher does not follow 16 streams.
      if (first + count < n_blocks)
        prefetch_rows(w.row(o), w.stride, nr, first + count, std::min(kChunk, n_blocks - first - count));
      else if (o + kPanelRows < o1)
        prefetch_rows(w.row(o + kPanelRows), w.stride, std::min(kPanelRows, o1 - o - kPanelRows), 0,
                      std::min(kChunk, n_blocks));
      for (std::size_t t = 0; t < a.n_tok; t += kPanelTokens)
        panel_any<Fmt>(std::min(kPanelTokens, a.n_tok - t), panel, first, count, a, t, y.row(t) + o, y.stride, rows,
                       first > 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Drivers.

inline constexpr std::size_t kDecodeRows = 4;
inline constexpr std::size_t kDecodeTokens = 2;
// From this many tokens on, the panel kernel is faster (measured on Zen 5 at 5632 x 2048: 4 tokens
// take 25% longer with panels, 6 tokens 10-25% less).
inline constexpr std::size_t kPrefillMinTokens = 5;

template <class Fmt, std::size_t R = kDecodeRows, std::size_t T = kDecodeTokens>
HWY_INLINE void dot_any(std::size_t r_count, std::size_t t_count, const typename Fmt::Block* w, std::size_t w_stride,
                        std::size_t n_blocks, const QuantizedActs& a, std::size_t t0, float* y, std::size_t y_stride,
                        Prefetcher next) {
  if constexpr (R > 1)
    if (r_count < R) return dot_any<Fmt, R - 1, T>(r_count, t_count, w, w_stride, n_blocks, a, t0, y, y_stride, next);
  if constexpr (T > 1)
    if (t_count < T) return dot_any<Fmt, R, T - 1>(r_count, t_count, w, w_stride, n_blocks, a, t0, y, y_stride, next);
  if constexpr (is_kquant<Fmt>) kquant_dot<Fmt, R, T>(w, w_stride, n_blocks, a, t0, y, y_stride, next);
  else legacy_dot<Fmt, R, T>(w, w_stride, n_blocks, a, t0, y, y_stride, next);
}

template <class Fmt>
void decode_rows(MatrixView<const typename Fmt::Block> w, const QuantizedActs& a, MatrixView<float> y, std::size_t o0,
                 std::size_t o1) {
  using Block = typename Fmt::Block;
  const std::size_t n_blocks = w.cols / block_values<Block>;
  const std::size_t steps = is_kquant<Fmt> ? n_blocks : n_blocks / 2;
  for (std::size_t o = o0; o < o1; o += kDecodeRows) {
    // The next block's rows, or nothing past this thread's share.
    const std::size_t next_rows = std::min(kDecodeRows, o1 - std::min(o1, o + kDecodeRows));
    for (std::size_t t = 0; t < a.n_tok; t += kDecodeTokens)
      dot_any<Fmt>(std::min(kDecodeRows, o1 - o), std::min(kDecodeTokens, a.n_tok - t), w.row(o), w.stride, n_blocks,
                   a, t, y.row(t) + o, y.stride,
                   Prefetcher(w.row(o) + kDecodeRows * w.stride * (next_rows > 0),
                              t == 0 ? next_rows * w.stride * sizeof(Block) : 0, steps));
  }
}

template <class Block>
void qmatmul_vnni(ThreadPool& pool, MatrixView<const Block> w, MatrixView<const float> x, MatrixView<float> y,
                  QuantScratch& scratch) {
  using Fmt = typename VnniFmt<Block>::type;
  if (x.rows < kPrefillMinTokens) {
    const QuantizedActs a = quantize_activations<Block>(pool, x, scratch);
    pool.parallel_for(
        w.rows, [&](std::size_t o0, std::size_t o1) { decode_rows<Fmt>(w, a, y, o0, o1); }, kDecodeRows);
  } else {
    const QuantizedActs a = quantize_activations<Block>(pool, x, scratch, kPanelTokens);
    pool.parallel_for(
        w.rows, [&](std::size_t o0, std::size_t o1) { prefill_rows<Fmt>(w, a, y, o0, o1); }, kPanelRows);
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else  // !TINYLLM_QMATMUL_VNNI

// ---------------------------------------------------------------------------------------------
// Portable path: each weight block as int8 values with a float scale (and min) per unit.

template <class Block> struct IntForm;

// value i = scale[i / unit] * q[i] - min[i / unit]
template <> struct IntForm<BlockQ8_0> {
  static constexpr std::size_t unit = 32;
  static void unpack(const BlockQ8_0& b, std::int8_t* q, float* scale, float* min) {
    std::memcpy(q, b.qs, 32);
    scale[0] = f16_to_f32(b.d), min[0] = 0;
  }
};
template <> struct IntForm<BlockQ4_0> {
  static constexpr std::size_t unit = 32;
  static void unpack(const BlockQ4_0& b, std::int8_t* q, float* scale, float* min) {
    for (int i = 0; i < 16; ++i) {
      q[i] = std::int8_t((b.qs[i] & 15) - 8);
      q[i + 16] = std::int8_t((b.qs[i] >> 4) - 8);
    }
    scale[0] = f16_to_f32(b.d), min[0] = 0;
  }
};
template <class Block>
void unpack_k4(const Block& b, const std::uint8_t* qh, std::int8_t* q, float* scale, float* min) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    get_scale_min_k4(j, b.scales, sc, m);
    scale[j] = d * float(sc), min[j] = dmin * float(m);
  }
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const std::uint8_t byte = b.qs[32 * c + l];
      q[64 * c + l] = std::int8_t((byte & 15) | (qh && (qh[l] >> (2 * c) & 1) ? 16 : 0));
      q[64 * c + 32 + l] = std::int8_t((byte >> 4) | (qh && (qh[l] >> (2 * c + 1) & 1) ? 16 : 0));
    }
}
template <> struct IntForm<BlockQ4_K> {
  static constexpr std::size_t unit = 32;
  static void unpack(const BlockQ4_K& b, std::int8_t* q, float* scale, float* min) { unpack_k4(b, nullptr, q, scale, min); }
};
template <> struct IntForm<BlockQ5_K> {
  static constexpr std::size_t unit = 32;
  static void unpack(const BlockQ5_K& b, std::int8_t* q, float* scale, float* min) { unpack_k4(b, b.qh, q, scale, min); }
};
template <> struct IntForm<BlockQ6_K> {
  static constexpr std::size_t unit = 16;
  static void unpack(const BlockQ6_K& b, std::int8_t* q, float* scale, float* min) {
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) scale[j] = d * float(b.scales[j]), min[j] = 0;
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t* ql = b.ql + 64 * h;
        const std::uint8_t qh = b.qh[32 * h + l];
        std::int8_t* out = q + 128 * h;
        out[l] = std::int8_t(((ql[l] & 15) | (qh & 3) << 4) - 32);
        out[l + 32] = std::int8_t(((ql[l + 32] & 15) | (qh >> 2 & 3) << 4) - 32);
        out[l + 64] = std::int8_t(((ql[l] >> 4) | (qh >> 4 & 3) << 4) - 32);
        out[l + 96] = std::int8_t(((ql[l + 32] >> 4) | (qh >> 6 & 3) << 4) - 32);
      }
  }
};

// sum_i a[i] * b[i] over n int8 values (n a multiple of 16), in int16 multiply-adds.
HWY_INLINE std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) {
  const hn::CappedTag<std::int16_t, 16> d16;
  const hn::Rebind<std::int8_t, decltype(d16)> d8;
  const hn::RepartitionToWide<decltype(d16)> d32;
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (std::size_t i = 0; i < n; i += hn::Lanes(d16))
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::LoadU(d8, a + i)),
                                       hn::PromoteTo(d16, hn::LoadU(d8, b + i)), s0, s1);
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(s0, s1)));
}

template <class Block>
void portable_rows(MatrixView<const Block> w, const QuantizedActs& a, MatrixView<float> y, std::size_t o0,
                   std::size_t o1) {
  using Int = IntForm<Block>;
  constexpr std::size_t kBlock = block_values<Block>, kUnits = kBlock / Int::unit;
  constexpr bool has_min = std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>;
  alignas(64) std::int8_t q[kBlock];
  float scale[kUnits], min[kUnits];
  for (std::size_t o = o0; o < o1; ++o) {
    for (std::size_t t = 0; t < a.n_tok; ++t) y.row(t)[o] = 0;
    for (std::size_t b = 0; b < w.cols / kBlock; ++b) {
      Int::unpack(w.row(o)[b], q, scale, min);
      for (std::size_t t = 0; t < a.n_tok; ++t) {
        const std::int8_t* xq = a.q_row(t) + kBlock * b;
        float sum = 0;
        for (std::size_t u = 0; u < kUnits; ++u) {
          sum += scale[u] * float(dot_i8(q + Int::unit * u, xq + Int::unit * u, Int::unit));
          if constexpr (has_min) sum -= min[u] * a.aux_f32_at(t, kUnits * b + u);
        }
        y.row(t)[o] += a.d_row(t)[b] * sum;
      }
    }
  }
}

template <class Block>
void qmatmul_portable(ThreadPool& pool, MatrixView<const Block> w, MatrixView<const float> x, MatrixView<float> y,
                      QuantScratch& scratch) {
  const QuantizedActs a = quantize_activations<Block>(pool, x, scratch);
  pool.parallel_for(w.rows, [&](std::size_t o0, std::size_t o1) { portable_rows(w, a, y, o0, o1); });
}

#endif  // TINYLLM_QMATMUL_VNNI

}  // namespace qdetail

// y[t, o] = sum_i w[o, i] * x[t, i] with quantized weights.  w: [n_out, n_in] (a row holds
// n_in / block_values<Block> blocks; stride in blocks), x: [n_tok, n_in], y: [n_tok, n_out];
// n_in a multiple of the block size. Threads split the output rows. The result differs from
// dequantize-then-multiply by the 8-bit rounding of x: at most about sum_i |w[o, i]| * d_i / 2,
// d_i = max|x| / 127 over x's block of 32 (Q8_0, Q4_0) or 256 (K-quants) around i.
template <class Block>
void qmatmul(ThreadPool& pool, MatrixView<const Block> w, MatrixView<const float> x, MatrixView<float> y,
             QuantScratch& scratch) {
  static_assert(is_qmatmul_block<Block>, "cpu::qmatmul: Q8_0, Q4_0, Q4_K, Q5_K or Q6_K weights");
  assert(w.cols == x.cols && y.rows == x.rows && y.cols == w.rows && w.cols % block_values<Block> == 0);
  if (x.rows == 0 || w.rows == 0) return;
  if (w.cols == 0) {  // empty sums
    for (std::size_t t = 0; t < y.rows; ++t) std::fill_n(y.row(t), y.cols, 0.0f);
    return;
  }
#if TINYLLM_QMATMUL_VNNI
  qdetail::qmatmul_vnni(pool, w, x, y, scratch);
#else
  qdetail::qmatmul_portable(pool, w, x, y, scratch);
#endif
}

// The same with the weight type known at run time: w holds n_out contiguous rows of n_in values
// of type `type`. F32 and F16 weights go to cpu::matmul.
inline void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  auto typed = [&]<class Block>(std::type_identity<Block>) {
    if (n_in % block_values<Block> != 0)
      throw Error("weight rows of " + std::to_string(n_in) + " values", "cpu::qmatmul (" + std::string(name(type)) + ")",
                  "a multiple of " + std::to_string(block_values<Block>));
    qmatmul(pool, MatrixView<const Block>(static_cast<const Block*>(w), n_out, n_in, n_in / block_values<Block>), x, y,
            scratch);
  };
  switch (type) {
    case DType::F32: return matmul(pool, MatrixView<const float>(static_cast<const float*>(w), n_out, n_in), x, y);
    case DType::F16: return matmul(pool, MatrixView<const F16>(static_cast<const F16*>(w), n_out, n_in), x, y);
    case DType::Q8_0: return typed(std::type_identity<BlockQ8_0>{});
    case DType::Q4_0: return typed(std::type_identity<BlockQ4_0>{});
    case DType::Q4_K: return typed(std::type_identity<BlockQ4_K>{});
    case DType::Q5_K: return typed(std::type_identity<BlockQ5_K>{});
    case DType::Q6_K: return typed(std::type_identity<BlockQ6_K>{});
    default: break;
  }
  const auto info = dtype_info(static_cast<std::uint32_t>(type));
  throw Error("no matmul kernel for weight type " +
                  (info ? std::string(info->name) : "id " + std::to_string(static_cast<std::uint32_t>(type))),
              "cpu::qmatmul", "F32, F16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
}

}  // namespace tinyllm::cpu
