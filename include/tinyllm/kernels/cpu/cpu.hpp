#pragma once
// Every CPU (Highway) kernel.
#include <tinyllm/kernels/cpu/activation.hpp>
#include <tinyllm/kernels/cpu/attention.hpp>
#include <tinyllm/kernels/cpu/matmul.hpp>
#include <tinyllm/kernels/cpu/norm.hpp>
#include <tinyllm/kernels/cpu/rope.hpp>
#include <tinyllm/kernels/cpu/softmax.hpp>
