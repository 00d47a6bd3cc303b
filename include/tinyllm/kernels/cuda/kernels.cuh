#pragma once
// Every CUDA kernel and the definitions of every function cuda.hpp declares. Include this file in
// exactly one .cu file of a program (CMake's TINYLLM_CUDA option builds one as tinyllm::cuda);
// the rest of the program includes cuda.hpp. Compile with -std=c++20 --expt-relaxed-constexpr
// (the shared host-device code calls std::bit_cast).
#include <tinyllm/kernels/cuda/cuda.hpp>

#include <tinyllm/kernels/cuda/common.cuh>
#include <tinyllm/kernels/cuda/memory.cuh>
#include <tinyllm/kernels/cuda/quantize.cuh>
#include <tinyllm/kernels/cuda/matvec.cuh>
#include <tinyllm/kernels/cuda/gemm.cuh>
#include <tinyllm/kernels/cuda/matmul.cuh>
#include <tinyllm/kernels/cuda/norm.cuh>
#include <tinyllm/kernels/cuda/elementwise.cuh>
#include <tinyllm/kernels/cuda/rope.cuh>
#include <tinyllm/kernels/cuda/embed.cuh>
#include <tinyllm/kernels/cuda/kv.cuh>
#include <tinyllm/kernels/cuda/attention.cuh>
