#pragma once
// tinyllm: the whole library. Include this, or the headers of the layers you need.
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/reference.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/text/utf8.hpp>
#include <tinyllm/text/tokenizer.hpp>
#include <tinyllm/model/load.hpp>
#include <tinyllm/sample/sampler.hpp>
#include <tinyllm/serve/generate.hpp>
