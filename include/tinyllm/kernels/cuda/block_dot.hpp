#pragma once
// The arithmetic of the CUDA quantized matvec, written once for the GPU and the host: the
// activations' 8-bit chunks of 32, a weight block's 32-value chunk in dp4a form, and their dot
// product. Plain C++ (TINYLLM_HOST_DEVICE functions, no CUDA header), so the host tests check
// on any machine the very functions the kernels call.
//
// Activations are cut into chunks of 32 values (every weight format's scale unit is 32 or 16, so
// one chunk never straddles two weight scales it cannot handle): d = max|x| / 127 and
// q = round(x / d) in [-127, 127], with the chunk's sum of q kept for the formats with mins.
// A weight chunk is 32 values of one block, value l = scale[l / 16] * q_l - min, where q_l is a
// signed byte (quants4 of block_ints.hpp, the formats' one decoder). Their dot product is then
//   a.d * (scale[0] * dot(q[0..16), aq[0..16)) + scale[1] * dot(q[16..32), aq[16..32)))
//     - min * a.d * a.sum
// with exact integer dot products: only the final few float operations round.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/host_device.hpp>
#include <tinyllm/quant/block_ints.hpp>

namespace tinyllm::cuda {

// acc + the dot product of the 4 signed bytes of a and of b.
TINYLLM_HOST_DEVICE inline std::int32_t dot4_i8(std::int32_t a, std::int32_t b, std::int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, acc);
#else
  for (int k = 0; k < 4; ++k)
    acc += std::int32_t(std::int8_t(std::uint32_t(a) >> (8 * k))) * std::int32_t(std::int8_t(std::uint32_t(b) >> (8 * k)));
  return acc;
#endif
}

// ---- activations ----
inline constexpr int kActChunk = 32;

// One activation chunk's scale and the sum of its quants.
struct ActScale {
  float d;
  std::int32_t sum;
};

// The scale of a chunk whose largest magnitude is amax.
TINYLLM_HOST_DEVICE inline float act_scale(float amax) { return amax / 127.0f; }
// What x is multiplied by before rounding: 1 / d, or 0 for an all-zero chunk. The GPU computes
// the same correctly rounded division, so host and device quants agree bit for bit.
TINYLLM_HOST_DEVICE inline float act_inverse(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }
// The quant of x; |x| * inv <= 127 by construction (rounding to nearest, ties to even).
TINYLLM_HOST_DEVICE inline std::int8_t act_quant(float x, float inv) { return std::int8_t(std::nearbyint(x * inv)); }

// The host's quantization of n values (n a multiple of 32): q[n] quants, scales[n / 32]. The GPU
// does the same per chunk with a warp-wide maximum and sum (quantize.cuh).
inline void quantize_acts(const float* x, std::size_t n, std::int8_t* q, ActScale* scales) {
  for (std::size_t c = 0; c < n / kActChunk; ++c) {
    const float* xc = x + c * kActChunk;
    float amax = 0.0f;
    for (int i = 0; i < kActChunk; ++i) amax = std::fmax(amax, std::fabs(xc[i]));
    const float d = act_scale(amax), inv = act_inverse(d);
    std::int32_t sum = 0;
    for (int i = 0; i < kActChunk; ++i) sum += q[c * kActChunk + i] = act_quant(xc[i], inv);
    scales[c] = {d, sum};
  }
}

// ---- weights ----
// 32 consecutive values of a weight row: value l = scale[l / 16] * (signed byte l of q) - min.
struct WeightChunk {
  std::int32_t q[8];
  float scale[2];
  float min;
};

// Chunks of 32 per block of each format.
template <class Block>
inline constexpr int kChunksPerBlock = int(BlockFormat<Block>::values) / 32;

// Chunk c of block b (c < kChunksPerBlock<Block>).
template <class Block>
TINYLLM_HOST_DEVICE inline WeightChunk load_chunk(const Block& b, int c) {
  WeightChunk w;
  for (int i = 0; i < 8; ++i) w.q[i] = quants4(b, 8 * c + i);
  if constexpr (BlockFormat<Block>::has_min) {  // Q4_K, Q5_K: one scale and min per chunk
    std::uint8_t sc, m;
    get_scale_min_k4(c, b.scales, sc, m);
    w.scale[0] = w.scale[1] = f16_to_f32(b.d) * float(sc);
    w.min = f16_to_f32(b.dmin) * float(m);
  } else if constexpr (BlockFormat<Block>::sub_scales) {  // Q6_K: a scale per 16 values
    const float d = f16_to_f32(b.d);
    w.scale[0] = d * float(b.scales[2 * c]);
    w.scale[1] = d * float(b.scales[2 * c + 1]);
    w.min = 0.0f;
  } else {  // Q8_0, Q4_0: one scale per block of 32
    w.scale[0] = w.scale[1] = f16_to_f32(b.d);
    w.min = 0.0f;
  }
  return w;
}

// Value l (0..31) of a chunk, by the operations of dequantize_row (so, without FMA contraction,
// the same bits: subtracting a zero min changes nothing, not even a zero's sign).
TINYLLM_HOST_DEVICE inline float chunk_value(const WeightChunk& w, int l) {
  const float q = float(std::int8_t(std::uint32_t(w.q[l / 4]) >> (8 * (l % 4))));
  return w.scale[l / 16] * q - w.min;
}

// sum_l value_l(w) * a.d * aq_l: the chunk's contribution to an output, aq the chunk's 32
// activation quants as 8 packed words.
TINYLLM_HOST_DEVICE inline float chunk_dot(const WeightChunk& w, const std::int32_t* aq, ActScale a) {
  std::int32_t low = 0, high = 0;
  for (int i = 0; i < 4; ++i) low = dot4_i8(w.q[i], aq[i], low);
  for (int i = 4; i < 8; ++i) high = dot4_i8(w.q[i], aq[i], high);
  return a.d * (w.scale[0] * float(low) + w.scale[1] * float(high) - w.min * float(a.sum));
}

}  // namespace tinyllm::cuda
