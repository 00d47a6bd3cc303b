// Causal grouped-query attention over a block-table KV view (Highway), K/V stored as F32, F16 or Q8_0.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_ATTENTION_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_ATTENTION_HPP_
#undef TINYLLM_KERNELS_CPU_ATTENTION_HPP_
#else
#define TINYLLM_KERNELS_CPU_ATTENTION_HPP_
#endif
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>
#include <tinyllm/kernels/cpu/activation.hpp>
#include <tinyllm/kernels/cpu/softmax.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/kv_view.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

namespace detail {

// s[h * s_stride + r] = q_h · k[r] for heads h < H (q_h at q + h * head_dim) and rows r < rows
// (k has 4 rows; past `rows` they repeat a valid one). Each loaded key vector serves H heads, and
// every score is reduced by the same tree (sum_of_four) whatever its slot, so a score does not
// depend on how its position was grouped.
template <class T, std::size_t H>
HWY_INLINE void scores_4(const T* const (&k)[4], std::size_t rows, const float* q, std::size_t head_dim, float* s,
                         std::size_t s_stride) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  VF acc[H][4];
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t r = 0; r < 4; ++r) acc[h][r] = hn::Zero(d);
  for (std::size_t i = 0; i < head_dim; i += N) {
    const std::size_t n = std::min(N, head_dim - i);
    VF kv[4];
    for (std::size_t r = 0; r < 4; ++r) kv[r] = load_upto(d, k[r] + i, n);
    for (std::size_t h = 0; h < H; ++h) {
      const VF qv = load_upto(d, q + h * head_dim + i, n);
      for (std::size_t r = 0; r < 4; ++r) acc[h][r] = hn::MulAdd(qv, kv[r], acc[h][r]);
    }
  }
  const hn::Full128<float> d4;
  for (std::size_t h = 0; h < H; ++h) {
    const auto sums = sum_of_four(d, acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    if (rows == 4) {
      hn::StoreU(sums, d4, s + h * s_stride);
    } else {
      alignas(16) float buf[4];
      hn::Store(sums, d4, buf);
      std::copy_n(buf, rows, s + h * s_stride);
    }
  }
}

template <class T, std::size_t H = 4>
HWY_INLINE void scores_any(std::size_t heads, const T* const (&k)[4], std::size_t rows, const float* q,
                           std::size_t head_dim, float* s, std::size_t s_stride) {
  if constexpr (H > 1)
    if (heads < H) return scores_any<T, H - 1>(heads, k, rows, q, head_dim, s, s_stride);
  scores_4<T, H>(k, rows, q, head_dim, s, s_stride);
}

// out_h[0, head_dim) = sum_p w_h[p] * value(first + p)[offset ..] for heads h < H (w_h at
// w + h * w_stride, out_h at out + h * head_dim), values stored as T (float or F16). V vectors of
// the output per head stay in registers while the positions stream past, so each value vector is
// loaded once for all H heads. A block's rows are consecutive: one table lookup per block.
// With `accumulate`, adds to out instead of overwriting it.
template <class T, std::size_t H, std::size_t V = (H > 4 ? 2 : 4)>
HWY_INLINE void values_group(const float* w, std::size_t w_stride, std::size_t first, std::size_t n_pos,
                             const KVLayerView& kv, std::size_t offset, std::size_t head_dim, bool accumulate,
                             float* out) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  for (std::size_t j = 0; j < head_dim; j += V * N) {
    std::size_t count[V];  // values of this pass in vector c: up to N
    for (std::size_t c = 0; c < V; ++c) count[c] = head_dim > j + c * N ? head_dim - j - c * N : 0;
    VF acc[H][V];
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t c = 0; c < V; ++c)
        acc[h][c] = accumulate ? load_upto(d, out + h * head_dim + j + c * N, count[c]) : hn::Zero(d);
    for (std::size_t p = 0; p < n_pos;) {
      const std::size_t block_end = std::min(n_pos, ((first + p) / kv.block_size + 1) * kv.block_size - first);
      for (const T* v = kv.value_as<T>(first + p) + offset + j; p < block_end; ++p, v += kv.kv_dim) {
        VF vv[V];
        for (std::size_t c = 0; c < V; ++c) vv[c] = load_upto(d, v + c * N, count[c]);
        for (std::size_t h = 0; h < H; ++h) {
          const VF s = hn::Set(d, w[h * w_stride + p]);
          for (std::size_t c = 0; c < V; ++c) acc[h][c] = hn::MulAdd(s, vv[c], acc[h][c]);
        }
      }
    }
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t c = 0; c < V; ++c) store_upto(acc[h][c], d, out + h * head_dim + j + c * N, count[c]);
  }
}

