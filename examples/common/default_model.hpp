#pragma once
// The programs' default model, built into them (examples/common/default_model.cpp): the GGUF
// file examples/models/stories260K.gguf, so that they work from any directory, installed or not.
#include <cstddef>
#include <span>

namespace programs {

std::span<const std::byte> default_model_gguf();

}  // namespace programs
