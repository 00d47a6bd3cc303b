#pragma once
// The CPU kernels' entry points: the hot operations of a forward pass as plain functions.
//
// Two ways to build:
//   static dispatch (the default): every kernel is inline, compiled for the one Highway target
//     that the compiler flags allow (-march=native: this machine's best). Truly header-only.
//   run-time dispatch (TINYLLM_DYNAMIC_DISPATCH defined in every translation unit): these are
//     declarations only, and one translation unit compiles every kernel for every x86 target
//     (SSE4, AVX2, AVX-512, AVX-512 VNNI) by defining TINYLLM_DISPATCH_IMPLEMENTATION before
//     including <tinyllm/dispatch.hpp>. One binary then runs at its best on any x86-64 CPU, and
//     the other translation units never parse a kernel.
// The kernels themselves are in per_target.hpp and the headers it includes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cpu/qpack.hpp>
#include <tinyllm/kernels/cpu/quant_acts.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

#if !defined(TINYLLM_DYNAMIC_DISPATCH)
#include <tinyllm/kernels/cpu/per_target.hpp>
#else
#include <hwy/targets.h>
#endif

namespace tinyllm::cpu {

// Columns of attention scratch per thread: for one KV head's query heads of each token of a tile
// (kAttentionTile), the scores of one segment of positions (kAttentionSegment), one segment's
// output and four numbers per head.
inline constexpr std::size_t attention_scratch_cols(std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim) {
  return kAttentionTile * (n_heads / n_kv_heads) * (kAttentionSegment + head_dim + 4);
}

#if !defined(TINYLLM_DYNAMIC_DISPATCH)
// y[n_tok, n_out] = x[n_tok, n_in] · wᵀ, w holding n_out contiguous rows of n_in values of `type`
// (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) as the file lays them out (qmatmul.hpp).
inline void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  HWY_NAMESPACE::qmatmul_kernel(pool, type, w, n_out, n_in, x, y, scratch);
}
// The same for w packed by pack_rows (qpack.hpp): the same bits.
inline void qmatmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                           MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  HWY_NAMESPACE::qmatmul_packed_kernel(pool, type, w, n_out, n_in, x, y, scratch);
}
// y[n_tok, n_out] = x[n_tok, n_in] · wᵀ for f32, f16 or bf16 weights, any strides (matmul.hpp).
inline void matmul(ThreadPool& pool, MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul_f32_kernel(pool, w, x, y);
}
inline void matmul(ThreadPool& pool, MatrixView<const F16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul_f16_kernel(pool, w, x, y);
}
inline void matmul(ThreadPool& pool, MatrixView<const BF16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul_bf16_kernel(pool, w, x, y);
}
// Attention of every token over its sequence's paged KV (attention.hpp).
inline void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                      std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token,
                      std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params,
                      MatrixView<float> out, MatrixView<float> scratch) {
  HWY_NAMESPACE::attention_kernel(pool, q, positions, views, view_of_token, n_heads, n_kv_heads, head_dim, params, out,
                                  scratch);
}
inline void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
  HWY_NAMESPACE::rmsnorm_kernel(x, w, out, n, eps);
}
inline void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                 RopeStyle style) {
  HWY_NAMESPACE::rope_kernel(x, n_heads, head_dim, pos, inv_freq, style);
}
inline void softmax(float* x, std::size_t n) { HWY_NAMESPACE::softmax_kernel(x, n); }
inline void silu(float* x, std::size_t n) { HWY_NAMESPACE::silu_kernel(x, n); }
inline void swiglu(float* gate, const float* up, std::size_t n) { HWY_NAMESPACE::swiglu_kernel(gate, up, n); }
inline void geglu(float* gate, const float* up, std::size_t n) { HWY_NAMESPACE::geglu_kernel(gate, up, n); }
inline void softcap(float* x, std::size_t n, float cap) { HWY_NAMESPACE::softcap_kernel(x, n, cap); }
// The Highway target the kernels run on ("AVX3_DL", "AVX2", "NEON", ...).
inline const char* kernel_target() { return HWY_NAMESPACE::target_name_kernel(); }
#else
void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in, MatrixView<const float> x,
             MatrixView<float> y, QuantScratch& scratch);
void qmatmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch);
void matmul(ThreadPool& pool, MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y);
void matmul(ThreadPool& pool, MatrixView<const F16> w, MatrixView<const float> x, MatrixView<float> y);
void matmul(ThreadPool& pool, MatrixView<const BF16> w, MatrixView<const float> x, MatrixView<float> y);
void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
               std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params, MatrixView<float> out,
               MatrixView<float> scratch);
void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps);
void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq, RopeStyle style);
void softmax(float* x, std::size_t n);
void silu(float* x, std::size_t n);
void swiglu(float* gate, const float* up, std::size_t n);
void geglu(float* gate, const float* up, std::size_t n);
void softcap(float* x, std::size_t n, float cap);
const char* kernel_target();
#endif

// Runs the kernels of the named target ("AVX2", "SSE4", "AVX3", "AVX3_DL", "NEON", ...) instead of
// the best one this CPU supports, from now on; "" goes back to the best. For benchmarks and
// tests. Under static dispatch only the compiled target exists. Throws an Error naming the
// choices otherwise.
inline void use_kernel_target(std::string_view name) {
  std::string available;
#if defined(TINYLLM_DYNAMIC_DISPATCH)
  hwy::SetSupportedTargetsForTest(0);  // every target again, not only the one chosen last
  if (name.empty()) return;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(target)) return hwy::SetSupportedTargetsForTest(target);
    available += std::string(available.empty() ? "" : ", ") + hwy::TargetName(target);
  }
#else
  if (name.empty() || name == kernel_target()) return;
  available = std::string(kernel_target()) + " (static dispatch)";
#endif
  throw Error("no kernel target " + std::string(name) + " in this build on this CPU", "cpu::use_kernel_target",
              "one of " + available);
}

// All tokens of one sequence.
inline void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                      const KVLayerView& kv, std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                      const AttentionParams& params, MatrixView<float> out, MatrixView<float> scratch) {
  attention(pool, q, positions, std::span(&kv, 1), {}, n_heads, n_kv_heads, head_dim, params, out, scratch);
}

}  // namespace tinyllm::cpu