template <class T, std::size_t H = 8>
HWY_INLINE void values_any(std::size_t heads, const float* w, std::size_t w_stride, std::size_t first,
                           std::size_t n_pos, const KVLayerView& kv, std::size_t offset, std::size_t head_dim,
                           bool accumulate, float* out) {
  if constexpr (H > 1)
    if (heads < H) return values_any<T, H - 1>(heads, w, w_stride, first, n_pos, kv, offset, head_dim, accumulate, out);
  values_group<T, H>(w, w_stride, first, n_pos, kv, offset, head_dim, accumulate, out);
}

// The whole 32-bit words of [row, row + bytes) summed: plain loads, which the core keeps many of
// in flight, bring the row's lines into cache faster than the FMA-heavy passes would meet them.
using DU32 = hn::ScalableTag<std::uint32_t>;
HWY_INLINE hn::Vec<DU32> sum_words(const void* row, std::size_t bytes) {
  const DU32 du;
  const std::size_t N = hn::Lanes(du), n = bytes / 4;
  const auto* w = static_cast<const std::uint32_t*>(row);
  auto x = hn::Zero(du);
  std::size_t i = 0;
  for (; i + N <= n; i += N) x = hn::Add(x, hn::LoadU(du, w + i));
  if constexpr (kNativeMasking)
    if (i < n) x = hn::Add(x, hn::MaskedLoad(hn::FirstN(du, n - i), du, w + i));
  return x;
}

// Scores of the query heads of nt tokens (token i's head h at qs[i] + h * head_dim) against the
// keys of positions [first, first + n_pos) (unscaled): token i's head h in the row of s_stride
// floats at scores + (i * heads + h) * s_stride. Each group of 4 key rows is loaded once for all
// tokens (it stays in L1 while they pass).
template <class T>
HWY_INLINE void score_rows(const float* const* qs, std::size_t nt, std::size_t heads, std::size_t first,
                           std::size_t n_pos, const KVLayerView& kv, std::size_t offset, std::size_t head_dim,
                           float* scores, std::size_t s_stride) {
  for (std::size_t p = 0; p < n_pos; p += 4) {
    const std::size_t rows = std::min<std::size_t>(4, n_pos - p);
    const T* k[4];
    for (std::size_t r = 0; r < 4; ++r) k[r] = kv.key_as<T>(first + p + std::min(r, rows - 1)) + offset;
    for (std::size_t i = 0; i < nt; ++i)
      for (std::size_t h = 0; h < heads; h += 4)
        scores_any<T>(std::min<std::size_t>(4, heads - h), k, rows, qs[i] + h * head_dim, head_dim,
                      scores + (i * heads + h) * s_stride + p, s_stride);
  }
}

