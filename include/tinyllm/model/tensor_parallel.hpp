#pragma once
// Tensor parallelism, Megatron style: each rank of a communicator (comm/) holds a share of every
// block and the ranks meet twice per block.
//   - Attention: query heads are shared out, each rank with the K/V heads its query heads read
//     (and their KV cache). Q, K and V are split by output rows, the attention output matrix by
//     input columns; each rank's product is a partial sum of the block's output, added up over
//     the ranks (all-reduce).
//   - FFN: gate and up split by output rows, down by input columns, then the same all-reduce.
//   - Output layer: split by vocabulary rows; the logits are gathered on every rank.
// Everything else (embedding lookup, norms, residual stream) is computed by every rank whole.
// A rank's slices are views of the file where they are whole rows (no copy; the mapped file's
// other pages are never read), copies where they are columns.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/model/config.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/model/weights.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm {

// What one rank holds of a model.
struct RankShare {
  std::size_t q_head0 = 0, n_q_heads = 0;    // query heads
  std::size_t kv_head0 = 0, n_kv_heads = 0;  // the K/V heads they read (with more ranks than K/V heads, one, held by several ranks)
  std::size_t ff0 = 0, n_ff = 0;             // FFN hidden units (may be 0: the rank adds nothing to the FFN)
  std::size_t vocab0 = 0, n_vocab = 0;       // output rows
};

// Rank `rank` of `ranks`. Query heads are shared out so that each rank's heads read a contiguous
// run of K/V heads with the same group size as the model's (whole groups when ranks <= K/V heads,
// else part of one group): grouped-query attention then runs unchanged on each rank's share. FFN
// units go in multiples of ff_unit (the block size of the down matrix, whose columns they are).
inline RankShare rank_share(const ModelConfig& c, std::size_t rank, std::size_t ranks, std::size_t ff_unit = 1) {
  if (ranks == 0 || rank >= ranks) throw Error("rank " + std::to_string(rank) + " of " + std::to_string(ranks), "rank_share");
  if (ranks > c.n_heads)
    throw Error(std::to_string(ranks) + " ranks for a model of " + std::to_string(c.n_heads) + " attention heads",
                "tensor parallelism", "at most one rank per attention head");
  if (ff_unit == 0 || c.n_ff % ff_unit != 0)
    throw Error("FFN width " + std::to_string(c.n_ff) + " is not whole blocks of " + std::to_string(ff_unit), "tensor parallelism");
  RankShare s;
  const std::size_t group = c.n_heads / c.n_kv_heads;
  if (ranks <= c.n_kv_heads) {
    std::tie(s.kv_head0, s.n_kv_heads) = even_part(c.n_kv_heads, ranks, rank);
    s.q_head0 = s.kv_head0 * group;
    s.n_q_heads = s.n_kv_heads * group;
  } else {
    // Ranks r with r * n_kv / ranks == k share K/V head k and split its group of query heads.
    s.kv_head0 = rank * c.n_kv_heads / ranks;
    s.n_kv_heads = 1;
    std::size_t first = rank, last = rank;
    while (first > 0 && (first - 1) * c.n_kv_heads / ranks == s.kv_head0) --first;
    while (last + 1 < ranks && (last + 1) * c.n_kv_heads / ranks == s.kv_head0) ++last;
    const auto [q0, nq] = even_part(group, last - first + 1, rank - first);
    s.q_head0 = s.kv_head0 * group + q0;
    s.n_q_heads = nq;
  }
  const auto [u0, nu] = even_part(c.n_ff / ff_unit, ranks, rank);
  s.ff0 = u0 * ff_unit;
  s.n_ff = nu * ff_unit;
  std::tie(s.vocab0, s.n_vocab) = even_part(c.vocab_size, ranks, rank);
  return s;
}

