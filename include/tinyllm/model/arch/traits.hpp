#pragma once
// The vocabulary of architecture traits. An architecture is a struct of these constants; the
// transformer is written once against them and `if constexpr` drops what a model does not use.
// Each enum grows as architectures that need a new behaviour arrive.

namespace tinyllm {

enum class Norm { rms };     // RMSNorm with the weights applied as stored
enum class Ffn { swiglu };   // gated FFN: down(silu(gate(x)) * up(x))

}  // namespace tinyllm