// Brings the head's slice of the key and value rows of positions [first, first + n) into cache
// with plain loads, many in flight: measured on 16 sequences of 192 positions, 22 layers, 2
// threads, this pass before the scores takes attention from 12.5 to 7.5-8.7 ms (F32) and 9.0 to
// 6.0-6.8 ms (F16). T: float, F16 or BlockQ8_0 (the blocks holding the slice).
template <class T>
HWY_INLINE void fetch_rows(const KVLayerView& kv, std::size_t first, std::size_t n, std::size_t offset,
                           std::size_t head_dim) {
  auto x = hn::Zero(DU32());
  for (std::size_t p = first; p < first + n; ++p) {
    if constexpr (std::is_same_v<T, BlockQ8_0>) {
      const std::size_t b0 = offset / kQK, bytes = ((offset + head_dim - 1) / kQK + 1 - b0) * sizeof(BlockQ8_0);
      x = hn::Add(x, hn::Add(sum_words(kv.key_q8(p) + b0, bytes), sum_words(kv.value_q8(p) + b0, bytes)));
    } else {
      x = hn::Add(x, hn::Add(sum_words(kv.key_as<T>(p) + offset, head_dim * sizeof(T)),
                             sum_words(kv.value_as<T>(p) + offset, head_dim * sizeof(T))));
    }
  }
  volatile std::uint32_t sink = hn::GetLane(x);  // the loads must happen
  (void)sink;
}

// Rows [first, first + n) of a Q8_0 key (or value) table, elements [offset, offset + head_dim) of
// each, widened to f32 in out: [n, head_dim]. The value is d * q, as KVLayerView::key_at reads it.
HWY_INLINE void widen_q8_rows(const KVLayerView& kv, bool keys, std::size_t first, std::size_t n, std::size_t offset,
                              std::size_t head_dim, float* out) {
  using D = hn::CappedTag<float, 16>;   // lanes divide the 32 values of a block
  const D d;
  const hn::Rebind<std::int32_t, D> di;
  const hn::Rebind<std::int8_t, D> d8;
  const std::size_t N = hn::Lanes(d);
  const bool whole_blocks = offset % kQK == 0 && head_dim % kQK == 0;
  for (std::size_t r = 0; r < n; ++r, out += head_dim) {
    const BlockQ8_0* row = keys ? kv.key_q8(first + r) : kv.value_q8(first + r);
    if (!whole_blocks) {   // a head smaller than a block, or one that starts inside a block
      for (std::size_t i = 0; i < head_dim; ++i) {
        const BlockQ8_0& b = row[(offset + i) / kQK];
        out[i] = f16_to_f32(b.d) * float(b.qs[(offset + i) % kQK]);
      }
      continue;
    }
    for (std::size_t b = 0; b < head_dim / kQK; ++b) {
      const BlockQ8_0& blk = row[offset / kQK + b];
      const auto scale = hn::Set(d, f16_to_f32(blk.d));
      for (std::size_t i = 0; i < std::size_t(kQK); i += N)
        hn::StoreU(hn::Mul(scale, hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, blk.qs + i)))), d,
                   out + b * kQK + i);
    }
  }
}

// Q8_0 rows are read through a buffer of f32 rows on the stack, up to 64 rows at a time (the
// widening is a light streaming pass, and a chunk stays in L1), then through the f32 code.
struct WideQ8 {
  static constexpr std::size_t kBuffer = 8192;   // floats: 32 KiB, at least 4 rows of heads up to 2048 values
  HWY_ALIGN float stack[kBuffer];
  std::vector<float> heap;   // heads over 2048 values: 4 rows at a time on the heap
  float* table[1];
  std::size_t chunk;
  KVLayerView view;          // the buffer as a one-block F32 view
  explicit WideQ8(std::size_t head_dim)
      : heap(head_dim * 4 > kBuffer ? head_dim * 4 : 0),
        table{heap.empty() ? stack : heap.data()},
        chunk(heap.empty() ? std::min<std::size_t>(64, kBuffer / head_dim / 4 * 4) : 4),
        view{.k_blocks = table, .v_blocks = table, .block_size = chunk, .kv_dim = head_dim} {}
};

// A token's part in one segment: its query heads (at q + h * head_dim), its positions [a, a + n)
// in the segment (n = 0: none), and where its softmax partial goes.
struct SegmentToken {
  const float* q;
  std::size_t a, n;
  float *o, *m, *l;
};

