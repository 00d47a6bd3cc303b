#pragma once
// The CPU (Highway) kernels as a backend. A backend is the seam between the model and its
// kernels: Transformer<Arch, Backend> (model/transformer.hpp) names no kernel namespace but calls
// a backend's static members, so one forward pass runs on any backend. Every backend has:
//
//   memory()         where activations and KV caches live: nullptr for host memory, else the
//                    MemoryResource of the backend's device (core/memory.hpp)
//   Workspace        per-model state the backend owns, built once as Workspace(max_tokens, max_in)
//                    (here: the activations quantized to 8 bits, and the step's inputs)
//   resident         a weight's bytes where the kernels read them (here: where they are)
//   begin_step       the step's tokens, positions and each token's sequence; set_kv_views: one
//                    layer's KV views of those sequences. The members below read them from ws.
//   matmul           y[n_tok, n_out] = x[n_tok, n_in] · wᵀ, w of a run-time DType as the file stores it
//   embed, rmsnorm_rows, gather_rows, add_rows, add_bias, rope_rows, store_kv, swiglu, geglu,
//   softcap_rows, to_host      the steps of a forward pass over a batch of rows (host_backend.hpp)
//   attention        every token over its own sequence's KV view, with scratch
//                    [threads, attention_scratch_cols(n_heads, n_kv_heads, head_dim, n_ctx)]
//   packs_weights    whether it keeps some matrices in a layout of its own; if so, also can_pack,
//                    packed_bytes, kPackRows, pack_rows (at load) and matmul_packed
//
// ReferenceBackend (kernels/reference_backend.hpp) is the scalar specification; it packs nothing.
// CudaBackend (kernels/cuda/backend.hpp) keeps weights, activations and KV blocks in device memory.
// The per-row kernels here forward to cpu:: entry points in one line each; HostBackend turns
// them into the step-level members.
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/host_backend.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm {

struct CpuBackend : HostBackend<CpuBackend> {
  struct Workspace : cpu::QuantScratch, HostStep {
    using QuantScratch::QuantScratch;
  };
  static const void* resident(Workspace&, const void* host, std::size_t /*bytes*/) { return host; }
  using HostBackend::swiglu;   // the step-level forms, beside the per-vector kernels below
  using HostBackend::geglu;

  static void matmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                     MatrixView<const float> x, MatrixView<float> y, Workspace& ws) {
    cpu::qmatmul(pool, type, w, n_out, n_in, x, y, ws);
  }

  // Quantized matrices regrouped kPackRows rows at a time (cpu/qpack.hpp), where this build has
  // a kernel for that layout.
  static constexpr bool packs_weights = true;
  static constexpr std::size_t kPackRows = cpu::kPackRows;
  static bool can_pack(DType type) { return cpu::can_pack(type); }
  static std::size_t packed_bytes(DType type, std::size_t n_out, std::size_t n_in) {
    return cpu::packed_bytes(type, n_out, n_in);
  }
  static void pack_rows(DType type, const void* w, std::size_t n_out, std::size_t n_in, std::byte* out, std::size_t g0,
                        std::size_t g1) {
    cpu::pack_rows(type, w, n_out, n_in, out, g0, g1);
  }
  static void matmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                            MatrixView<const float> x, MatrixView<float> y, Workspace& ws) {
    cpu::qmatmul_packed(pool, type, w, n_out, n_in, x, y, ws);
  }

  static void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
    cpu::rmsnorm(x, w, out, n, eps);
  }
  static void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                   RopeStyle style) {
    cpu::rope(x, n_heads, head_dim, pos, inv_freq, style);
  }
  static void swiglu(float* gate, const float* up, std::size_t n) { cpu::swiglu(gate, up, n); }
  static void geglu(float* gate, const float* up, std::size_t n) { cpu::geglu(gate, up, n); }
  static void softcap(float* x, std::size_t n, float cap) { cpu::softcap(x, n, cap); }

  static constexpr std::size_t attention_scratch_cols(std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                                                      std::size_t /*n_ctx*/) {
    return cpu::attention_scratch_cols(n_heads, n_kv_heads, head_dim);
  }
  // Token t reads the KV view ws.views[ws.view_of_token[t]] (its sequence's, for this layer).
  static void attention(ThreadPool& pool, Workspace& ws, MatrixView<const float> q, std::size_t n_heads,
                        std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
                        MatrixView<float> out, MatrixView<float> scratch) {
    cpu::attention(pool, q, ws.positions.first(q.rows), ws.views, ws.view_of_token.first(q.rows), n_heads, n_kv_heads,
                   head_dim, params, out, scratch);
  }
};

}  // namespace tinyllm
