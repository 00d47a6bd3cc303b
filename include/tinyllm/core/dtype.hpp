#pragma once
// Element and block types, numbered as GGUF (ggml_type) numbers them. The table gives each type's
// block size (elements per block) and bytes per block, so any tensor's byte size can be checked
// even when no kernel for its type exists yet.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

enum class DType : std::uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35,
};

struct DTypeInfo {
  std::string_view name;
  std::uint32_t block_size = 0;   // elements per block; 0 = not a known type
  std::uint32_t block_bytes = 0;  // bytes per block
};

inline constexpr std::uint32_t kMaxDTypeId = 36;

inline constexpr std::array<DTypeInfo, kMaxDTypeId> kDTypeTable = [] {
  std::array<DTypeInfo, kMaxDTypeId> t{};
  auto set = [&](DType d, std::string_view n, std::uint32_t bs, std::uint32_t bb) {
    t[static_cast<std::uint32_t>(d)] = {n, bs, bb};
  };
  set(DType::F32, "F32", 1, 4);        set(DType::F16, "F16", 1, 2);
  set(DType::Q4_0, "Q4_0", 32, 18);    set(DType::Q4_1, "Q4_1", 32, 20);
  set(DType::Q5_0, "Q5_0", 32, 22);    set(DType::Q5_1, "Q5_1", 32, 24);
  set(DType::Q8_0, "Q8_0", 32, 34);    set(DType::Q8_1, "Q8_1", 32, 36);
  set(DType::Q2_K, "Q2_K", 256, 84);   set(DType::Q3_K, "Q3_K", 256, 110);
  set(DType::Q4_K, "Q4_K", 256, 144);  set(DType::Q5_K, "Q5_K", 256, 176);
  set(DType::Q6_K, "Q6_K", 256, 210);  set(DType::Q8_K, "Q8_K", 256, 292);
  set(DType::IQ2_XXS, "IQ2_XXS", 256, 66); set(DType::IQ2_XS, "IQ2_XS", 256, 74);
  set(DType::IQ3_XXS, "IQ3_XXS", 256, 98); set(DType::IQ1_S, "IQ1_S", 256, 50);
  set(DType::IQ4_NL, "IQ4_NL", 32, 18);    set(DType::IQ3_S, "IQ3_S", 256, 110);
  set(DType::IQ2_S, "IQ2_S", 256, 82);     set(DType::IQ4_XS, "IQ4_XS", 256, 136);
  set(DType::I8, "I8", 1, 1);   set(DType::I16, "I16", 1, 2);  set(DType::I32, "I32", 1, 4);
  set(DType::I64, "I64", 1, 8); set(DType::F64, "F64", 1, 8);
  set(DType::IQ1_M, "IQ1_M", 256, 56);     set(DType::BF16, "BF16", 1, 2);
  set(DType::TQ1_0, "TQ1_0", 256, 54);     set(DType::TQ2_0, "TQ2_0", 256, 66);
  return t;
}();

// The info of a raw type id, or nullopt for an id no GGUF writer uses.
inline std::optional<DTypeInfo> dtype_info(std::uint32_t id) {
  if (id >= kMaxDTypeId || kDTypeTable[id].block_size == 0) return std::nullopt;
  return kDTypeTable[id];
}

inline const DTypeInfo& info(DType d) {
  const auto id = static_cast<std::uint32_t>(d);
  if (id >= kMaxDTypeId || kDTypeTable[id].block_size == 0)
    throw Error("unknown tensor type id " + std::to_string(id));
  return kDTypeTable[id];
}

inline std::string_view name(DType d) { return info(d).name; }

// Bytes taken by one row of n elements; n must be a multiple of the block size.
inline std::size_t row_bytes(DType d, std::size_t n) {
  const auto& i = info(d);
  return n / i.block_size * i.block_bytes;
}

}  // namespace tinyllm