// One segment of one KV head for the tokens tok[0, nt) (a tile: tokens of one sequence at
// consecutive positions, or one token), each with query heads h < heads, against the cache
// positions [first, first + n) (n <= kAttentionSegment; each token's [a, a + n) lies inside), as
// each token's softmax partial: with s_hp its scaled (and soft-capped) scores, m_h = max_p s_hp,
// l_h = sum_p exp(s_hp - m_h) and o_h = sum_p exp(s_hp - m_h) v_p (o_h at o + h * head_dim).
// scores: [nt * heads, kAttentionSegment]. Every number of a token is computed as if it were alone
// (a score does not depend on its neighbours; its softmax and weighted sum run over its own
// positions), so tiling saves loads, not accuracy. T: the storage (float, F16 or BlockQ8_0).
// `cold`: the rows are likely in memory rather than in cache (no earlier token of this call read
// them), so they are fetched first.
template <class T>
HWY_INLINE void attend_segment(const SegmentToken* tok, std::size_t nt, std::size_t heads, std::size_t first,
                               std::size_t n, const KVLayerView& kv, std::size_t offset, std::size_t head_dim,
                               const AttentionParams& params, bool cold, float* scores) {
  constexpr std::size_t S = kAttentionSegment;
  if (cold) fetch_rows<T>(kv, first, n, offset, head_dim);
  const float* qs[kAttentionTile];
  for (std::size_t i = 0; i < nt; ++i) qs[i] = tok[i].q;
  // Token i's scores to unnormalised weights: scale, soft-cap, exp(s - max) with their sum.
  const auto weights = [&](std::size_t i) HWY_ATTR {
    for (std::size_t h = 0; h < heads; ++h) {
      float* s = scores + (i * heads + h) * S + (tok[i].a - first);
      const std::size_t m = tok[i].n;
      map1(s, m, [&](VF v) HWY_ATTR { return hn::Mul(v, hn::Set(DF(), params.scale)); });
      if (params.softcap > 0) softcap(s, m, params.softcap);
      tok[i].m[h] = max_of(s, m);
      tok[i].l[h] = exp_shifted(s, m, tok[i].m[h]);
    }
  };
  if constexpr (std::is_same_v<T, BlockQ8_0>) {
    WideQ8 wide(head_dim);
    for (std::size_t p = 0; p < n; p += wide.chunk) {
      const std::size_t c = std::min(wide.chunk, n - p);
      widen_q8_rows(kv, true, first + p, c, offset, head_dim, wide.table[0]);
      score_rows<float>(qs, nt, heads, 0, c, wide.view, 0, head_dim, scores + p, S);
    }
    for (std::size_t i = 0; i < nt; ++i)
      if (tok[i].n > 0) weights(i);
    for (std::size_t p = 0; p < n; p += wide.chunk) {
      const std::size_t c = std::min(wide.chunk, n - p);
      widen_q8_rows(kv, false, first + p, c, offset, head_dim, wide.table[0]);
      for (std::size_t i = 0; i < nt; ++i) {   // the rows of the chunk that are token i's
        const std::size_t lo = std::max(tok[i].a, first + p), hi = std::min(tok[i].a + tok[i].n, first + p + c);
        if (lo >= hi) continue;
        for (std::size_t h = 0; h < heads; h += 8)
          values_any<float>(std::min<std::size_t>(8, heads - h), scores + (i * heads + h) * S + (lo - first), S,
                            lo - first - p, hi - lo, wide.view, 0, head_dim, lo > tok[i].a, tok[i].o + h * head_dim);
      }
    }
  } else {
    score_rows<T>(qs, nt, heads, first, n, kv, offset, head_dim, scores, S);
    for (std::size_t i = 0; i < nt; ++i) {
      if (tok[i].n == 0) continue;
      weights(i);
      for (std::size_t h = 0; h < heads; h += 8)
        values_any<T>(std::min<std::size_t>(8, heads - h), scores + (i * heads + h) * S + (tok[i].a - first), S,
                      tok[i].a, tok[i].n, kv, offset, head_dim, false, tok[i].o + h * head_dim);
    }
  }
}

