#pragma once
// y = x · wᵀ for larger batches, on the tensor cores through cuBLAS: the activations are rounded
// to the weights' 16-bit type (F16 for F16 and quantized weights, BF16 for BF16) and the products
// accumulate in f32. Quantized weights are first dequantized to F16, a tile of rows at a time,
// so the scratch stays bounded whatever the matrix. F32 weights stay in f32 (cublasSgemm).
// nvcc only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

inline constexpr std::size_t kGemmTileValues = std::size_t(1) << 25;   // F16 values of one weight tile

__device__ inline __half to_half16(float v) { return __float2half_rn(v); }
__device__ inline __nv_bfloat16 to_bf16(float v) { return __float2bfloat16_rn(v); }

// x [n_tok, n_in] (row stride x_stride) -> out [n_tok, n_in] contiguous, in T (__half or
// __nv_bfloat16).
template <class T>
__global__ void convert_rows_kernel(const float* __restrict__ x, std::size_t x_stride, std::size_t n_tok,
                                    std::size_t n_in, T* __restrict__ out) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_tok * n_in) return;
  const float v = x[(i / n_in) * x_stride + i % n_in];
  if constexpr (std::is_same_v<T, __half>) out[i] = to_half16(v); else out[i] = to_bf16(v);
}

// Rows [0, n_rows) of w (n_in values each) -> out [n_rows, n_in] F16: one thread per chunk of 32,
// written as four 16-byte stores.
template <class Block>
__global__ void dequantize_f16_kernel(const Block* __restrict__ w, std::size_t n_rows, std::size_t n_in,
                                      __half* __restrict__ out) {
  constexpr int per_block = kChunksPerBlock<Block>;
  const std::size_t chunk = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (chunk >= n_rows * (n_in / kActChunk)) return;
  const WeightChunk c = load_chunk(w[chunk / per_block], int(chunk % per_block));
  // Values l and l + 1 as one 32-bit word of two halves.
  auto pair = [&](int l) {
    const __half2 h = __halves2half2(to_half16(chunk_value(c, l)), to_half16(chunk_value(c, l + 1)));
    unsigned word;
    memcpy(&word, &h, sizeof word);
    return word;
  };
  uint4* dst = reinterpret_cast<uint4*>(out + chunk * kActChunk);
  for (int v = 0; v < 4; ++v) dst[v] = make_uint4(pair(8 * v), pair(8 * v + 2), pair(8 * v + 4), pair(8 * v + 6));
}

namespace detail {

// y [n_tok, n_out] (row stride y_stride) = x · wᵀ, w and x of the given cuBLAS types, x's rows x_ld
// apart.
inline void gemm_ex(Context& ctx, const void* w, cudaDataType w_type, std::size_t n_out, std::size_t n_in,
                    const void* x, cudaDataType x_type, std::size_t x_ld, std::size_t n_tok, float* y,
                    std::size_t y_stride) {
  const float one = 1.0f, zero = 0.0f;
  // cuBLAS is column-major: w [n_out, n_in] row-major is the n_in x n_out matrix W' and x the
  // n_in x n_tok matrix X', so y' = W'ᵀ X' is y [n_tok, n_out] row-major.
  TINYLLM_CUDA_CHECK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(n_out), int(n_tok), int(n_in), &one, w,
                                  w_type, int(n_in), x, x_type, int(x_ld), &zero, y, CUDA_R_32F, int(y_stride),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

template <class T>
const T* converted_acts(Context& ctx, const float* x, std::size_t x_stride, std::size_t n_tok, std::size_t n_in) {
  T* out = ctx.gemm_acts.reserve_as<T>(n_tok * n_in);
  convert_rows_kernel<T><<<blocks_for(n_tok * n_in, 256), 256, 0, ctx.stream>>>(x, x_stride, n_tok, n_in, out);
  TINYLLM_CUDA_CHECK_LAUNCH();
  return out;
}

}  // namespace detail

inline void gemm_f32(Context& ctx, const float* w, std::size_t n_out, std::size_t n_in, const float* x,
                     std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  const float one = 1.0f, zero = 0.0f;
  TINYLLM_CUDA_CHECK(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(n_out), int(n_tok), int(n_in), &one, w,
                                 int(n_in), x, int(x_stride), &zero, y, int(y_stride)));
}

inline void gemm_f16(Context& ctx, const void* w, std::size_t n_out, std::size_t n_in, const float* x,
                     std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  const __half* x16 = detail::converted_acts<__half>(ctx, x, x_stride, n_tok, n_in);
  detail::gemm_ex(ctx, w, CUDA_R_16F, n_out, n_in, x16, CUDA_R_16F, n_in, n_tok, y, y_stride);
}

inline void gemm_bf16(Context& ctx, const void* w, std::size_t n_out, std::size_t n_in, const float* x,
                      std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  const __nv_bfloat16* x16 = detail::converted_acts<__nv_bfloat16>(ctx, x, x_stride, n_tok, n_in);
  detail::gemm_ex(ctx, w, CUDA_R_16BF, n_out, n_in, x16, CUDA_R_16BF, n_in, n_tok, y, y_stride);
}

template <class Block>
void gemm_quantized(Context& ctx, const Block* w, std::size_t n_out, std::size_t n_in, const float* x,
                    std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  const __half* x16 = detail::converted_acts<__half>(ctx, x, x_stride, n_tok, n_in);
  // Whole multiples of 128 rows per tile keep cuBLAS on its best tiles.
  const std::size_t tile_rows = std::min(n_out, std::max<std::size_t>(128, kGemmTileValues / n_in / 128 * 128));
  __half* tile = ctx.gemm_weights.reserve_as<__half>(tile_rows * n_in);
  const std::size_t blocks_per_row = n_in / BlockFormat<Block>::values;
  for (std::size_t r0 = 0; r0 < n_out; r0 += tile_rows) {
    const std::size_t rows = std::min(tile_rows, n_out - r0);
    dequantize_f16_kernel<Block><<<blocks_for(rows * (n_in / kActChunk), 256), 256, 0, ctx.stream>>>(
        w + r0 * blocks_per_row, rows, n_in, tile);
    TINYLLM_CUDA_CHECK_LAUNCH();
    detail::gemm_ex(ctx, tile, CUDA_R_16F, rows, n_in, x16, CUDA_R_16F, n_in, n_tok, y + r0, y_stride);
  }
}

}  // namespace tinyllm::cuda
