#pragma once
// rmsnorm_rows and gather_rows. nvcc only.
#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

inline constexpr int kRowThreads = 256;   // one block per row for the row-wise reductions

// One block per row. out may alias x: each thread rewrites only the values it read.
__global__ void rmsnorm_rows_kernel(const float* x, std::size_t x_stride, const float* __restrict__ w, float* out,
                                    std::size_t out_stride, std::size_t n, float eps) {
  __shared__ float shared[32];
  const float* xr = x + blockIdx.x * x_stride;
  float* outr = out + blockIdx.x * out_stride;
  float sum_sq = 0.0f;
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) sum_sq += xr[i] * xr[i];
  sum_sq = block_sum(sum_sq, shared);
  const float inv_rms = 1.0f / sqrtf(sum_sq / float(n) + eps);
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) outr[i] = xr[i] * inv_rms * w[i];
}

void rmsnorm_rows(Context& ctx, const float* x, std::size_t x_stride, const float* w, float* out,
                  std::size_t out_stride, std::size_t rows, std::size_t n, float eps) {
  if (rows == 0) return;
  rmsnorm_rows_kernel<<<unsigned(rows), kRowThreads, 0, ctx.stream>>>(x, x_stride, w, out, out_stride, n, eps);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

// blockIdx.y: the destination row.
__global__ void gather_rows_kernel(const float* __restrict__ src, std::size_t src_stride,
                                   const std::uint64_t* __restrict__ rows, float* __restrict__ dst,
                                   std::size_t dst_stride, std::size_t cols) {
  const std::size_t c = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < cols) dst[blockIdx.y * dst_stride + c] = src[rows[blockIdx.y] * src_stride + c];
}

void gather_rows(Context& ctx, const float* src, std::size_t src_stride, std::span<const std::size_t> rows,
                 float* dst, std::size_t dst_stride, std::size_t cols) {
  if (rows.empty() || cols == 0) return;
  static_assert(sizeof(std::size_t) == sizeof(std::uint64_t));
  auto* device_rows = ctx.indices.reserve_as<std::uint64_t>(rows.size());
  upload(ctx, device_rows, rows.data(), rows.size_bytes());
  gather_rows_kernel<<<dim3(blocks_for(cols, kRowThreads), unsigned(rows.size())), kRowThreads, 0, ctx.stream>>>(
      src, src_stride, device_rows, dst, dst_stride, cols);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace tinyllm::cuda
