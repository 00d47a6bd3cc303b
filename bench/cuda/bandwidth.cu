// Device memory read bandwidth: a kernel that reads a 4 GiB buffer with 16-byte loads, timed
// with CUDA events over several passes. The figure a memory-bound matvec can at best approach.
//   nvcc -O2 -arch=sm_90 bench/cuda/bandwidth.cu -o bandwidth && ./bandwidth [GiB]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK(call)                                                                          \
  do {                                                                                       \
    const cudaError_t status = (call);                                                       \
    if (status != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(status));            \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

// Each thread XORs the 16-byte words it reads; the result is stored only when it equals a value
// the buffer (all zeros) cannot produce, so no write traffic counts but the loads cannot be
// dropped by the compiler.
__global__ void read_kernel(const uint4* __restrict__ data, size_t n, unsigned* sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = data[i];
    acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
  }
  if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) *sink = 1;
}

int main(int argc, char** argv) {
  const double gib = argc > 1 ? std::atof(argv[1]) : 4.0;
  const size_t bytes = size_t(gib * double(1ull << 30)) / 16 * 16, n = bytes / 16;
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  uint4* data = nullptr;
  unsigned* sink = nullptr;
  CHECK(cudaMalloc(&data, bytes));
  CHECK(cudaMalloc(&sink, sizeof(unsigned)));
  CHECK(cudaMemset(data, 0, bytes));
  const int threads = 512, blocks = prop.multiProcessorCount * 8;
  read_kernel<<<blocks, threads>>>(data, n, sink);   // warm-up
  CHECK(cudaGetLastError());
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  const int passes = 10;
  CHECK(cudaEventRecord(start));
  for (int p = 0; p < passes; ++p) read_kernel<<<blocks, threads>>>(data, n, sink);
  CHECK(cudaEventRecord(stop));
  CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  std::printf("%s: read %.2f GiB x %d passes in %.1f ms: %.0f GB/s\n", prop.name, double(bytes) / double(1ull << 30),
              passes, ms, double(bytes) * passes / (ms * 1e-3) / 1e9);
  CHECK(cudaFree(data));
  CHECK(cudaFree(sink));
  return 0;
}
