// The quantized matmul kernels on one packed group of 16 weight rows (qpack.hpp), for every SIMD
// target: the integer dot products of int8_dot.hpp, the per-row scales of qunit.hpp.
//
// The inputs are taken in chunks of kPanelInputs. For each chunk, tokens in register blocks of
// T, and each part (kParts vectors make the 16 rows) in turn:
//   legacy formats (Q4_0, Q8_0), per block of 32:
//     sums[t]  = int32 sums of the block's steps: one multiply-add per step and token, 16 rows
//                at once, no horizontal sums;
//     acc[t]  += float(sums[t]) * (scale * d_x)
//   K-quants, exact in int32 over a super-block of 256 (< 2^29):
//     tot[t]  += sc * (sum of a sub-block's steps)   where vpmaddubsw's int16 pairs exist, sc
//                takes the place of vpmaddwd's ones (dot_scaled); else sums[t] * sc once;
//     mtot[t] += m * sum(q)                          (Q4_K, Q5_K; two sub-blocks per madd16)
//     acc[t]  += float(tot[t]) * (d * d_x) - float(mtot[t]) * (dmin * d_x)   per super-block
//   and y += acc after each chunk.
// Decode (few tokens) takes the steps straight from the packed units, which stream from memory
// once. Prefill first unpacks the chunk of each group into an L1 panel of plain steps and float
// scales, then runs every token over it. Both run the same accumulate(), so a token gets the
// same bits from either, and from any batch it is part of.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_QKERNEL_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_QKERNEL_HPP_
#undef TINYLLM_KERNELS_CPU_QKERNEL_HPP_
#else
#define TINYLLM_KERNELS_CPU_QKERNEL_HPP_
#endif
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <tinyllm/kernels/cpu/int8_dot.hpp>
#include <tinyllm/kernels/cpu/qunit.hpp>
#include <tinyllm/kernels/cpu/quantize_act.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE::detail {

inline constexpr std::size_t kPanelInputs = 512;
inline constexpr std::size_t kActGroup = 8;  // the prefill activations' token grouping (quantize_act.hpp)
// Tokens held in registers at once: sums, accumulators and K-quant parts for T tokens of a part.
inline constexpr std::size_t kPanelTokens = kParts == 1 ? 8 : 4;
inline constexpr std::size_t kDecodeTokens = kParts == 1 ? 8 : kParts == 2 ? 4 : 2;
// Up to this many tokens the panel kernel prefetches the next chunk of weights itself.
inline constexpr std::size_t kPrefetchMaxTokens = 64;

// Quantized activations of the tokens from t0, grouped by G tokens (quantize_act.hpp; G = 1 is
// plain rows, for a single token): every offset below is known at compile time.
template <std::size_t G>
struct ActView {
  const std::int8_t* q;
  const float* d;
  const std::int32_t* aux;

  static ActView at(const QuantizedActs& a, std::size_t t0) {
    assert(a.group == G);
    const std::size_t l = t0 % G, row = t0 - l;
    return {a.qs + a.q_index(t0, 0), a.d + row * a.d_stride + l, a.aux + row * a.aux_stride + l};
  }
  // 4 quants of step s (inputs 4s ..) of token t; the scale of block b; the aux value of sub-block u.
  HWY_INLINE const std::int8_t* step(std::size_t s, std::size_t t) const { return q + 4 * (G * s + t); }
  HWY_INLINE float scale(std::size_t b, std::size_t t) const { return d[G * b + t]; }
  HWY_INLINE std::int32_t aux_int(std::size_t u, std::size_t t) const { return aux[G * u + t]; }
};

// One chunk's weights unpacked: the same accessors as QUnit<Block>, over plain steps.
struct Panel {
  alignas(64) std::uint8_t w[kPanelInputs / 4][kStepBytes];   // [step][row][4 quants]
  alignas(64) float scale[kPanelInputs / 16][kStepRows];      // [sub-block][row]
  alignas(64) float min[kPanelInputs / 32][kStepRows];        // has_min formats: [sub-block][row]
  alignas(64) std::int32_t int_scale[kPanelInputs / 16][kStepRows];  // int_scales formats: [sub-block][row]
  alignas(64) std::int32_t int_min_pair[kPanelInputs / 64][kStepRows];  // has_min formats: [sub-block pair][row]
};

