#pragma once
// Rotary position embedding of the step's rows, as ref::rope: pair i of every head turns by the
// angle float(pos) * inv_freq[i], a float product as llama.cpp and llama2.c compute it, then
// CUDA's accurate sinf/cosf (the fast intrinsics lose accuracy as the angle grows with the
// position). nvcc only.
#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

// One thread per (row, head, pair).
__global__ void rope_rows_kernel(float* __restrict__ x, std::size_t x_stride, std::size_t rows, std::size_t n_heads,
                                 std::size_t head_dim, const float* __restrict__ inv_freq,
                                 const std::int32_t* __restrict__ positions, RopeStyle style) {
  const std::size_t half = head_dim / 2, id = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= rows * n_heads * half) return;
  const std::size_t i = id % half, h = id / half % n_heads, t = id / half / n_heads;
  const float angle = float(positions[t]) * inv_freq[i];
  float s, c;
  sincosf(angle, &s, &c);
  float* head = x + t * x_stride + h * head_dim;
  float& a = style == RopeStyle::adjacent_pairs ? head[2 * i] : head[i];
  float& b = style == RopeStyle::adjacent_pairs ? head[2 * i + 1] : head[i + half];
  const float a0 = a, b0 = b;
  a = a0 * c - b0 * s;
  b = a0 * s + b0 * c;
}

void rope_rows(Context& ctx, float* x, std::size_t x_stride, std::size_t rows, std::size_t n_heads,
               std::size_t head_dim, const float* inv_freq, RopeStyle style) {
  if (rows > ctx.n_rows())
    throw Error("rope_rows of " + std::to_string(rows) + " rows", "cuda::rope_rows",
                "at most the step's " + std::to_string(ctx.n_rows()) + " tokens (begin_step)");
  const std::size_t n = rows * n_heads * (head_dim / 2);
  if (n == 0) return;
  rope_rows_kernel<<<blocks_for(n, 256), 256, 0, ctx.stream>>>(x, x_stride, rows, n_heads, head_dim, inv_freq,
                                                                ctx.positions, style);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace tinyllm::cuda
