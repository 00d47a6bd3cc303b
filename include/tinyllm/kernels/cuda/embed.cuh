#pragma once
// Token embedding: the step's token rows of the table, dequantized and scaled. nvcc only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

// One thread per value, for F32, F16 and BF16 tables.
template <class T>
__global__ void embed_float_kernel(const T* __restrict__ table, const std::int32_t* __restrict__ tokens,
                                   std::size_t rows, std::size_t n_embd, float scale, float* __restrict__ x) {
  const std::size_t id = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= rows * n_embd) return;
  const std::size_t t = id / n_embd, i = id % n_embd;
  const T v = table[std::size_t(tokens[t]) * n_embd + i];
  float f;
  if constexpr (std::is_same_v<T, __half>) f = __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) f = __bfloat162float(v);
  else f = v;
  x[id] = scale * f;
}

// One thread per chunk of 32 values, for the quantized tables.
template <class Block>
__global__ void embed_quantized_kernel(const Block* __restrict__ table, const std::int32_t* __restrict__ tokens,
                                       std::size_t rows, std::size_t n_embd, float scale, float* __restrict__ x) {
  constexpr int per_block = kChunksPerBlock<Block>;
  const std::size_t chunks = n_embd / kActChunk, id = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= rows * chunks) return;
  const std::size_t t = id / chunks, c = id % chunks;
  const Block* row = table + std::size_t(tokens[t]) * (n_embd / BlockFormat<Block>::values);
  const WeightChunk w = load_chunk(row[c / per_block], int(c % per_block));
  float* out = x + t * n_embd + c * kActChunk;
  for (int l = 0; l < kActChunk; ++l) out[l] = scale * chunk_value(w, l);
}

void embed(Context& ctx, DType type, const void* table, std::size_t n_embd, float scale, float* x) {
  const std::size_t rows = ctx.n_rows();
  if (!matmul_supports(type))
    throw Error("no CUDA embedding for table type " + std::string(name(type)), "cuda::embed",
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  if (n_embd % info(type).block_size != 0)
    throw Error("an embedding row of " + std::to_string(n_embd) + " " + std::string(name(type)) + " values",
                "cuda::embed", "a multiple of " + std::to_string(info(type).block_size));
  if (rows == 0 || n_embd == 0) return;
  const unsigned threads = 256;
  const std::size_t values = rows * n_embd, chunks = values / kActChunk;
  auto quantized = [&](auto block_tag) {
    using Block = decltype(block_tag);
    embed_quantized_kernel<Block><<<blocks_for(chunks, threads), threads, 0, ctx.stream>>>(
        static_cast<const Block*>(table), ctx.tokens, rows, n_embd, scale, x);
  };
  switch (type) {
    case DType::F32:
      embed_float_kernel<<<blocks_for(values, threads), threads, 0, ctx.stream>>>(
          static_cast<const float*>(table), ctx.tokens, rows, n_embd, scale, x);
      break;
    case DType::F16:
      embed_float_kernel<<<blocks_for(values, threads), threads, 0, ctx.stream>>>(
          static_cast<const __half*>(table), ctx.tokens, rows, n_embd, scale, x);
      break;
    case DType::BF16:
      embed_float_kernel<<<blocks_for(values, threads), threads, 0, ctx.stream>>>(
          static_cast<const __nv_bfloat16*>(table), ctx.tokens, rows, n_embd, scale, x);
      break;
    case DType::Q8_0: quantized(BlockQ8_0{}); break;
    case DType::Q4_0: quantized(BlockQ4_0{}); break;
    case DType::Q4_K: quantized(BlockQ4_K{}); break;
    case DType::Q5_K: quantized(BlockQ5_K{}); break;
    case DType::Q6_K: quantized(BlockQ6_K{}); break;
    default: break;
  }
  TINYLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace tinyllm::cuda