template <class Block>
struct PanelSource {
  using Q = QUnit<Block>;
  const Panel& panel;
  // Memory to bring into L2 while the tokens run: ahead_bytes of it per sub-block (null: none).
  const std::uint8_t* ahead = nullptr;
  std::size_t ahead_bytes = 0;
  template <class F>
  HWY_INLINE void steps(std::size_t j, std::size_t p, F&& f) const {
    if (ahead != nullptr && p == 0)
      for (std::size_t b = j * ahead_bytes; b < (j + 1) * ahead_bytes; b += 64) __builtin_prefetch(ahead + b, 0, 2);
    TINYLLM_UNROLL
    for (std::size_t k = 0; k < Q::steps_per_sub; ++k) f(k, load_part(panel.w[j * Q::steps_per_sub + k], p));
  }
  HWY_INLINE VF32 scale(std::size_t j, std::size_t p) const { return hn::Load(DF32(), panel.scale[j] + p * kPartRows); }
  HWY_INLINE VF32 min(std::size_t j, std::size_t p) const { return hn::Load(DF32(), panel.min[j] + p * kPartRows); }
  HWY_INLINE VI32 int_scale(std::size_t j, std::size_t p) const {
    return hn::Load(DI32(), panel.int_scale[j] + p * kPartRows);
  }
  HWY_INLINE VI32 int_min_pair(std::size_t i, std::size_t p) const {
    return hn::Load(DI32(), panel.int_min_pair[i] + p * kPartRows);
  }
};

// The units from `first` of one group, sub-blocks numbered from there.
template <class Block>
struct UnitSource {
  using Q = QUnit<Block>;
  const std::uint8_t* first;
  HWY_INLINE const std::uint8_t* unit(std::size_t j) const { return first + j / Q::subs * PackedUnit<Block>::bytes; }
  template <class F>
  HWY_INLINE void steps(std::size_t j, std::size_t p, F&& f) const {
    Q::steps(unit(j), j % Q::subs, p, f);
  }
  HWY_INLINE VF32 scale(std::size_t j, std::size_t p) const { return Q::scale(unit(j), j % Q::subs, p); }
  HWY_INLINE VF32 min(std::size_t j, std::size_t p) const { return Q::min(unit(j), j % Q::subs, p); }
  HWY_INLINE VI32 int_scale(std::size_t j, std::size_t p) const { return Q::int_scale(unit(j), j % Q::subs, p); }
  HWY_INLINE VI32 int_min_pair(std::size_t i, std::size_t p) const {
    return Q::int_min_pair(unit(2 * i), i % (Q::subs / 2), p);
  }
};

// acc[t] (+)= part p of sub-blocks [0, n_subs) of src · tokens t of x, whose sub-block 0 is the
// activations' sub-block s0 (a whole number of activation blocks).
template <class Block, std::size_t T, std::size_t G, class Src>
HWY_INLINE void accumulate(const Src& src, std::size_t n_subs, const ActView<G>& x, std::size_t s0, std::size_t p,
                           VF32 (&acc)[T]) {
  using Q = QUnit<Block>;
  const DF32 df;
  VI32 tot[T], mtot[T];  // K-quants
  for (std::size_t j = 0; j < n_subs; ++j) {
    const std::size_t s = s0 + j;   // the activations' sub-block
    if constexpr (!Q::int_scales) {
      // Few tokens: two chains of multiply-adds per token, so that their latencies overlap.
      constexpr std::size_t kChains = T < 4 ? 2 : 1;
      VI32 sums[kChains][T];
      TINYLLM_UNROLL
      for (std::size_t t = 0; t < T; ++t) {
        sums[0][t] = Q::bias ? hn::Set(DI32(), x.aux_int(s, t)) : hn::Zero(DI32());
        if constexpr (kChains == 2) sums[1][t] = hn::Zero(DI32());
      }
      src.steps(j, p, [&](std::size_t k, VU8 w) HWY_ATTR {
        TINYLLM_UNROLL
        for (std::size_t t = 0; t < T; ++t) {
          const VI8 xk = broadcast4(x.step(s * Q::steps_per_sub + k, t));
          VI32& sum = sums[k % kChains][t];
          sum = Q::q8 ? dot_q8(sum, w, xk) : dot_small(sum, w, xk);
        }
      });
      const VF32 sc = src.scale(j, p);
      TINYLLM_UNROLL
      for (std::size_t t = 0; t < T; ++t) {
        if constexpr (kChains == 2) sums[0][t] = hn::Add(sums[0][t], sums[1][t]);
        acc[t] = hn::MulAdd(hn::ConvertTo(df, sums[0][t]), hn::Mul(sc, hn::Set(df, x.scale(s, t))), acc[t]);
      }
    } else {
      if (j % Q::act_subs == 0)
        TINYLLM_UNROLL
        for (std::size_t t = 0; t < T; ++t) tot[t] = mtot[t] = hn::Zero(DI32());
      const VI32 isc = src.int_scale(j, p);
      if constexpr (kScaleInMadd) {
        const VI32 pairs = scale_pairs(isc);
        src.steps(j, p, [&](std::size_t k, VU8 w) HWY_ATTR {
          TINYLLM_UNROLL
          for (std::size_t t = 0; t < T; ++t)
            tot[t] = dot_scaled(tot[t], w, broadcast4(x.step(s * Q::steps_per_sub + k, t)), pairs);
        });
        if constexpr (Q::bias)
          TINYLLM_UNROLL
          for (std::size_t t = 0; t < T; ++t) tot[t] = hn::Add(tot[t], hn::Mul(isc, hn::Set(DI32(), x.aux_int(s, t))));
      } else {
        VI32 sums[T];
        TINYLLM_UNROLL
        for (std::size_t t = 0; t < T; ++t) sums[t] = Q::bias ? hn::Set(DI32(), x.aux_int(s, t)) : hn::Zero(DI32());
        src.steps(j, p, [&](std::size_t k, VU8 w) HWY_ATTR {
          TINYLLM_UNROLL
          for (std::size_t t = 0; t < T; ++t) sums[t] = dot_small(sums[t], w, broadcast4(x.step(s * Q::steps_per_sub + k, t)));
        });
        TINYLLM_UNROLL
        for (std::size_t t = 0; t < T; ++t) tot[t] = hn::Add(tot[t], hn::Mul(sums[t], isc));
      }
      if constexpr (Q::has_min)
        if (j % 2 == 1) {
          const VI32 m = src.int_min_pair(j / 2, p);
          TINYLLM_UNROLL
          for (std::size_t t = 0; t < T; ++t) mtot[t] = madd16(mtot[t], m, hn::Set(DI32(), x.aux_int(s / 2, t)));
        }
      if (j % Q::act_subs == Q::act_subs - 1) {
        const VF32 d = src.scale(j, p);
        VF32 dmin = hn::Zero(df);
        if constexpr (Q::has_min) dmin = src.min(j, p);
        const std::size_t b = s / Q::act_subs;
        TINYLLM_UNROLL
        for (std::size_t t = 0; t < T; ++t) {
          const VF32 dx = hn::Set(df, x.scale(b, t));
          acc[t] = hn::MulAdd(hn::ConvertTo(df, tot[t]), hn::Mul(d, dx), acc[t]);
          if constexpr (Q::has_min) acc[t] = hn::NegMulAdd(hn::ConvertTo(df, mtot[t]), hn::Mul(dmin, dx), acc[t]);
        }
      }
    }
  }
}