// Merges the partial (o2, m2, l2) of a later segment into (o, m, l): the partial of both.
HWY_INLINE void merge_partial(std::size_t heads, std::size_t head_dim, float* o, float* m, float* l, const float* o2,
                              const float* m2, const float* l2) {
  for (std::size_t h = 0; h < heads; ++h) {
    const float mx = std::max(m[h], m2[h]), a = std::exp(m[h] - mx), b = std::exp(m2[h] - mx);
    const VF va = hn::Set(DF(), a), vb = hn::Set(DF(), b);
    const float* src = o2 + h * head_dim;
    float* dst = o + h * head_dim;
    const std::size_t N = hn::Lanes(DF());
    std::size_t i = 0;
    for (; i + N <= head_dim; i += N)
      hn::StoreU(hn::MulAdd(hn::LoadU(DF(), src + i), vb, hn::Mul(hn::LoadU(DF(), dst + i), va)), DF(), dst + i);
    for (; i < head_dim; ++i) dst[i] = src[i] * b + dst[i] * a;
    l[h] = l[h] * a + l2[h] * b;
    m[h] = mx;
  }
}

// The attention output of a partial: o_h / l_h.
HWY_INLINE void finish_partial(std::size_t heads, std::size_t head_dim, float* o, const float* l) {
  for (std::size_t h = 0; h < heads; ++h) {
    const VF inv = hn::Set(DF(), 1.0f / l[h]);
    map1(o + h * head_dim, head_dim, [&](VF v) HWY_ATTR { return hn::Mul(v, inv); });
  }
}

}  // namespace detail

