#pragma once
// y = x · wᵀ for a few tokens (1..kMatvecMaxTokens): one warp per output row reads the row once
// for all the tokens, so the weights, which dominate the bytes moved, cross the bus once per
// call. Quantized weights meet the activations' 8-bit chunks in integer dot products (__dp4a,
// block_dot.hpp); F32, F16 and BF16 weights meet the f32 activations directly. nvcc only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tinyllm/kernels/cuda/common.cuh>
#include <tinyllm/kernels/cuda/quantize.cuh>

namespace tinyllm::cuda {

inline constexpr int kMatvecWarps = 4;   // rows per thread block

// Lane l of a row's warp takes the row's chunks l, l + 32, ...: adjacent lanes read adjacent
// bytes of the row, and each chunk's weights are decoded once for every token.
template <class Block, int NT>
__global__ void __launch_bounds__(32 * kMatvecWarps)
matvec_quantized_kernel(const Block* __restrict__ w, std::size_t n_out, std::size_t n_in,
                        const std::int8_t* __restrict__ quants, const ActScale* __restrict__ scales,
                        float* __restrict__ y, std::size_t y_stride) {
  const std::size_t row = std::size_t(blockIdx.x) * kMatvecWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n_out) return;   // a whole warp leaves together
  constexpr int per_block = kChunksPerBlock<Block>;
  const std::size_t n_chunks = n_in / kActChunk;
  const Block* w_row = w + row * (n_in / BlockFormat<Block>::values);
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

  for (std::size_t c = lane; c < n_chunks; c += 32) {
    const WeightChunk chunk = load_chunk(w_row[c / per_block], int(c % per_block));
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      // A chunk's 32 quants are 32-byte aligned: two 16-byte loads.
      const int4* a = reinterpret_cast<const int4*>(quants + t * n_in + c * kActChunk);
      const int4 lo = a[0], hi = a[1];
      const std::int32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
      acc[t] += chunk_dot(chunk, words, scales[t * n_chunks + c]);
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float sum = warp_sum(acc[t]);
    if (lane == t) y[t * y_stride + row] = sum;
  }
}

__device__ inline float weight_to_float(float w) { return w; }
__device__ inline float weight_to_float(__half w) { return __half2float(w); }
__device__ inline float weight_to_float(__nv_bfloat16 w) { return __bfloat162float(w); }

template <class W, int NT>
__global__ void __launch_bounds__(32 * kMatvecWarps)
matvec_float_kernel(const W* __restrict__ w, std::size_t n_out, std::size_t n_in, const float* __restrict__ x,
                    std::size_t x_stride, float* __restrict__ y, std::size_t y_stride) {
  const std::size_t row = std::size_t(blockIdx.x) * kMatvecWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n_out) return;
  const W* w_row = w + row * n_in;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  for (std::size_t i = lane; i < n_in; i += 32) {
    const float wi = weight_to_float(w_row[i]);
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] += wi * x[t * x_stride + i];
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float sum = warp_sum(acc[t]);
    if (lane == t) y[t * y_stride + row] = sum;
  }
}

// Calls f(std::integral_constant<int, n>) for the run-time n in 1..kMatvecMaxTokens, so that each
// token count gets its own kernel with the accumulators in registers.
template <class F>
void with_token_count(std::size_t n, F&& f) {
  switch (n) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: throw Error("matvec of " + std::to_string(n) + " tokens", "cuda::matvec", "1 to 8");
  }
}
static_assert(kMatvecMaxTokens == 8, "with_token_count lists the token counts");

// Quantized weights: the activations are quantized once, then every group of up to 8 tokens
// reads the weights once.
template <class Block>
void matvec_quantized(Context& ctx, const Block* w, std::size_t n_out, std::size_t n_in, const float* x,
                      std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  const DeviceActs acts = quantize_acts(ctx, x, x_stride, n_tok, n_in);
  for (std::size_t t0 = 0; t0 < n_tok; t0 += kMatvecMaxTokens) {
    with_token_count(std::min(kMatvecMaxTokens, n_tok - t0), [&](auto nt) {
      matvec_quantized_kernel<Block, nt()><<<blocks_for(n_out, kMatvecWarps), 32 * kMatvecWarps, 0, ctx.stream>>>(
          w, n_out, n_in, acts.quants + t0 * n_in, acts.scales + t0 * (n_in / kActChunk), y + t0 * y_stride,
          y_stride);
    });
    TINYLLM_CUDA_CHECK_LAUNCH();
  }
}

template <class W>
void matvec_float(Context& ctx, const W* w, std::size_t n_out, std::size_t n_in, const float* x,
                  std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  for (std::size_t t0 = 0; t0 < n_tok; t0 += kMatvecMaxTokens) {
    with_token_count(std::min(kMatvecMaxTokens, n_tok - t0), [&](auto nt) {
      matvec_float_kernel<W, nt()><<<blocks_for(n_out, kMatvecWarps), 32 * kMatvecWarps, 0, ctx.stream>>>(
          w, n_out, n_in, x + t0 * x_stride, x_stride, y + t0 * y_stride, y_stride);
    });
    TINYLLM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tinyllm::cuda
