#pragma once
// Every architecture the loader knows, by general.architecture.
#include <tuple>

#include <tinyllm/model/arch/gemma.hpp>
#include <tinyllm/model/arch/llama.hpp>
#include <tinyllm/model/arch/qwen.hpp>

namespace tinyllm {

using KnownArchs = std::tuple<Llama, Mistral, Gemma, Gemma2, Gemma3, Qwen2, Qwen3, Qwen3Moe>;

}  // namespace tinyllm
