#pragma once
// Row additions, the gated activations, soft-capping and row softmax. The transcendental
// functions are CUDA's accurate ones (expf, tanhf; never the __expf intrinsics), within a few
// ulps of the reference. nvcc only.
#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

inline constexpr int kElementThreads = 256;

// blockIdx.y: the row.
__global__ void add_rows_kernel(float* __restrict__ x, std::size_t x_stride, const float* __restrict__ y,
                                std::size_t y_stride, std::size_t cols, float factor) {
  const std::size_t c = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < cols) x[blockIdx.y * x_stride + c] += factor * y[blockIdx.y * y_stride + c];
}

void add_rows(Context& ctx, float* x, std::size_t x_stride, const float* y, std::size_t y_stride, std::size_t rows,
              std::size_t cols, float factor) {
  if (rows == 0 || cols == 0) return;
  add_rows_kernel<<<dim3(blocks_for(cols, kElementThreads), unsigned(rows)), kElementThreads, 0, ctx.stream>>>(
      x, x_stride, y, y_stride, cols, factor);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

void add_bias(Context& ctx, float* x, std::size_t x_stride, std::size_t rows, std::size_t cols, const float* bias) {
  add_rows(ctx, x, x_stride, bias, 0, rows, cols, 1.0f);
}

__device__ inline float silu(float v) { return v / (1.0f + expf(-v)); }
// GELU in its tanh form, as ref::gelu_value.
__device__ inline float gelu(float v) {
  return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}

enum class Gate { silu, gelu };

template <Gate G>
__global__ void gated_kernel(float* __restrict__ gate, const float* __restrict__ up, std::size_t n) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = (G == Gate::silu ? silu(g) : gelu(g)) * up[i];
}

void swiglu(Context& ctx, float* gate, const float* up, std::size_t n) {
  if (n == 0) return;
  gated_kernel<Gate::silu><<<blocks_for(n, kElementThreads), kElementThreads, 0, ctx.stream>>>(gate, up, n);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

void geglu(Context& ctx, float* gate, const float* up, std::size_t n) {
  if (n == 0) return;
  gated_kernel<Gate::gelu><<<blocks_for(n, kElementThreads), kElementThreads, 0, ctx.stream>>>(gate, up, n);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

__global__ void softcap_kernel(float* __restrict__ x, std::size_t n, float cap) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

void softcap(Context& ctx, float* x, std::size_t n, float cap) {
  if (n == 0) return;
  softcap_kernel<<<blocks_for(n, kElementThreads), kElementThreads, 0, ctx.stream>>>(x, n, cap);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

// One block per row: the maximum, the sum of exponentials, then the quotients.
__global__ void softmax_rows_kernel(float* __restrict__ x, std::size_t stride, std::size_t cols) {
  __shared__ float shared[32];
  float* row = x + blockIdx.x * stride;
  float max = -INFINITY;
  for (std::size_t i = threadIdx.x; i < cols; i += blockDim.x) max = fmaxf(max, row[i]);
  max = block_max(max, shared);
  float sum = 0.0f;
  for (std::size_t i = threadIdx.x; i < cols; i += blockDim.x) sum += expf(row[i] - max);
  sum = block_sum(sum, shared);
  const float inv = 1.0f / sum;
  for (std::size_t i = threadIdx.x; i < cols; i += blockDim.x) row[i] = expf(row[i] - max) * inv;
}

void softmax_rows(Context& ctx, float* x, std::size_t stride, std::size_t rows, std::size_t cols) {
  if (rows == 0 || cols == 0) return;
  softmax_rows_kernel<<<unsigned(rows), kElementThreads, 0, ctx.stream>>>(x, stride, cols);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace tinyllm::cuda
