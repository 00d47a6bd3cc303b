#pragma once
// matmul: the weight type picks the kernel, the batch size picks matvec or GEMM. nvcc only.
#include <tinyllm/kernels/cuda/gemm.cuh>
#include <tinyllm/kernels/cuda/matvec.cuh>

namespace tinyllm::cuda {

// Up to this many tokens the matvec kernels run, in groups of kMatvecMaxTokens: each group reads
// the weights once (for quantized weights, 0.5 to 1 byte per weight), while the GEMM path writes
// and reads an F16 copy of them (4 bytes per weight) before its tensor cores pay off.
inline constexpr std::size_t kGemmMinTokens = 4 * kMatvecMaxTokens + 1;

bool matmul_supports(DType type) {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

void matmul(Context& ctx, DType type, const void* w, std::size_t n_out, std::size_t n_in, const float* x,
            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) {
  if (!matmul_supports(type))
    throw Error("no CUDA matmul for weight type " + std::string(name(type)), "cuda::matmul",
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  if (n_in % info(type).block_size != 0)
    throw Error("a row of " + std::to_string(n_in) + " " + std::string(name(type)) + " values", "cuda::matmul",
                "a multiple of " + std::to_string(info(type).block_size));
  if (n_tok == 0 || n_out == 0) return;
  const bool gemm = n_tok >= kGemmMinTokens;
  switch (type) {
    case DType::F32: {
      const auto* wf = static_cast<const float*>(w);
      return gemm ? gemm_f32(ctx, wf, n_out, n_in, x, x_stride, n_tok, y, y_stride)
                  : matvec_float(ctx, wf, n_out, n_in, x, x_stride, n_tok, y, y_stride);
    }
    case DType::F16:
      return gemm ? gemm_f16(ctx, w, n_out, n_in, x, x_stride, n_tok, y, y_stride)
                  : matvec_float(ctx, static_cast<const __half*>(w), n_out, n_in, x, x_stride, n_tok, y, y_stride);
    case DType::BF16:
      return gemm ? gemm_bf16(ctx, w, n_out, n_in, x, x_stride, n_tok, y, y_stride)
                  : matvec_float(ctx, static_cast<const __nv_bfloat16*>(w), n_out, n_in, x, x_stride, n_tok, y,
                                 y_stride);
    default:
      break;
  }
  auto run = [&](auto block_tag) {
    using Block = decltype(block_tag);
    const auto* wb = static_cast<const Block*>(w);
    if (gemm)
      gemm_quantized(ctx, wb, n_out, n_in, x, x_stride, n_tok, y, y_stride);
    else
      matvec_quantized(ctx, wb, n_out, n_in, x, x_stride, n_tok, y, y_stride);
  };
  switch (type) {
    case DType::Q8_0: return run(BlockQ8_0{});
    case DType::Q4_0: return run(BlockQ4_0{});
    case DType::Q4_K: return run(BlockQ4_K{});
    case DType::Q5_K: return run(BlockQ5_K{});
    case DType::Q6_K: return run(BlockQ6_K{});
    default: break;
  }
}

}  // namespace tinyllm::cuda
