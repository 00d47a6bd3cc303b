#pragma once
// What every kernel file shares: the error check, the device buffers that grow on demand, the
// Context (stream, cuBLAS, scratch, the step's arrays and KV tables) and the warp reductions.
// nvcc only.
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/kernels/cuda/block_dot.hpp>
#include <tinyllm/kernels/cuda/cuda.hpp>

namespace tinyllm::cuda {

namespace detail {

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw Error(std::string(call) + " failed: " + cudaGetErrorString(status),
                std::string(file) + ":" + std::to_string(line));
}

inline void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string(call) + " failed: " + cublasGetStatusString(status),
                std::string(file) + ":" + std::to_string(line));
}

}  // namespace detail

// Throws tinyllm::Error naming the call, CUDA's (or cuBLAS's) message and the place.
#define TINYLLM_CUDA_CHECK(call) ::tinyllm::cuda::detail::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, a fault at the next synchronizing call.
#define TINYLLM_CUDA_CHECK_LAUNCH() TINYLLM_CUDA_CHECK(cudaGetLastError())

// Device memory that grows on demand and never shrinks. Growing waits for the device (cudaFree
// synchronizes), so buffers are sized up front where the sizes are known and grow only on the
// rare larger call.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  void* reserve(std::size_t bytes) {
    if (bytes > bytes_) {
      if (data_) TINYLLM_CUDA_CHECK(cudaDeviceSynchronize());   // kernels may still read the old memory
      TINYLLM_CUDA_CHECK(cudaFree(data_));
      data_ = nullptr, bytes_ = 0;
      TINYLLM_CUDA_CHECK(cudaMalloc(&data_, bytes));
      bytes_ = bytes;
    }
    return data_;
  }
  template <class T>
  T* reserve_as(std::size_t count) { return static_cast<T*>(reserve(count * sizeof(T))); }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// A KVLayerView as the kernels read it: the block tables copied to device memory.
struct DeviceKVView {
  const void* const* k_blocks;   // [n_blocks] device pointers to [block_size, kv_dim] F32 or F16
  const void* const* v_blocks;
};

struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;

  // Quantized activations of matmul: quants [n_tok, n_in] and one ActScale per chunk of 32.
  DeviceBuffer act_quants, act_scales;
  // The GEMM path's operands in 16 bits: activations [n_tok, n_in] and a tile of weight rows.
  DeviceBuffer gemm_acts, gemm_weights;
  // Attention's per-split partial results, and small index lists (gather_rows).
  DeviceBuffer attention_partials, indices;

  // The step (begin_step): device arrays, and the host copies that size the launches.
  DeviceBuffer step_arrays;
  const std::int32_t* tokens = nullptr;
  const std::int32_t* positions = nullptr;
  const std::uint32_t* view_of_token = nullptr;
  std::vector<std::int32_t> host_positions;
  std::vector<std::uint32_t> host_view_of_token;

  // The layer's KV views (set_kv_views): DeviceKVView [n_views] followed by their block tables.
  DeviceBuffer kv_tables;
  const DeviceKVView* views = nullptr;
  std::size_t n_views = 0, kv_block_size = 0, kv_dim = 0;
  KVType kv_type = KVType::f32;
  std::vector<unsigned char> staging;   // host bytes of the next upload

  std::size_t n_rows() const { return host_positions.size(); }
};

inline constexpr unsigned kFullMask = 0xffffffffu;

template <int Width = 32>
__device__ inline float warp_sum(float v) {
  for (int offset = Width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset, Width);
  return v;
}
template <int Width = 32>
__device__ inline std::int32_t warp_sum(std::int32_t v) {
  for (int offset = Width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset, Width);
  return v;
}
template <int Width = 32>
__device__ inline float warp_max(float v) {
  for (int offset = Width / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset, Width));
  return v;
}

// The sum over a block of up to 1024 threads, returned to every thread. `shared` holds 32 floats;
// the block must reach this call with all its threads.
__device__ inline float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();   // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : 0.0f;
  return warp_sum(v);
}
__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

inline unsigned blocks_for(std::size_t n, unsigned threads) { return unsigned((n + threads - 1) / threads); }

// Uploads `bytes` host bytes to `device` on the context's stream. From pageable memory the copy
// has taken the bytes when it returns, so the host buffer may be reused at once.
inline void upload(Context& ctx, void* device, const void* host, std::size_t bytes) {
  if (bytes > 0)
    TINYLLM_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, ctx.stream));
}

}  // namespace tinyllm::cuda
