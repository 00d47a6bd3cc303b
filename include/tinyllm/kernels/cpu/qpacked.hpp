#pragma once
// Packed quantized weights: the layouts and packer are in qpack.hpp, the kernels in qkernel.hpp.
#include <tinyllm/kernels/cpu/qmatmul.hpp>
