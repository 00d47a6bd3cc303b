#pragma once
// The CUDA kernels as the host sees them: plain C++ declarations, no CUDA header, so any .cpp file
// (compiled by g++ or clang) can call them. Their definitions are the .cuh files of this folder,
// compiled by nvcc only: exactly one .cu file of a program writes
//
//   #include <tinyllm/kernels/cuda/kernels.cuh>
//
// (the llm.c pattern: kernels as headers, one translation unit that includes them). CMake's
// TINYLLM_CUDA option builds that file as tinyllm::cuda.
//
// Every pointer named `device` or passed to a kernel is device memory. Kernels are enqueued on the
// Context's stream and return at once; copy_to_host waits for them. Every CUDA error becomes a
// tinyllm::Error that names the call and CUDA's message.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm::cuda {

// How many CUDA devices can run kernels; 0 on any error (no driver, no device), with CUDA's reason
// in *why. Never throws: tests call it to decide whether to skip.
int usable_devices(std::string* why = nullptr) noexcept;
// "NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB" for device 0.
std::string describe_device();

// ---- memory ----
void* alloc(std::size_t bytes);               // cudaMalloc; 0 bytes gives nullptr
void release(void* device) noexcept;          // cudaFree (nullptr is fine)
void copy_to_device(void* device, const void* host, std::size_t bytes);   // returns when copied
void copy_to_host(void* host, const void* device, std::size_t bytes);     // waits for every kernel before it
void copy_on_device(void* to, const void* from, std::size_t bytes);
void zero(void* device, std::size_t bytes);
void synchronize();                           // waits for every kernel enqueued

// Scratch and state of one model's kernels: the stream, the activations quantized to 8 bits, the
// cuBLAS handle and its F16 tiles, and the step's integer arrays and KV block tables (below), in
// device memory. Not thread-safe: one model, one stepping thread.
struct Context;
Context* create_context(std::size_t max_tokens, std::size_t max_in);
void destroy_context(Context* ctx) noexcept;

// ---- one forward step ----
// The step's tokens, their positions and, for each token, the index of its sequence's KV view in
// the span given to set_kv_views. Uploaded once per step; embed, rope_rows, store_kv and attention
// read them. n = tokens.size() rows in every kernel below that takes `rows`.
void begin_step(Context& ctx, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                std::span<const std::uint32_t> view_of_token);
// The KV block tables of one layer, one view per sequence of the step (host structs whose block
// pointers point to device memory). Uploaded once per layer; store_kv and attention read them.
void set_kv_views(Context& ctx, std::span<const KVLayerView> views);

// x[t, :] = scale * row tokens[t] of `table` ([vocab, n_embd] of type `type`: F32, F16, BF16 or a
// quantized type below), dequantized.
void embed(Context& ctx, DType type, const void* table, std::size_t n_embd, float scale, float* x);

// y[t, o] = sum_i w[o, i] * x[t, i]: w [n_out, n_in] of F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or
// Q6_K as GGUF stores it; x [n_tok, n_in] (row stride x_stride), y [n_tok, n_out] (row stride
// y_stride). Small batches: one pass over the weights per group of up to kMatvecMaxTokens tokens
// (quantized weights meet the activations quantized to 8-bit chunks of 32 on the GPU in integer
// dot products); larger batches: cuBLAS with f32 accumulation, the activations rounded to the
// weights' 16-bit type (F16 for quantized weights, dequantized a tile at a time).
inline constexpr std::size_t kMatvecMaxTokens = 8;
void matmul(Context& ctx, DType type, const void* w, std::size_t n_out, std::size_t n_in, const float* x,
            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride);
bool matmul_supports(DType type);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w; out may alias x.
void rmsnorm_rows(Context& ctx, const float* x, std::size_t x_stride, const float* w, float* out,
                  std::size_t out_stride, std::size_t rows, std::size_t n, float eps);
// dst[i, :] = src[rows[i], :] for the host list `rows`.
void gather_rows(Context& ctx, const float* src, std::size_t src_stride, std::span<const std::size_t> rows,
                 float* dst, std::size_t dst_stride, std::size_t cols);
// x[r, :] += factor * y[r, :].
void add_rows(Context& ctx, float* x, std::size_t x_stride, const float* y, std::size_t y_stride, std::size_t rows,
              std::size_t cols, float factor = 1.0f);
// x[r, :] += bias.
void add_bias(Context& ctx, float* x, std::size_t x_stride, std::size_t rows, std::size_t cols, const float* bias);
// Rotates the n_heads heads of each row t of x ([rows, n_heads * head_dim], row stride x_stride)
// by the step's position of token t, as ref::rope.
void rope_rows(Context& ctx, float* x, std::size_t x_stride, std::size_t rows, std::size_t n_heads,
               std::size_t head_dim, const float* inv_freq, RopeStyle style);
// Elementwise over n contiguous values, as ref::swiglu, ref::geglu, ref::softcap.
void swiglu(Context& ctx, float* gate, const float* up, std::size_t n);
void geglu(Context& ctx, float* gate, const float* up, std::size_t n);
void softcap(Context& ctx, float* x, std::size_t n, float cap);
// Each row in place, as ref::softmax.
void softmax_rows(Context& ctx, float* x, std::size_t stride, std::size_t rows, std::size_t cols);

// Writes k[t, :] and v[t, :] ([rows, kv_dim]) at token t's position in its sequence's view
// (F32, or F16 rounded to nearest even).
void store_kv(Context& ctx, const float* k, std::size_t k_stride, const float* v, std::size_t v_stride,
              std::size_t rows);
// Paged causal attention, as ref::attention for every token t over the view of its sequence:
// q, out [rows, n_heads * head_dim]; GQA, sliding window, soft-capping from params.
void attention(Context& ctx, const float* q, std::size_t q_stride, std::size_t rows, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params, float* out,
               std::size_t out_stride);

}  // namespace tinyllm::cuda