// y[t][p's rows] (+)= acc[t], for the first `rows` rows of the group.
template <std::size_t T>
HWY_INLINE void store_part(VF32 (&acc)[T], float* y, std::size_t y_stride, std::size_t p, std::size_t rows, bool add) {
  const DF32 df;
  const std::size_t r0 = p * kPartRows;
  if (r0 >= rows) return;
  const std::size_t n = std::min(kPartRows, rows - r0);
  TINYLLM_UNROLL
  for (std::size_t t = 0; t < T; ++t) {
    float* out = y + t * y_stride + r0;
    if (n == kPartRows) {
      hn::StoreU(add ? hn::Add(acc[t], hn::LoadU(df, out)) : acc[t], df, out);
    } else {
      alignas(64) float buf[kPartRows];
      hn::Store(acc[t], df, buf);
      for (std::size_t r = 0; r < n; ++r) out[r] = add ? out[r] + buf[r] : buf[r];
    }
  }
}

// Sub-blocks [0, n_subs) of src against T tokens from t0, part by part, into y (+=).
template <class Block, std::size_t T, std::size_t G, class Src>
HWY_INLINE void run_tokens(const Src& src, std::size_t n_subs, const QuantizedActs& a, std::size_t t0, std::size_t s0,
                           float* y, std::size_t y_stride, std::size_t rows, bool add) {
  const auto x = ActView<G>::at(a, t0);
  TINYLLM_UNROLL
  for (std::size_t p = 0; p < kParts; ++p) {
    VF32 acc[T];
    TINYLLM_UNROLL
    for (std::size_t t = 0; t < T; ++t) acc[t] = hn::Zero(DF32());
    accumulate<Block, T>(src, n_subs, x, s0, p, acc);
    store_part(acc, y + t0 * y_stride, y_stride, p, rows, add);
  }
}

// The same for t_count <= T tokens, T a compile-time bound.
template <class Block, std::size_t T, std::size_t G, class Src>
HWY_INLINE void run_any(std::size_t t_count, const Src& src, std::size_t n_subs, const QuantizedActs& a, std::size_t t0,
                        std::size_t s0, float* y, std::size_t y_stride, std::size_t rows, bool add) {
  if constexpr (T > 1)
    if (t_count < T) return run_any<Block, T - 1, G>(t_count, src, n_subs, a, t0, s0, y, y_stride, rows, add);
  run_tokens<Block, T, G>(src, n_subs, a, t0, s0, y, y_stride, rows, add);
}

