#pragma once
// The CUDA kernels as a backend, with the members that cpu/backend.hpp lists: a model loaded as
// load<CudaBackend>(path) keeps its weights, activations and KV blocks in device memory (the
// engine's block pool allocates through memory()), and only the logits come back to the host.
// Plain C++: the kernels themselves are compiled by nvcc (kernels.cuh) and linked as tinyllm::cuda.
// Building the workspace without a usable device throws the CUDA error.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/memory.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cuda/cuda.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm {

struct CudaBackend {
  static const MemoryResource* memory() {
    static const MemoryResource device{
        "cuda",
        [](std::size_t bytes) {
          void* p = cuda::alloc(bytes);
          cuda::zero(p, bytes);
          return p;
        },
        cuda::release, cuda::copy_on_device, cuda::copy_to_device};
    return &device;
  }

  // The kernels' context (stream, scratch, cuBLAS) and the device copies of the weights.
  class Workspace {
   public:
    Workspace(std::size_t max_tokens, std::size_t max_in) : ctx_(cuda::create_context(max_tokens, max_in)) {}
    cuda::Context& ctx() { return *ctx_; }

    // One device copy per host array: a tied output matrix and its embedding share one.
    const void* resident(const void* host, std::size_t bytes) {
      auto& copy = copies_[host];
      if (!copy) {
        copy.reset(cuda::alloc(bytes));
        cuda::copy_to_device(copy.get(), host, bytes);
      }
      return copy.get();
    }

   private:
    struct DestroyContext {
      void operator()(cuda::Context* c) const noexcept { cuda::destroy_context(c); }
    };
    struct Release {
      void operator()(void* p) const noexcept { cuda::release(p); }
    };
    std::unique_ptr<cuda::Context, DestroyContext> ctx_;
    std::unordered_map<const void*, std::unique_ptr<void, Release>> copies_;
  };

  static const void* resident(Workspace& ws, const void* host, std::size_t bytes) { return ws.resident(host, bytes); }
  static constexpr bool packs_weights = false;

  static void matmul(ThreadPool&, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                     MatrixView<const float> x, MatrixView<float> y, Workspace& ws) {
    cuda::matmul(ws.ctx(), type, w, n_out, n_in, x.data, x.stride, x.rows, y.data, y.stride);
  }

  static void begin_step(Workspace& ws, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                         std::span<const std::uint32_t> view_of_token) {
    cuda::begin_step(ws.ctx(), tokens, positions, view_of_token);
  }
  static void set_kv_views(Workspace& ws, std::span<const KVLayerView> views) { cuda::set_kv_views(ws.ctx(), views); }
  static void embed(Workspace& ws, DType type, const void* table, MatrixView<float> x, float scale) {
    cuda::embed(ws.ctx(), type, table, x.cols, scale, x.data);
  }
  static void rmsnorm_rows(Workspace& ws, MatrixView<const float> x, const float* w, MatrixView<float> out, float eps) {
    cuda::rmsnorm_rows(ws.ctx(), x.data, x.stride, w, out.data, out.stride, x.rows, x.cols, eps);
  }
  static void gather_rows(Workspace& ws, MatrixView<const float> src, std::span<const std::size_t> rows,
                          MatrixView<float> dst) {
    cuda::gather_rows(ws.ctx(), src.data, src.stride, rows, dst.data, dst.stride, src.cols);
  }
  static void add_rows(Workspace& ws, MatrixView<float> x, MatrixView<const float> y, float factor = 1.0f) {
    cuda::add_rows(ws.ctx(), x.data, x.stride, y.data, y.stride, x.rows, x.cols, factor);
  }
  static void add_bias(Workspace& ws, MatrixView<float> x, const float* bias) {
    cuda::add_bias(ws.ctx(), x.data, x.stride, x.rows, x.cols, bias);
  }
  static void rope_rows(Workspace& ws, MatrixView<float> x, std::size_t n_heads, std::size_t head_dim,
                        const float* inv_freq, RopeStyle style) {
    cuda::rope_rows(ws.ctx(), x.data, x.stride, x.rows, n_heads, head_dim, inv_freq, style);
  }
  static void store_kv(Workspace& ws, MatrixView<const float> k, MatrixView<const float> v) {
    cuda::store_kv(ws.ctx(), k.data, k.stride, v.data, v.stride, k.rows);
  }
  static void swiglu(Workspace& ws, float* gate, const float* up, std::size_t n) { cuda::swiglu(ws.ctx(), gate, up, n); }
  static void geglu(Workspace& ws, float* gate, const float* up, std::size_t n) { cuda::geglu(ws.ctx(), gate, up, n); }
  static void softcap_rows(Workspace& ws, MatrixView<float> x, float cap) {
    if (x.stride == x.cols) return cuda::softcap(ws.ctx(), x.data, x.rows * x.cols, cap);
    for (std::size_t t = 0; t < x.rows; ++t) cuda::softcap(ws.ctx(), x.row(t), x.cols, cap);
  }
  // src in device memory, dst in the host's; waits for the step's kernels.
  static void to_host(Workspace&, MatrixView<const float> src, MatrixView<float> dst) {
    if (src.stride == src.cols && dst.stride == dst.cols)
      return cuda::copy_to_host(dst.data, src.data, src.rows * src.cols * sizeof(float));
    for (std::size_t t = 0; t < src.rows; ++t) cuda::copy_to_host(dst.row(t), src.row(t), src.cols * sizeof(float));
  }

  // Attention keeps its partial sums in the context: no scratch from the model.
  static constexpr std::size_t attention_scratch_cols(std::size_t, std::size_t, std::size_t, std::size_t) { return 0; }
  static void attention(ThreadPool&, Workspace& ws, MatrixView<const float> q, std::size_t n_heads,
                        std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
                        MatrixView<float> out, MatrixView<float> /*scratch*/) {
    cuda::attention(ws.ctx(), q.data, q.stride, q.rows, n_heads, n_kv_heads, head_dim, params, out.data, out.stride);
  }
};

}  // namespace tinyllm