// Causal attention with grouped-query heads over tokens of one or more sequences.
// q, out: [n_tok, n_heads * head_dim]. Token t reads the KV view views[view_of_token[t]] (its
// sequence's; views[0] for every token where view_of_token is empty) and attends to positions
// attention_start(positions[t], window)..positions[t] there (already written); head h reads KV
// head h / (n_heads / n_kv_heads). scratch: [pool.size(), >= attention_scratch_cols(n_heads,
// n_kv_heads, head_dim)] (cpu.hpp).
// A token's positions split into segments at multiples of kAttentionSegment, each a softmax
// partial (detail::attend_segment), merged in position order. Work is handed out in one of two
// ways; the arithmetic is the same either way, so the output depends only on each token's
// positions and K/V, not on the threads or on the other tokens:
// - many tokens (prefill, speculative steps, many sequences): an item is a tile of up to
//   kAttentionTile tokens of one sequence at consecutive positions with one KV head (all its
//   query heads, which share every key and value loaded); a thread takes an item at a time and
//   merges each token's segments as it goes. The tile's tokens share each key row's loads.
// - fewer (token, KV head) pairs than twice the threads (a few long sequences decoding): every
//   segment of a pair is a unit of work of its own (flash-decoding); the partials go to a buffer
//   and are merged after, so one sequence uses every thread.
inline void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                      std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token,
                      std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
                      MatrixView<float> out, MatrixView<float> scratch) {
  constexpr std::size_t S = kAttentionSegment;
  assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && q.rows == positions.size() && out.rows == q.rows);
  assert(scratch.rows >= pool.size() && !views.empty() && (view_of_token.empty() || view_of_token.size() >= q.rows));
  const std::size_t group = n_heads / n_kv_heads, n_tok = positions.size();
  assert(scratch.cols >= kAttentionTile * group * (S + head_dim + 4));
  const auto view_of = [&](std::size_t t) -> const KVLayerView& {
    return views[view_of_token.empty() ? 0 : view_of_token[t]];
  };
  const auto first_of = [&](std::size_t t) { return attention_start(std::size_t(positions[t]), params.window); };
  const auto end_of = [&](std::size_t t) { return std::size_t(positions[t]) + 1; };
  const auto cold_at = [&](std::size_t t) { return t == 0 || &view_of(t - 1) != &view_of(t); };   // first of its sequence here
  // Token t's segments: first_seg(t) .. last_seg(t), absolute indices.
  const auto first_seg = [&](std::size_t t) { return first_of(t) / S; };
  const auto last_seg = [&](std::size_t t) { return (end_of(t) - 1) / S; };
  // Segment K (absolute: positions [K * S, (K + 1) * S)) of the tokens [t0, t0 + nt) and KV head g;
  // token i's partial goes to o[i], m[i], l[i].
  const auto segment = [&](std::size_t t0, std::size_t nt, std::size_t g, std::size_t K, float* const* o,
                           float* const* m, float* const* l, float* scores) HWY_ATTR {
    detail::SegmentToken tok[kAttentionTile];
    std::size_t lo = K * S + S, hi = K * S;   // the rows any of them reads
    for (std::size_t i = 0; i < nt; ++i) {
      const std::size_t a = std::max(first_of(t0 + i), K * S), b = std::min(end_of(t0 + i), K * S + S);
      tok[i] = {q.row(t0 + i) + g * group * head_dim, a, b > a ? b - a : 0, o[i], m[i], l[i]};
      if (b > a) lo = std::min(lo, a), hi = std::max(hi, b);
    }
    const KVLayerView& kv = view_of(t0);
    const std::size_t offset = g * head_dim;
    const bool cold = cold_at(t0);
    if (kv.type() == KVType::q8_0)
      detail::attend_segment<BlockQ8_0>(tok, nt, group, lo, hi - lo, kv, offset, head_dim, params, cold, scores);
    else if (kv.type() == KVType::f16)
      detail::attend_segment<F16>(tok, nt, group, lo, hi - lo, kv, offset, head_dim, params, cold, scores);
    else
      detail::attend_segment<float>(tok, nt, group, lo, hi - lo, kv, offset, head_dim, params, cold, scores);
  };
  const auto out_of = [&](std::size_t t, std::size_t g) { return out.row(t) + g * group * head_dim; };
  std::size_t n_units = 0;   // (token, segment) pairs of one KV head
  for (std::size_t t = 0; t < n_tok; ++t) n_units += last_seg(t) - first_seg(t) + 1;
  std::atomic<std::size_t> next{0};

  if (n_tok * n_kv_heads >= 2 * pool.size() || n_units == n_tok) {
    // Tiles: runs of consecutive positions of one sequence, kAttentionTile tokens at most, or
    // single tokens where tiles would leave threads idle.
    const std::size_t tile = n_tok * n_kv_heads >= 2 * kAttentionTile * pool.size() ? kAttentionTile : 1;
    thread_local std::vector<std::size_t> tiles;   // the first token of each, then n_tok
    tiles.clear();
    for (std::size_t t = 0; t < n_tok; ++t)
      if (t == 0 || t - tiles.back() == tile || cold_at(t) || positions[t] != positions[t - 1] + 1) tiles.push_back(t);
    tiles.push_back(n_tok);
    const std::size_t* const tile_begin = tiles.data();
    const std::size_t n_items = (tiles.size() - 1) * n_kv_heads;
    pool.run([&](unsigned tid, unsigned) HWY_ATTR {
      float* scores = scratch.row(tid);
      // Per tile slot i: a later segment's partial (o_seg, m_seg, l_seg) and the token's running
      // m, l (its o is its output row), after the scores in this thread's scratch row.
      float* tmp = scores + kAttentionTile * group * S;
      float *o_seg[kAttentionTile], *m_seg[kAttentionTile], *l_seg[kAttentionTile], *m_tok[kAttentionTile],
          *l_tok[kAttentionTile], *o_tok[kAttentionTile];
      for (std::size_t i = 0; i < kAttentionTile; ++i) {
        o_seg[i] = tmp + i * group * head_dim;
        m_seg[i] = tmp + kAttentionTile * group * head_dim + 4 * i * group;
        l_seg[i] = m_seg[i] + group;
        m_tok[i] = l_seg[i] + group;
        l_tok[i] = m_tok[i] + group;
      }
      for (std::size_t item = next.fetch_add(1, std::memory_order_relaxed); item < n_items;
           item = next.fetch_add(1, std::memory_order_relaxed)) {
        const std::size_t j = item / n_kv_heads, g = item % n_kv_heads, t0 = tile_begin[j], nt = tile_begin[j + 1] - t0;
        for (std::size_t i = 0; i < nt; ++i) o_tok[i] = out_of(t0 + i, g);
        // positions only grow along a tile, so its segments run from its first token's first
        // segment to its last token's last; each token's own segments come in position order
        for (std::size_t K = first_seg(t0); K <= last_seg(t0 + nt - 1); ++K) {
          float *o[kAttentionTile], *m[kAttentionTile], *l[kAttentionTile];
          for (std::size_t i = 0; i < nt; ++i) {
            const bool first_segment = K == first_seg(t0 + i);
            o[i] = first_segment ? o_tok[i] : o_seg[i];
            m[i] = first_segment ? m_tok[i] : m_seg[i];
            l[i] = first_segment ? l_tok[i] : l_seg[i];
          }
          segment(t0, nt, g, K, o, m, l, scores);
          for (std::size_t i = 0; i < nt; ++i)
            if (K > first_seg(t0 + i) && K <= last_seg(t0 + i))
              detail::merge_partial(group, head_dim, o_tok[i], m_tok[i], l_tok[i], o_seg[i], m_seg[i], l_seg[i]);
        }
        for (std::size_t i = 0; i < nt; ++i) detail::finish_partial(group, head_dim, o_tok[i], l_tok[i]);
      }
    });
    return;
  }
  // Few pairs: a unit per (token, KV head, segment); unit u of pair i at unit_begin[i] + k (its
  // k-th segment), its partial (o, m, l) at partials + u * stride.
  const std::size_t stride = group * (head_dim + 2), n_pairs = n_tok * n_kv_heads;
  thread_local std::vector<float> partials;
  thread_local std::vector<std::size_t> unit_begin;
  if (partials.size() < n_units * n_kv_heads * stride) partials.resize(n_units * n_kv_heads * stride);
  unit_begin.assign(n_pairs + 1, 0);
  for (std::size_t i = 0; i < n_pairs; ++i) {
    const std::size_t t = i / n_kv_heads;
    unit_begin[i + 1] = unit_begin[i] + last_seg(t) - first_seg(t) + 1;
  }
  float* const part = partials.data();
  const std::size_t* const begin = unit_begin.data();
  pool.run([&](unsigned tid, unsigned) HWY_ATTR {
    float* scores = scratch.row(tid);
    std::size_t i = 0;
    for (std::size_t u = next.fetch_add(1, std::memory_order_relaxed); u < begin[n_pairs];
         u = next.fetch_add(1, std::memory_order_relaxed)) {
      while (begin[i + 1] <= u) ++i;   // units are handed out in increasing order
      const std::size_t t = i / n_kv_heads;
      float* o = part + u * stride;
      float* m = o + group * head_dim;
      float* l = m + group;
      segment(t, 1, i % n_kv_heads, first_seg(t) + (u - begin[i]), &o, &m, &l, scores);
    }
  });
  float* m = scratch.row(0);
  float* l = m + group;
  for (std::size_t i = 0; i < n_pairs; ++i) {
    float* og = out_of(i / n_kv_heads, i % n_kv_heads);
    const float* o = part + begin[i] * stride;
    std::copy_n(o, group * head_dim, og);
    std::copy_n(o + group * head_dim, group, m);
    std::copy_n(o + group * head_dim + group, group, l);
    for (std::size_t u = begin[i] + 1; u < begin[i + 1]; ++u) {
      const float* o2 = part + u * stride;
      detail::merge_partial(group, head_dim, og, m, l, o2, o2 + group * head_dim, o2 + group * head_dim + group);
    }
    detail::finish_partial(group, head_dim, og, l);
  }
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
