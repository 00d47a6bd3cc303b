#pragma once
// The step-level members of a backend whose kernels run on host memory (CpuBackend, ReferenceBackend),
// written once over the per-row kernels that each of them supplies (rmsnorm, rope, swiglu, geglu,
// softcap, attention over one span of views). cpu/backend.hpp lists every member of a backend.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/memory.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm {

// What a step's kernels read besides their operands: the tokens, their positions and the KV views
// of their sequences (begin_step, set_kv_views). A host backend's Workspace derives from it.
struct HostStep {
  std::span<const std::int32_t> tokens, positions;
  std::span<const std::uint32_t> view_of_token;   // token t reads views[view_of_token[t]]
  std::span<const KVLayerView> views;
};

template <class Kernels>
struct HostBackend {
  static const MemoryResource* memory() { return nullptr; }   // host memory: weights are used where they are

  static void begin_step(HostStep& ws, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                         std::span<const std::uint32_t> view_of_token) {
    ws.tokens = tokens, ws.positions = positions, ws.view_of_token = view_of_token;
  }
  static void set_kv_views(HostStep& ws, std::span<const KVLayerView> views) { ws.views = views; }

  // x[t, :] = scale * row tokens[t] of the table [vocab, n_embd].
  static void embed(HostStep& ws, DType type, const void* table, MatrixView<float> x, float scale) {
    const std::size_t rb = row_bytes(type, x.cols);
    for (std::size_t t = 0; t < x.rows; ++t) {
      float* row = x.row(t);
      dequantize_row(type, static_cast<const std::byte*>(table) + std::size_t(ws.tokens[t]) * rb, row, x.cols);
      if (scale != 1.0f) std::for_each(row, row + x.cols, [&](float& v) { v *= scale; });
    }
  }
  static void rmsnorm_rows(HostStep&, MatrixView<const float> x, const float* w, MatrixView<float> out, float eps) {
    for (std::size_t t = 0; t < x.rows; ++t) Kernels::rmsnorm(x.row(t), w, out.row(t), x.cols, eps);
  }
  static void gather_rows(HostStep&, MatrixView<const float> src, std::span<const std::size_t> rows,
                          MatrixView<float> dst) {
    for (std::size_t i = 0; i < rows.size(); ++i) std::copy_n(src.row(rows[i]), src.cols, dst.row(i));
  }
  // x += factor * y, row by row.
  static void add_rows(HostStep&, MatrixView<float> x, MatrixView<const float> y, float factor = 1.0f) {
    for (std::size_t t = 0; t < x.rows; ++t) {
      float* xr = x.row(t);
      const float* yr = y.row(t);
      if (factor == 1.0f) for (std::size_t i = 0; i < x.cols; ++i) xr[i] += yr[i];
      else for (std::size_t i = 0; i < x.cols; ++i) xr[i] += factor * yr[i];
    }
  }
  static void add_bias(HostStep&, MatrixView<float> x, const float* bias) {
    for (std::size_t t = 0; t < x.rows; ++t)
      for (std::size_t i = 0; i < x.cols; ++i) x.row(t)[i] += bias[i];
  }
  // Row t holds n_heads heads of token t, turned by its position.
  static void rope_rows(HostStep& ws, MatrixView<float> x, std::size_t n_heads, std::size_t head_dim,
                        const float* inv_freq, RopeStyle style) {
    for (std::size_t t = 0; t < x.rows; ++t)
      Kernels::rope(x.row(t), n_heads, head_dim, std::size_t(ws.positions[t]), inv_freq, style);
  }
  static void store_kv(HostStep& ws, MatrixView<const float> k, MatrixView<const float> v) {
    for (std::size_t t = 0; t < k.rows; ++t)
      ws.views[ws.view_of_token[t]].store(std::size_t(ws.positions[t]), k.row(t), v.row(t));
  }
  static void swiglu(HostStep&, float* gate, const float* up, std::size_t n) { Kernels::swiglu(gate, up, n); }
  static void geglu(HostStep&, float* gate, const float* up, std::size_t n) { Kernels::geglu(gate, up, n); }
  static void softcap_rows(HostStep&, MatrixView<float> x, float cap) {
    for (std::size_t t = 0; t < x.rows; ++t) Kernels::softcap(x.row(t), x.cols, cap);
  }
  // Host memory is where the caller reads: nothing to move unless the views differ.
  static void to_host(HostStep&, MatrixView<const float> src, MatrixView<float> dst) {
    if (src.data == dst.data) return;
    for (std::size_t t = 0; t < src.rows; ++t) std::copy_n(src.row(t), src.cols, dst.row(t));
  }
};

}  // namespace tinyllm