// The group of packed units at w (`units` of them, nb blocks in a row) against every token of a,
// into y[t][0 .. rows).
template <class Block>
void decode_group(const std::uint8_t* w, std::size_t units, std::size_t nb, const QuantizedActs& a, float* y,
                  std::size_t y_stride, std::size_t rows) {
  using Q = QUnit<Block>;
  constexpr std::size_t kUnit = PackedUnit<Block>::bytes, kChunk = kPanelInputs / (Q::subs * Q::sub_values);
  const std::size_t n_subs = nb * BlockFormat<Block>::values / Q::sub_values;
  for (std::size_t u0 = 0; u0 < units; u0 += kChunk) {
    const std::uint8_t* first = w + u0 * kUnit;
    const std::size_t count = std::min(kChunk, units - u0);
    // The next chunk (this group's or the next group's) asked for into L2 while this one runs:
    // the kernel's arithmetic keeps fewer loads in flight than the hardware prefetcher needs.
    for (std::size_t b = 0; b < kChunk * kUnit; b += 64) __builtin_prefetch(first + count * kUnit + b, 0, 2);
    const std::size_t s0 = u0 * Q::subs, subs = std::min(count * Q::subs, n_subs - s0);
    const UnitSource<Block> src{first};
    if (a.group == 1) {  // one token
      run_tokens<Block, 1, 1>(src, subs, a, 0, s0, y, y_stride, rows, u0 > 0);
    } else {
      for (std::size_t t = 0; t < a.n_tok; t += kDecodeTokens)
        run_any<Block, kDecodeTokens, kActGroup>(std::min(kDecodeTokens, a.n_tok - t), src, subs, a, t, s0, y, y_stride,
                                                 rows, u0 > 0);
    }
  }
}

// The same through the panel (activations grouped by kActGroup tokens).
template <class Block>
void prefill_group(const std::uint8_t* w, std::size_t units, std::size_t nb, const QuantizedActs& a, float* y,
                   std::size_t y_stride, std::size_t rows, Panel& panel) {
  using Q = QUnit<Block>;
  constexpr std::size_t kUnit = PackedUnit<Block>::bytes, kChunk = kPanelInputs / (Q::subs * Q::sub_values);
  const std::size_t n_subs = nb * BlockFormat<Block>::values / Q::sub_values;
  for (std::size_t u0 = 0; u0 < units; u0 += kChunk) {
    const std::size_t count = std::min(kChunk, units - u0);
    const std::size_t s0 = u0 * Q::subs, subs = std::min(count * Q::subs, n_subs - s0);
    const UnitSource<Block> units_src{w + u0 * kUnit};
    for (std::size_t j = 0; j < subs; ++j)
      TINYLLM_UNROLL
      for (std::size_t p = 0; p < kParts; ++p) {
        units_src.steps(j, p, [&](std::size_t k, VU8 v) HWY_ATTR {
          hn::Store(v, DU8(), panel.w[j * Q::steps_per_sub + k] + p * kVecBytes);
        });
        hn::Store(units_src.scale(j, p), DF32(), panel.scale[j] + p * kPartRows);
        if constexpr (Q::int_scales) hn::Store(units_src.int_scale(j, p), DI32(), panel.int_scale[j] + p * kPartRows);
        if constexpr (Q::has_min) {
          hn::Store(units_src.min(j, p), DF32(), panel.min[j] + p * kPartRows);
          if (j % 2 == 1) hn::Store(units_src.int_min_pair(j / 2, p), DI32(), panel.int_min_pair[j / 2] + p * kPartRows);
        }
      }
    // With few tokens (batched decode) the weights stream from memory: the first tokens' pass
    // over the panel asks for the next chunk (this group's or the next group's) a little at each
    // sub-block, so its lines arrive while the tokens compute (asked for all at once, the
    // requests would wait for each other and the arithmetic for them). Many tokens (prefill)
    // compute long enough on a chunk for the hardware prefetcher.
    const PanelSource<Block> ahead{panel, w + (u0 + count) * kUnit, (kChunk * kUnit + subs - 1) / subs};
    for (std::size_t t = 0; t < a.n_tok; t += kActGroup)
      for (std::size_t tt = t; tt < std::min(a.n_tok, t + kActGroup); tt += kPanelTokens)
        run_any<Block, kPanelTokens, kActGroup>(std::min({kPanelTokens, a.n_tok - tt, t + kActGroup - tt}),
                                                tt == 0 && a.n_tok <= kPrefetchMaxTokens ? ahead : PanelSource<Block>{panel},
                                                subs, a, tt, s0, y, y_stride, rows, u0 > 0);
  }
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE::detail
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
