#pragma once
// The CPU (Highway) kernels as a backend. A backend is the seam between the model and its
// kernels: Transformer<Arch, Backend> (model/transformer.hpp) names no kernel namespace but calls
// a backend's static members, so one forward pass runs on any backend. Every backend has:
//
//   Workspace        per-model state the backend owns, built once as Workspace(max_tokens, max_in)
//                    (here: the activations quantized to 8 bits for the quantized matmuls)
//   matmul           y[n_tok, n_out] = x[n_tok, n_in] · wᵀ, w of a run-time DType as the file stores it
//   rmsnorm, rope, swiglu, geglu, softcap     one row or vector, as in kernels/reference.hpp
//   attention        every token over its own sequence's KV, views[view_of_token[t]], with scratch
//                    [threads, attention_scratch_cols(n_heads, n_kv_heads, n_ctx)]
//   packs_weights    whether it keeps some matrices in a layout of its own; if so, also can_pack,
//                    packed_bytes, kPackRows, pack_rows (at load) and matmul_packed
//
// ReferenceBackend (kernels/reference_backend.hpp) is the scalar specification; it packs nothing.
// A CUDA backend would own its device buffers the same way, in its Workspace. Each member here
// forwards to a cpu:: entry point in one line.
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm {

struct CpuBackend {
  using Workspace = cpu::QuantScratch;

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

  static constexpr std::size_t attention_scratch_cols(std::size_t n_heads, std::size_t n_kv_heads, std::size_t n_ctx) {
    return cpu::attention_scratch_cols(n_heads, n_kv_heads, n_ctx);
  }
  // Token t reads the KV view views[view_of_token[t]] (its sequence's, for this layer).
  static void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                        std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token,
                        std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                        const AttentionParams& params, MatrixView<float> out, MatrixView<float> scratch) {
    cpu::attention(pool, q, positions, views, view_of_token, n_heads, n_kv_heads, head_dim, params, out, scratch);
  }
};

}  // namespace tinyllm
