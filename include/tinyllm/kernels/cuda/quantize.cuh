#pragma once
// Activations to 8-bit chunks of 32 (block_dot.hpp's rule) for the quantized matvec: each
// thread takes 4 consecutive values, 8 threads a chunk, and they meet through shuffles for the
// chunk's max|x| and sum of quants. nvcc only.
#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

inline constexpr int kQuantizeThreads = 256;

// x [n_tok, n_in] (row stride x_stride, n_in a multiple of 32) -> quants [n_tok, n_in] and
// scales [n_tok, n_in / 32].
__global__ void quantize_acts_kernel(const float* __restrict__ x, std::size_t x_stride, std::size_t n_in,
                                     std::size_t n_tok, std::int8_t* __restrict__ quants,
                                     ActScale* __restrict__ scales) {
  const std::size_t quads = n_in / 4, group = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  // Threads past the end still join the shuffles (their 8-thread chunk is wholly past it).
  const bool active = group < n_tok * quads;
  const std::size_t t = active ? group / quads : 0, i = active ? 4 * (group % quads) : 0;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (active)
    for (int k = 0; k < 4; ++k) v[k] = x[t * x_stride + i + k];
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  amax = warp_max<8>(amax);
  const float d = act_scale(amax), inv = act_inverse(d);
  std::uint32_t packed = 0;
  std::int32_t sum = 0;
  for (int k = 0; k < 4; ++k) {
    const std::int8_t q = act_quant(v[k], inv);
    sum += q;
    packed |= std::uint32_t(std::uint8_t(q)) << (8 * k);
  }
  sum = warp_sum<8>(sum);
  if (!active) return;
  *reinterpret_cast<std::uint32_t*>(quants + t * n_in + i) = packed;
  if (threadIdx.x % 8 == 0) scales[t * (n_in / kActChunk) + i / kActChunk] = {d, sum};
}

// Activations quantized on the device: quants [n_tok, n_in], scales [n_tok, n_in / 32].
struct DeviceActs {
  const std::int8_t* quants;
  const ActScale* scales;
};

// Quantizes x into the context's activation buffers.
inline DeviceActs quantize_acts(Context& ctx, const float* x, std::size_t x_stride, std::size_t n_tok,
                                std::size_t n_in) {
  auto* q = ctx.act_quants.reserve_as<std::int8_t>(n_tok * n_in);
  auto* s = ctx.act_scales.reserve_as<ActScale>(n_tok * n_in / kActChunk);
  quantize_acts_kernel<<<blocks_for(n_tok * n_in / 4, kQuantizeThreads), kQuantizeThreads, 0, ctx.stream>>>(
      x, x_stride, n_in, n_tok, q, s);
  TINYLLM_CUDA_CHECK_LAUNCH();
  return {q, s};
}

}  // namespace tinyllm::cuda
