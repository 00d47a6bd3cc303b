#pragma once
// The quant/ layer: GGUF block formats to and from f32.
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>
