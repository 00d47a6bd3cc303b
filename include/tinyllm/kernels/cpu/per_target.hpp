// Every CPU kernel for the current Highway target, and the entry points that cpu.hpp exposes: one
// plain function per hot operation, named *_kernel so that HWY_EXPORT can take its address.
// cpu.hpp includes this once (static dispatch); dispatch.hpp has foreach_target.h include it once
// per target (run-time dispatch).
#if defined(TINYLLM_KERNELS_CPU_PER_TARGET_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_PER_TARGET_HPP_
#undef TINYLLM_KERNELS_CPU_PER_TARGET_HPP_
#else
#define TINYLLM_KERNELS_CPU_PER_TARGET_HPP_
#endif
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cpu/activation.hpp>
#include <tinyllm/kernels/cpu/attention.hpp>
#include <tinyllm/kernels/cpu/matmul.hpp>
#include <tinyllm/kernels/cpu/norm.hpp>
#include <tinyllm/kernels/cpu/qmatmul.hpp>
#include <tinyllm/kernels/cpu/quant_acts.hpp>
#include <tinyllm/kernels/cpu/rope.hpp>
#include <tinyllm/kernels/cpu/simd.hpp>
#include <tinyllm/kernels/cpu/softmax.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {

inline void qmatmul_kernel(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                           MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  HWY_NAMESPACE::qmatmul(pool, type, w, n_out, n_in, x, y, scratch);
}
inline void qmatmul_packed_kernel(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                                  MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  HWY_NAMESPACE::qmatmul_packed(pool, type, w, n_out, n_in, x, y, scratch);
}
inline void matmul_f32_kernel(ThreadPool& pool, MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul(pool, w, x, y);
}
inline void matmul_f16_kernel(ThreadPool& pool, MatrixView<const F16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul(pool, w, x, y);
}
inline void matmul_bf16_kernel(ThreadPool& pool, MatrixView<const BF16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_NAMESPACE::matmul(pool, w, x, y);
}
inline void attention_kernel(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
                             std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token,
                             std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                             const AttentionParams& params, MatrixView<float> out, MatrixView<float> scratch) {
  HWY_NAMESPACE::attention(pool, q, positions, views, view_of_token, n_heads, n_kv_heads, head_dim, params, out, scratch);
}
inline void rmsnorm_kernel(const float* x, const float* w, float* out, std::size_t n, float eps) {
  HWY_NAMESPACE::rmsnorm(x, w, out, n, eps);
}
inline void rope_kernel(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                        RopeStyle style) {
  HWY_NAMESPACE::rope(x, n_heads, head_dim, pos, inv_freq, style);
}
inline void softmax_kernel(float* x, std::size_t n) { HWY_NAMESPACE::softmax(x, n); }
inline void silu_kernel(float* x, std::size_t n) { HWY_NAMESPACE::silu(x, n); }
inline void swiglu_kernel(float* gate, const float* up, std::size_t n) { HWY_NAMESPACE::swiglu(gate, up, n); }
inline void geglu_kernel(float* gate, const float* up, std::size_t n) { HWY_NAMESPACE::geglu(gate, up, n); }
inline void softcap_kernel(float* x, std::size_t n, float cap) { HWY_NAMESPACE::softcap(x, n, cap); }
inline const char* target_name_kernel() { return hwy::TargetName(HWY_TARGET); }

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
