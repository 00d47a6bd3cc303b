#pragma once
// tinyllm: the whole library. Include this, or the headers of the layers you need.
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/core/thread_pool.hpp>
