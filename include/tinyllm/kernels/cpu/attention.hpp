#pragma once
// Causal grouped-query attention over a block-table KV view (Highway), K/V stored as F32 or F16.
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>
#include <tinyllm/kernels/cpu/activation.hpp>
#include <tinyllm/kernels/cpu/softmax.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/kv_view.hpp>

namespace tinyllm::cpu {
namespace detail {

// out[0, head_dim) = sum_p weights[p] * value(first + p)[offset ..], values stored as T (float or
// F16). Up to four vectors of the output stay in registers while the positions stream past.
template <class T>
HWY_INLINE void weighted_values(const float* weights, std::size_t first, std::size_t n_pos, const KVLayerView& kv,
                                std::size_t offset, std::size_t head_dim, float* out) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  for (std::size_t j = 0; j < head_dim; j += 4 * N) {
    const std::size_t left = head_dim - j;  // values of this pass for the four vectors: up to N each
    const std::size_t c0 = left, c1 = left > N ? left - N : 0, c2 = left > 2 * N ? left - 2 * N : 0,
                      c3 = left > 3 * N ? left - 3 * N : 0;
    VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (std::size_t p = 0; p < n_pos; ++p) {
      const T* v = kv.value_as<T>(first + p) + offset + j;
      const VF s = hn::Set(d, weights[p]);
      a0 = hn::MulAdd(s, load_upto(d, v, c0), a0);
      a1 = hn::MulAdd(s, load_upto(d, v + N, c1), a1);
      a2 = hn::MulAdd(s, load_upto(d, v + 2 * N, c2), a2);
      a3 = hn::MulAdd(s, load_upto(d, v + 3 * N, c3), a3);
    }
    store_upto(a0, d, out + j, c0);
    store_upto(a1, d, out + j + N, c1);
    store_upto(a2, d, out + j + 2 * N, c2);
    store_upto(a3, d, out + j + 3 * N, c3);
  }
}

// One query head against cache positions [first, first + n_pos) of its KV head; scores: n_pos floats.
template <class T>
HWY_INLINE void attend_head(const float* q, std::size_t first, std::size_t n_pos, const KVLayerView& kv,
                            std::size_t offset, std::size_t head_dim, const AttentionParams& params, float* scores,
                            float* out) {
  for (std::size_t p = 0; p < n_pos; ++p) scores[p] = dot(q, kv.key_as<T>(first + p) + offset, head_dim) * params.scale;
  if (params.softcap > 0) softcap(scores, n_pos, params.softcap);
  softmax(scores, n_pos);
  weighted_values<T>(scores, first, n_pos, kv, offset, head_dim, out);
}

}  // namespace detail

// Causal attention with grouped-query heads over tokens of one or more sequences.
// q, out: [n_tok, n_heads * head_dim]. Token t reads the KV view view_of(t) (its sequence's) and
// attends to positions attention_start(positions[t], window)..positions[t] there (already
// written); head h reads KV head h / (n_heads / n_kv_heads). scratch: [pool.size(), >= max
// position + 1], one row of scores per thread. (token, head) pairs are handed out one at a time,
// since their costs differ with the position.
template <class ViewOf>
void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions, ViewOf&& view_of,
               std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
               MatrixView<float> out, MatrixView<float> scratch) {
  assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && q.rows == positions.size() && out.rows == q.rows);
  assert(scratch.rows >= pool.size());
  const std::size_t group = n_heads / n_kv_heads;
  const std::size_t n_items = positions.size() * n_heads;
  std::atomic<std::size_t> next{0};
  pool.run([&](unsigned tid, unsigned) {
    float* scores = scratch.row(tid);
    for (std::size_t item = next.fetch_add(1, std::memory_order_relaxed); item < n_items;
         item = next.fetch_add(1, std::memory_order_relaxed)) {
      const std::size_t t = item / n_heads, h = item % n_heads;
      const auto pos = static_cast<std::size_t>(positions[t]);
      const std::size_t first = attention_start(pos, params.window);
      assert(pos < scratch.cols);
      const KVLayerView& kv = view_of(t);
      const float* qh = q.row(t) + h * head_dim;
      float* oh = out.row(t) + h * head_dim;
      if (kv.type() == KVType::f16)
        detail::attend_head<F16>(qh, first, pos + 1 - first, kv, (h / group) * head_dim, head_dim, params, scores, oh);
      else
        detail::attend_head<float>(qh, first, pos + 1 - first, kv, (h / group) * head_dim, head_dim, params, scores, oh);
    }
  });
}

// All tokens of one sequence.
inline void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                      const KVLayerView& kv, std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                      const AttentionParams& params, MatrixView<float> out, MatrixView<float> scratch) {
  attention(pool, q, positions, [&](std::size_t) -> const KVLayerView& { return kv; }, n_heads, n_kv_heads, head_dim,
            params, out, scratch);
}

}  // namespace tinyllm::cpu