namespace detail {

// Rows [first, first + count) of m: a view of the same memory.
inline WeightMatrix row_slice(const WeightMatrix& m, std::size_t first, std::size_t count) {
  WeightMatrix s = m;
  s.rows = count;
  s.data = count ? static_cast<const std::byte*>(m.data) + first * row_bytes(m.type, m.cols) : nullptr;
  s.packed.reset();
  return s;
}

// Columns [first, first + count) of m, copied: in m's type when they are whole blocks of it,
// otherwise as F32 (the exact values of the stored weights).
inline WeightMatrix column_slice(const WeightMatrix& m, std::size_t first, std::size_t count) {
  WeightMatrix s = m;
  s.cols = count;
  s.packed.reset();
  const std::size_t bs = info(m.type).block_size, in_row = row_bytes(m.type, m.cols);
  const bool whole_blocks = first % bs == 0 && count % bs == 0;
  if (!whole_blocks) s.type = DType::F32;
  const std::size_t out_row = row_bytes(s.type, count);
  auto out = std::make_shared<AlignedBuffer<std::byte>>(std::max<std::size_t>(1, m.rows * out_row));
  std::vector<float> row(whole_blocks ? 0 : m.cols);
  for (std::size_t r = 0; r < m.rows; ++r) {
    const std::byte* src = static_cast<const std::byte*>(m.data) + r * in_row;
    if (whole_blocks) {
      std::memcpy(out->data() + r * out_row, src + row_bytes(m.type, first), out_row);
    } else {
      dequantize_row(m.type, src, row.data(), m.cols);
      std::memcpy(out->data() + r * out_row, row.data() + first, count * sizeof(float));
    }
  }
  s.data = out->data();
  s.owned = std::move(out);
  return s;
}

inline AlignedBuffer<float> vector_slice(const AlignedBuffer<float>& v, std::size_t first, std::size_t count) {
  AlignedBuffer<float> out(count);
  if (count) std::memcpy(out.data(), v.data() + first, count * sizeof(float));
  return out;
}

// A gated FFN's units [ff0, ff0 + n_ff): rows of gate and up, columns of down (none: an empty down).
inline void ffn_slice(WeightMatrix& gate, WeightMatrix& up, WeightMatrix& down, std::size_t ff0, std::size_t n_ff) {
  gate = row_slice(gate, ff0, n_ff);
  up = row_slice(up, ff0, n_ff);
  down = n_ff ? column_slice(down, ff0, n_ff) : row_slice(down, 0, 0);
}

}  // namespace detail

// Keeps this rank's share of w (bound over the whole model, nothing read yet) and returns the
// configuration of that share: the rank's own query heads, K/V heads and FFN width; the vocabulary
// stays whole (logits are gathered). With one rank, c and w stay as they are.
inline ModelConfig split_for_rank(ModelConfig c, TransformerWeights& w, const Communicator& comm) {
  if (comm.size() == 1) return c;
  std::size_t ff_unit = 1, expert_unit = 1;
  for (const LayerWeights& l : w.layers) {
    if (l.w_down.data) ff_unit = std::max<std::size_t>(ff_unit, info(l.w_down.type).block_size);
    for (const ExpertWeights& e : l.experts) expert_unit = std::max<std::size_t>(expert_unit, info(e.w_down.type).block_size);
  }
  const RankShare s = rank_share(c, comm.rank(), comm.size(), ff_unit);
  // Each expert's FFN is split as a dense one is (the router stays whole on every rank).
  ModelConfig ce = c;
  ce.n_ff = c.n_ff_expert;
  const RankShare se = c.n_experts ? rank_share(ce, comm.rank(), comm.size(), expert_unit) : s;
  const std::size_t hd = c.head_dim;
  for (LayerWeights& l : w.layers) {
    l.wq = detail::row_slice(l.wq, s.q_head0 * hd, s.n_q_heads * hd);
    l.wk = detail::row_slice(l.wk, s.kv_head0 * hd, s.n_kv_heads * hd);
    l.wv = detail::row_slice(l.wv, s.kv_head0 * hd, s.n_kv_heads * hd);
    l.wo = detail::column_slice(l.wo, s.q_head0 * hd, s.n_q_heads * hd);
    if (!l.bq.empty()) {
      l.bq = detail::vector_slice(l.bq, s.q_head0 * hd, s.n_q_heads * hd);
      l.bk = detail::vector_slice(l.bk, s.kv_head0 * hd, s.n_kv_heads * hd);
      l.bv = detail::vector_slice(l.bv, s.kv_head0 * hd, s.n_kv_heads * hd);
    }
    if (l.experts.empty()) detail::ffn_slice(l.w_gate, l.w_up, l.w_down, s.ff0, s.n_ff);
    for (ExpertWeights& e : l.experts) detail::ffn_slice(e.w_gate, e.w_up, e.w_down, se.ff0, se.n_ff);
  }
  w.output = detail::row_slice(w.output, s.vocab0, s.n_vocab);
  c.n_heads = s.n_q_heads;
  c.n_kv_heads = s.n_kv_heads;
  c.n_ff = s.n_ff;
  if (c.n_experts) c.n_ff_expert = se.n_ff;
  return c;
}

}  // namespace tinyllm
