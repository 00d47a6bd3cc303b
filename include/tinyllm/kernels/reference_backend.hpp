#pragma once
// The scalar specification (reference.hpp, quant_reference.hpp) as a backend, with the members that
// cpu/backend.hpp lists (the step-level ones from HostBackend): a whole model runs on it as an end-to-end specification in tests
// (load<ReferenceBackend>(path)). Serial and slow on purpose. Weights are read as the file stores
// them, never packed, and activations are never rounded to 8 bits: its logits are those of the
// formulas, which the CPU backend approximates.
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/host_backend.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/quant_reference.hpp>
#include <tinyllm/kernels/reference.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm {

struct ReferenceBackend : HostBackend<ReferenceBackend> {
  struct Workspace : HostStep {   // the reference needs no scratch of its own
    Workspace(std::size_t /*max_tokens*/, std::size_t /*max_in*/) {}
  };
  static const void* resident(Workspace&, const void* host, std::size_t /*bytes*/) { return host; }
  using HostBackend::swiglu;   // the step-level forms, beside the per-vector kernels below
  using HostBackend::geglu;

  static void matmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                     MatrixView<const float> x, MatrixView<float> y, Workspace& /*ws*/) {
    ref::qmatmul(pool, type, w, n_out, n_in, x, y);
  }
  static constexpr bool packs_weights = false;

  static void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
    ref::rmsnorm(x, w, out, n, eps);
  }
  static void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                   RopeStyle style) {
    ref::rope(x, n_heads, head_dim, pos, inv_freq, style);
  }
  static void swiglu(float* gate, const float* up, std::size_t n) { ref::swiglu(gate, up, n); }
  static void geglu(float* gate, const float* up, std::size_t n) { ref::geglu(gate, up, n); }
  static void softcap(float* x, std::size_t n, float cap) { ref::softcap(x, n, cap); }

  // One row of scores over the cache (only the first thread's row is used).
  static constexpr std::size_t attention_scratch_cols(std::size_t /*n_heads*/, std::size_t /*n_kv_heads*/,
                                                      std::size_t /*head_dim*/, std::size_t n_ctx) {
    return n_ctx;
  }
  // Token t reads the KV view ws.views[ws.view_of_token[t]]; one token at a time, as each may be
  // of another sequence.
  static void attention(ThreadPool& pool, Workspace& ws, MatrixView<const float> q, std::size_t n_heads,
                        std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
                        MatrixView<float> out, MatrixView<float> scratch) {
    for (std::size_t t = 0; t < q.rows; ++t)
      ref::attention(pool, q.rows_slice(t, 1), ws.positions.subspan(t, 1), ws.views[ws.view_of_token[t]], n_heads,
                     n_kv_heads, head_dim, params, out.rows_slice(t, 1), scratch);
  }
};

}  // namespace tinyllm
