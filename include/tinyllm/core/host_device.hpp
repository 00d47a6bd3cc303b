#pragma once
// TINYLLM_HOST_DEVICE marks a small function that both the host compiler and nvcc's device pass
// compile (a block format's decoding, f16 conversion), so that the CUDA kernels call the very
// code the reference and the CPU kernels are tested with. Empty outside nvcc.
#if defined(__CUDACC__)
#define TINYLLM_HOST_DEVICE __host__ __device__
#else
#define TINYLLM_HOST_DEVICE
#endif
