// The bytes of examples/models/stories260K.gguf (CMake passes its path as
// TINYLLM_DEFAULT_MODEL_FILE), assembled into the read-only data of the program.
#include "default_model.hpp"

asm(".section .rodata\n"
    ".balign 64\n"
    "tinyllm_default_model_begin:\n"
    ".incbin \"" TINYLLM_DEFAULT_MODEL_FILE "\"\n"
    "tinyllm_default_model_end:\n"
    ".previous\n");

extern "C" const std::byte tinyllm_default_model_begin[];
extern "C" const std::byte tinyllm_default_model_end[];

namespace programs {

std::span<const std::byte> default_model_gguf() {
  return {tinyllm_default_model_begin, tinyllm_default_model_end};
}

}  // namespace programs
