#pragma once
// Run-time dispatch of the CPU kernels, stb style. Build every translation unit with
// TINYLLM_DYNAMIC_DISPATCH defined (it makes kernels/cpu/cpu.hpp declare the kernels' entry
// points instead of compiling them inline), and in exactly one .cpp write
//
//   #define TINYLLM_DISPATCH_IMPLEMENTATION
//   #include <tinyllm/dispatch.hpp>
//
// That file then compiles every kernel once per x86 target Highway attains (SSE4, AVX2, AVX3,
// AVX3_DL; NEON on Arm) and defines each entry point to call the best one this CPU supports,
// chosen once at the first call (cpu::use_kernel_target() forces one). It also compiles the
// loaders of every architecture the library knows (model/load.hpp), the other heavy part of a
// program that calls load().
// Compile it with the same Highway flags as every other file (HWY_WANT_AVX3_DL, below).
#if !defined(TINYLLM_DYNAMIC_DISPATCH)
#error "tinyllm/dispatch.hpp: define TINYLLM_DYNAMIC_DISPATCH in every translation unit (or use static dispatch and drop this file)"
#endif

#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/model/load.hpp>

#if defined(TINYLLM_DISPATCH_IMPLEMENTATION)

// The x86 target for AVX-512 VNNI (AVX3_DL) only exists where asked for.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tinyllm/kernels/cpu/per_target.hpp"
#include <hwy/foreach_target.h>  // must come before hwy/highway.h
#include <tinyllm/kernels/cpu/per_target.hpp>
#include <hwy/highway.h>

namespace tinyllm::cpu {

HWY_EXPORT(qmatmul_kernel);
HWY_EXPORT(qmatmul_packed_kernel);
HWY_EXPORT(matmul_f32_kernel);
HWY_EXPORT(matmul_f16_kernel);
HWY_EXPORT(matmul_bf16_kernel);
HWY_EXPORT(attention_kernel);
HWY_EXPORT(rmsnorm_kernel);
HWY_EXPORT(rope_kernel);
HWY_EXPORT(softmax_kernel);
HWY_EXPORT(silu_kernel);
HWY_EXPORT(swiglu_kernel);
HWY_EXPORT(geglu_kernel);
HWY_EXPORT(softcap_kernel);
HWY_EXPORT(target_name_kernel);

void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in, MatrixView<const float> x,
             MatrixView<float> y, QuantScratch& scratch) {
  HWY_DYNAMIC_DISPATCH(qmatmul_kernel)(pool, type, w, n_out, n_in, x, y, scratch);
}
void qmatmul_packed(ThreadPool& pool, DType type, const std::byte* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y, QuantScratch& scratch) {
  HWY_DYNAMIC_DISPATCH(qmatmul_packed_kernel)(pool, type, w, n_out, n_in, x, y, scratch);
}
void matmul(ThreadPool& pool, MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_DYNAMIC_DISPATCH(matmul_f32_kernel)(pool, w, x, y);
}
void matmul(ThreadPool& pool, MatrixView<const F16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_DYNAMIC_DISPATCH(matmul_f16_kernel)(pool, w, x, y);
}
void matmul(ThreadPool& pool, MatrixView<const BF16> w, MatrixView<const float> x, MatrixView<float> y) {
  HWY_DYNAMIC_DISPATCH(matmul_bf16_kernel)(pool, w, x, y);
}
void attention(ThreadPool& pool, MatrixView<const float> q, std::span<const std::int32_t> positions,
               std::span<const KVLayerView> views, std::span<const std::uint32_t> view_of_token, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params, MatrixView<float> out,
               MatrixView<float> scratch) {
  HWY_DYNAMIC_DISPATCH(attention_kernel)(pool, q, positions, views, view_of_token, n_heads, n_kv_heads, head_dim, params,
                                         out, scratch);
}
void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
  HWY_DYNAMIC_DISPATCH(rmsnorm_kernel)(x, w, out, n, eps);
}
void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq, RopeStyle style) {
  HWY_DYNAMIC_DISPATCH(rope_kernel)(x, n_heads, head_dim, pos, inv_freq, style);
}
void softmax(float* x, std::size_t n) { HWY_DYNAMIC_DISPATCH(softmax_kernel)(x, n); }
void silu(float* x, std::size_t n) { HWY_DYNAMIC_DISPATCH(silu_kernel)(x, n); }
void swiglu(float* gate, const float* up, std::size_t n) { HWY_DYNAMIC_DISPATCH(swiglu_kernel)(gate, up, n); }
void geglu(float* gate, const float* up, std::size_t n) { HWY_DYNAMIC_DISPATCH(geglu_kernel)(gate, up, n); }
void softcap(float* x, std::size_t n, float cap) { HWY_DYNAMIC_DISPATCH(softcap_kernel)(x, n, cap); }
const char* kernel_target() { return HWY_DYNAMIC_DISPATCH(target_name_kernel)(); }

}  // namespace tinyllm::cpu

// The loaders that model/load.hpp declares extern under run-time dispatch.
namespace tinyllm::detail {
template LoadedModel load_gguf<void, CpuBackend>(std::shared_ptr<const GGUFFile>, std::shared_ptr<const void>,
                                                 const LoadOptions&);
template LoadedModel load_llama2c<Llama, CpuBackend>(const std::string&, LoadOptions);
template LoadedModel load_hf<void, CpuBackend>(const std::filesystem::path&, const LoadOptions&);
}  // namespace tinyllm::detail

#endif  // TINYLLM_DISPATCH_IMPLEMENTATION
