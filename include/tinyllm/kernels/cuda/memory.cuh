#pragma once
// Devices, device memory and the Context's life. nvcc only; included once through kernels.cuh.
#include <cstdio>
#include <string>

#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

namespace detail {
// Launched never: cudaFuncGetAttributes on it fails where the binary holds no code this device
// can run (a GPU older than the architectures it was built for).
__global__ void probe_kernel() {}
}  // namespace detail

int usable_devices(std::string* why) noexcept {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess && count > 0) {
    cudaFuncAttributes attributes;
    status = cudaFuncGetAttributes(&attributes, detail::probe_kernel);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();   // not sticky: leave no error behind for the next call to report
    if (why) *why = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device";
  return count;
}

std::string describe_device() {
  cudaDeviceProp prop;
  TINYLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char text[64];
  std::snprintf(text, sizeof text, ", sm_%d%d, %.1f GiB", prop.major, prop.minor,
                double(prop.totalGlobalMem) / double(1ull << 30));
  return prop.name + std::string(text);
}

void* alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  TINYLLM_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void release(void* device) noexcept { cudaFree(device); }

// The plain copies run on the legacy default stream, which waits for the Contexts' (blocking)
// streams: so copy_to_host sees every kernel enqueued before it, and kernels enqueued after a
// copy see its bytes.
void copy_to_device(void* device, const void* host, std::size_t bytes) {
  if (bytes > 0) TINYLLM_CUDA_CHECK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* host, const void* device, std::size_t bytes) {
  if (bytes > 0) TINYLLM_CUDA_CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}
void copy_on_device(void* to, const void* from, std::size_t bytes) {
  if (bytes > 0) TINYLLM_CUDA_CHECK(cudaMemcpy(to, from, bytes, cudaMemcpyDeviceToDevice));
}
void zero(void* device, std::size_t bytes) {
  if (bytes > 0) TINYLLM_CUDA_CHECK(cudaMemset(device, 0, bytes));
}
void synchronize() { TINYLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

Context* create_context(std::size_t max_tokens, std::size_t max_in) {
  auto* ctx = new Context;
  try {
    // A blocking stream (not cudaStreamNonBlocking): it orders itself with the default stream
    // that the plain copies above use.
    TINYLLM_CUDA_CHECK(cudaStreamCreate(&ctx->stream));
    TINYLLM_CUDA_CHECK(cublasCreate(&ctx->cublas));
    TINYLLM_CUDA_CHECK(cublasSetStream(ctx->cublas, ctx->stream));
    const std::size_t padded_in = (max_in + kActChunk - 1) / kActChunk * kActChunk;
    ctx->act_quants.reserve(max_tokens * padded_in);
    ctx->act_scales.reserve_as<ActScale>(max_tokens * padded_in / kActChunk);
    ctx->step_arrays.reserve(3 * max_tokens * sizeof(std::int32_t));
    ctx->host_positions.reserve(max_tokens);
    ctx->host_view_of_token.reserve(max_tokens);
  } catch (...) {
    destroy_context(ctx);
    throw;
  }
  return ctx;
}

void destroy_context(Context* ctx) noexcept {
  if (!ctx) return;
  if (ctx->stream) cudaStreamSynchronize(ctx->stream);
  if (ctx->cublas) cublasDestroy(ctx->cublas);
  if (ctx->stream) cudaStreamDestroy(ctx->stream);
  delete ctx;
}

}  // namespace tinyllm::cuda
