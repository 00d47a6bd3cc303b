#pragma once
// GGUF: the reader (versions 2 and 3; typed metadata and zero-copy tensor views into the mapped
// file) and the writer (version 3).
//
// Layout, all little-endian:
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv    x { string key | u32 value type | value }
//   n_tensors x { string name | u32 n_dims | u64 dims[n_dims] (ne order) | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | tensor data, each tensor at data start + offset
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements (arrays of
// arrays allowed). Every count, length, offset, dimension and type id is checked before use.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/io/byte_reader.hpp>

namespace tinyllm {

enum class GGUFType : std::uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

inline constexpr std::uint32_t kGGUFTypeCount = 13;
inline constexpr std::uint32_t kGGUFMagic = 0x46554747;  // the bytes "GGUF" read as a little-endian u32
inline constexpr std::uint32_t kGGUFDefaultAlignment = 32;
inline constexpr std::string_view kGGUFAlignmentKey = "general.alignment";
// Array values in a file's metadata, all arrays together: a 262k-token vocabulary with scores,
// types and 500k merges holds about 1.3M.
inline constexpr std::uint64_t kGGUFMaxMetadataValues = std::uint64_t{1} << 23;
inline constexpr std::size_t kGGUFMaxKeyBytes = 65535;       // the spec's limit
inline constexpr std::size_t kGGUFMaxTensorNameBytes = 64;   // the spec's limit
inline constexpr int kGGUFMaxArrayDepth = 16;                // bounds the reader's recursion

inline std::string_view gguf_type_name(GGUFType t) {
  static constexpr std::array<std::string_view, kGGUFTypeCount> names{
      "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
      "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  const auto id = static_cast<std::uint32_t>(t);
  return id < kGGUFTypeCount ? names[id] : "unknown";
}

// The fewest bytes one value of this type takes in a file. An array count times this must fit in
// what is left of the file, which rejects a huge count before anything is allocated.
inline std::uint64_t gguf_min_value_bytes(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::BOOL: return 1;
    case GGUFType::UINT16: case GGUFType::INT16: return 2;
    case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::FLOAT32: return 4;
    case GGUFType::UINT64: case GGUFType::INT64: case GGUFType::FLOAT64: return 8;
    case GGUFType::STRING: return 8;   // the length
    case GGUFType::ARRAY: return 12;   // element type + count
  }
  return 1;
}

inline bool gguf_is_integer(GGUFType t) {
  return t <= GGUFType::INT32 || t == GGUFType::UINT64 || t == GGUFType::INT64;
}

// One metadata value: a scalar, a string, or an array of values of one type (arrays nest).
class GGUFValue {
 public:
  // An array keeps its element type so that an empty array still has one.
  struct Array {
    GGUFType type = GGUFType::UINT8;
    std::vector<GGUFValue> items;
    bool operator==(const Array&) const = default;
  };

  static GGUFValue uint8(std::uint8_t v) { return GGUFValue(v); }
  static GGUFValue int8(std::int8_t v) { return GGUFValue(v); }
  static GGUFValue uint16(std::uint16_t v) { return GGUFValue(v); }
  static GGUFValue int16(std::int16_t v) { return GGUFValue(v); }
  static GGUFValue uint32(std::uint32_t v) { return GGUFValue(v); }
  static GGUFValue int32(std::int32_t v) { return GGUFValue(v); }
  static GGUFValue float32(float v) { return GGUFValue(v); }
  static GGUFValue boolean(bool v) { return GGUFValue(v); }
  static GGUFValue string(std::string v) { return GGUFValue(std::move(v)); }
  static GGUFValue uint64(std::uint64_t v) { return GGUFValue(v); }
  static GGUFValue int64(std::int64_t v) { return GGUFValue(v); }
  static GGUFValue float64(double v) { return GGUFValue(v); }
  // Throws unless every item has type `type`.
  static GGUFValue array(GGUFType type, std::vector<GGUFValue> items) {
    if (static_cast<std::uint32_t>(type) >= kGGUFTypeCount)
      throw Error("unknown GGUF array element type id " +
                  std::to_string(static_cast<std::uint32_t>(type)), "GGUFValue::array", "0 to 12");
    for (const auto& item : items)
      if (item.type() != type)
        throw Error("a GGUF array of " + std::string(gguf_type_name(type)) + " was given a " +
                    std::string(gguf_type_name(item.type())) + " item", "GGUFValue::array");
    return GGUFValue(Array{type, std::move(items)});
  }

  // The variant's alternatives are listed in GGUFType order, so the index is the type id.
  GGUFType type() const noexcept { return static_cast<GGUFType>(value_.index()); }

  // T is the C++ type of type(): std::uint8_t ... double, bool, std::string or Array.
  template <class T>
  const T& as() const {
    if (const T* p = std::get_if<T>(&value_)) return *p;
    throw Error("GGUF value of type " + std::string(gguf_type_name(type())) +
                " read as another type", "GGUFValue::as");
  }
  const std::vector<GGUFValue>& items() const { return as<Array>().items; }
  GGUFType array_type() const { return as<Array>().type; }

  bool is_integer() const noexcept { return gguf_is_integer(type()); }
  // The value when it is an integer of any width that fits in Int; nullopt otherwise.
  template <class Int>
  std::optional<Int> to_integer() const {
    return std::visit([](const auto& v) -> std::optional<Int> {
      using V = std::decay_t<decltype(v)>;
      if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
        if (std::in_range<Int>(v)) return static_cast<Int>(v);
      }
      return std::nullopt;
    }, value_);
  }

  bool operator==(const GGUFValue&) const = default;

 private:
  using Storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t,
                               std::uint32_t, std::int32_t, float, bool, std::string, Array,
                               std::uint64_t, std::int64_t, double>;
  template <class T>
  explicit GGUFValue(T v) : value_(std::in_place_type<T>, std::move(v)) {}

  Storage value_;
};

class GGUFFile {
 public:
  // Maps the file; tensor views point into the mapping, which lives as long as this object.
  static GGUFFile open(const std::string& path) {
    MappedFile file(path);
    GGUFFile f = parse(file.bytes(), path);
    f.file_ = std::move(file);  // moving a mapping keeps its address, so the views stay valid
    return f;
  }
  // Does not own `bytes`: they must outlive the GGUFFile. `name` is used in error messages.
  static GGUFFile parse(std::span<const std::byte> bytes, std::string name);

  std::uint32_t version() const noexcept { return version_; }
  std::size_t alignment() const noexcept { return alignment_; }
  std::size_t data_offset() const noexcept { return data_offset_; }
  const std::string& name() const noexcept { return name_; }
  // Lets the mapped pages of [p, p + n) go from resident memory (MappedFile::release); nothing
  // for a file parsed from caller-owned bytes.
  void release_pages(const void* p, std::size_t n) const noexcept { file_.release(p, n); }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }

  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const noexcept { return metadata_; }
  const GGUFValue* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters throw an Error naming the key and the file when the key is missing or its value
  // has another type. Integer getters take any integer type whose value fits.
  std::uint32_t get_u32(std::string_view key) const { return integer<std::uint32_t>(key, require(key)); }
  std::uint32_t get_u32_or(std::string_view key, std::uint32_t dflt) const {
    const GGUFValue* v = find(key);
    return v ? integer<std::uint32_t>(key, *v) : dflt;
  }
  std::uint64_t get_u64(std::string_view key) const { return integer<std::uint64_t>(key, require(key)); }
  float get_f32(std::string_view key) const { return real(key, require(key)); }
  float get_f32_or(std::string_view key, float dflt) const {
    const GGUFValue* v = find(key);
    return v ? real(key, *v) : dflt;
  }
  bool get_bool_or(std::string_view key, bool dflt) const {
    const GGUFValue* v = find(key);
    if (!v) return dflt;
    if (v->type() != GGUFType::BOOL) wrong_type(key, *v, "BOOL");
    return v->as<bool>();
  }
  std::string get_string(std::string_view key) const {
    const GGUFValue& v = require(key);
    if (v.type() != GGUFType::STRING) wrong_type(key, v, "STRING");
    return v.as<std::string>();
  }
  std::vector<std::string> get_string_array(std::string_view key) const {
    const auto& items = array(key, GGUFType::STRING);
    std::vector<std::string> out;
    out.reserve(items.size());
    for (const auto& item : items) out.push_back(item.as<std::string>());
    return out;
  }
  std::vector<float> get_f32_array(std::string_view key) const {
    const auto& items = array(key, GGUFType::FLOAT32);
    std::vector<float> out;
    out.reserve(items.size());
    for (const auto& item : items) out.push_back(item.as<float>());
    return out;
  }
  std::vector<std::int32_t> get_i32_array(std::string_view key) const {
    const GGUFValue& v = require(key);
    if (v.type() != GGUFType::ARRAY || !gguf_is_integer(v.array_type()))
      wrong_type(key, v, "an ARRAY of integers");
    std::vector<std::int32_t> out;
    out.reserve(v.items().size());
    for (const auto& item : v.items()) out.push_back(integer<std::int32_t>(key, item));
    return out;
  }

  const std::vector<TensorView>& tensors() const noexcept { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  const TensorView& tensor(std::string_view name) const {
    if (const TensorView* t = find_tensor(name)) return *t;
    throw Error("no tensor named '" + std::string(name) + "'", name_);
  }

 private:
  GGUFFile() = default;

  const GGUFValue& require(std::string_view key) const {
    if (const GGUFValue* v = find(key)) return *v;
    throw Error("missing metadata key '" + std::string(key) + "'", name_);
  }
  [[noreturn]] void wrong_type(std::string_view key, const GGUFValue& v,
                               const std::string& expected) const {
    std::string type(gguf_type_name(v.type()));
    if (v.type() == GGUFType::ARRAY) type += " of " + std::string(gguf_type_name(v.array_type()));
    throw Error("metadata key '" + std::string(key) + "' has type " + type, name_, expected);
  }
  template <class Int>
  Int integer(std::string_view key, const GGUFValue& v) const {
    if (const auto x = v.to_integer<Int>()) return *x;
    const std::string expected = "an integer that fits in " + std::to_string(sizeof(Int) * 8) +
                                 (std::is_signed_v<Int> ? "-bit signed" : "-bit unsigned");
    if (!v.is_integer()) wrong_type(key, v, expected);
    throw Error("metadata key '" + std::string(key) + "' holds an integer out of range", name_, expected);
  }
  float real(std::string_view key, const GGUFValue& v) const {
    if (v.type() == GGUFType::FLOAT32) return v.as<float>();
    if (v.type() == GGUFType::FLOAT64) return static_cast<float>(v.as<double>());
    wrong_type(key, v, "FLOAT32");
  }
  const std::vector<GGUFValue>& array(std::string_view key, GGUFType type) const {
    const GGUFValue& v = require(key);
    if (v.type() != GGUFType::ARRAY || v.array_type() != type)
      wrong_type(key, v, "an ARRAY of " + std::string(gguf_type_name(type)));
    return v.items();
  }

  static std::string read_string(ByteReader& r, const std::string& field);
  static GGUFType read_type(ByteReader& r, const std::string& field);
  static GGUFValue read_value(ByteReader& r, GGUFType type, const std::string& field, int depth,
                              std::uint64_t& values_left);
  void read_metadata(ByteReader& r, std::uint64_t n_kv);
  void read_tensor_infos(ByteReader& r, std::uint64_t n_tensors);

  MappedFile file_;  // empty when parsed from caller-owned bytes
  std::span<const std::byte> bytes_;
  std::string name_;
  std::uint32_t version_ = 0;
  std::size_t alignment_ = kGGUFDefaultAlignment;
  std::size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

inline GGUFFile GGUFFile::parse(std::span<const std::byte> bytes, std::string name) {
  // Each key-value pair takes at least a length, one key byte, a type and a one-byte value; each
  // tensor info at least a length, one name byte, n_dims, one dimension, a type and an offset.
  constexpr std::uint64_t kMinKVBytes = 8 + 1 + 4 + 1, kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

  GGUFFile f;
  f.bytes_ = bytes;
  f.name_ = std::move(name);
  ByteReader r(bytes, f.name_);

  const auto magic = r.read<std::uint32_t>("magic");
  if (magic != kGGUFMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    r.fail_at(0, std::string("bad magic ") + hex + ": not a GGUF file", "\"GGUF\" (0x46554747)");
  }
  f.version_ = r.read<std::uint32_t>("version");
  if (f.version_ != 2 && f.version_ != 3) {
    const std::uint32_t swapped = __builtin_bswap32(f.version_);
    if (swapped == 2 || swapped == 3)
      r.fail_at(4, "big-endian GGUF files are not supported (version field byte-swapped)",
                "a little-endian GGUF file");
    r.fail_at(4, "unsupported GGUF version " + std::to_string(f.version_) +
                     (f.version_ == 1 ? " (version 1 used 32-bit counts and lengths)" : ""),
              "version 2 or 3");
  }
  const auto n_tensors = r.read<std::uint64_t>("tensor count");
  const auto n_kv = r.read<std::uint64_t>("metadata count");
  if (n_kv > r.remaining() / kMinKVBytes)
    r.fail_at(16, "metadata count " + std::to_string(n_kv) + " is more than the remaining " +
                      std::to_string(r.remaining()) + " bytes can hold",
              "at most " + std::to_string(r.remaining() / kMinKVBytes));
  f.read_metadata(r, n_kv);
  if (n_tensors > r.remaining() / kMinTensorInfoBytes)
    r.fail_at(8, "tensor count " + std::to_string(n_tensors) + " is more than the " +
                     std::to_string(r.remaining()) + " bytes after the metadata can hold",
              "at most " + std::to_string(r.remaining() / kMinTensorInfoBytes));
  f.read_tensor_infos(r, n_tensors);
  return f;
}

inline std::string GGUFFile::read_string(ByteReader& r, const std::string& field) {
  const std::size_t at = r.offset();
  const auto len = r.read<std::uint64_t>(field + " length");
  if (len > r.remaining())
    r.fail_at(at, field + " string length " + std::to_string(len) + " runs past the end of the file",
              "at most the " + std::to_string(r.remaining()) + " bytes left");
  const auto s = r.take(len, field);
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

inline GGUFType GGUFFile::read_type(ByteReader& r, const std::string& field) {
  const std::size_t at = r.offset();
  const auto id = r.read<std::uint32_t>(field + " value type");
  if (id >= kGGUFTypeCount)
    r.fail_at(at, field + " has unknown value type id " + std::to_string(id), "0 to 12");
  return static_cast<GGUFType>(id);
}

inline GGUFValue GGUFFile::read_value(ByteReader& r, GGUFType type, const std::string& field,
                                      int depth, std::uint64_t& values_left) {
  switch (type) {
    case GGUFType::UINT8: return GGUFValue::uint8(r.read<std::uint8_t>(field));
    case GGUFType::INT8: return GGUFValue::int8(r.read<std::int8_t>(field));
    case GGUFType::UINT16: return GGUFValue::uint16(r.read<std::uint16_t>(field));
    case GGUFType::INT16: return GGUFValue::int16(r.read<std::int16_t>(field));
    case GGUFType::UINT32: return GGUFValue::uint32(r.read<std::uint32_t>(field));
    case GGUFType::INT32: return GGUFValue::int32(r.read<std::int32_t>(field));
    case GGUFType::FLOAT32: return GGUFValue::float32(r.read<float>(field));
    case GGUFType::UINT64: return GGUFValue::uint64(r.read<std::uint64_t>(field));
    case GGUFType::INT64: return GGUFValue::int64(r.read<std::int64_t>(field));
    case GGUFType::FLOAT64: return GGUFValue::float64(r.read<double>(field));
    case GGUFType::BOOL: {
      const std::size_t at = r.offset();
      const auto b = r.read<std::uint8_t>(field);
      if (b > 1) r.fail_at(at, field + " is a bool of value " + std::to_string(b), "0 or 1");
      return GGUFValue::boolean(b == 1);
    }
    case GGUFType::STRING: return GGUFValue::string(read_string(r, field));
    case GGUFType::ARRAY: {
      if (depth == kGGUFMaxArrayDepth)
        r.fail_at(r.offset(), field + " nests arrays too deep (nesting depth limit)",
                  "at most " + std::to_string(kGGUFMaxArrayDepth) + " levels");
      const GGUFType elem = read_type(r, field + " array element");
      const std::size_t count_at = r.offset();
      const auto n = r.read<std::uint64_t>(field + " array count");
      if (n > r.remaining() / gguf_min_value_bytes(elem))
        r.fail_at(count_at, field + " array count " + std::to_string(n) + " of " +
                                std::string(gguf_type_name(elem)) + " is more than the remaining " +
                                std::to_string(r.remaining()) + " bytes can hold");
      // Each value takes far more memory than its bytes in the file: a budget bounds the metadata.
      if (n > values_left)
        r.fail_at(count_at, field + " array count " + std::to_string(n) + " exceeds the metadata's budget of " +
                                std::to_string(kGGUFMaxMetadataValues) + " array values in all",
                  "fewer array values");
      values_left -= n;
      std::vector<GGUFValue> items;
      items.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) items.push_back(read_value(r, elem, field, depth + 1, values_left));
      return GGUFValue::array(elem, std::move(items));
    }
  }
  r.fail_at(r.offset(), field + " has unknown value type id " +
                            std::to_string(static_cast<std::uint32_t>(type)), "0 to 12");
}

inline void GGUFFile::read_metadata(ByteReader& r, std::uint64_t n_kv) {
  metadata_.reserve(static_cast<std::size_t>(n_kv));
  std::uint64_t values_left = kGGUFMaxMetadataValues;
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    const std::size_t key_at = r.offset();
    std::string key = read_string(r, "metadata key");
    if (key.empty() || key.size() > kGGUFMaxKeyBytes)
      r.fail_at(key_at, "metadata key length " + std::to_string(key.size()), "1 to 65535 bytes");
    if (key_index_.contains(key)) r.fail_at(key_at, "duplicate metadata key '" + key + "'");
    const std::string field = "metadata '" + key + "'";
    const GGUFType type = read_type(r, field);
    const std::size_t value_at = r.offset();
    GGUFValue value = read_value(r, type, field, 0, values_left);
    if (key == kGGUFAlignmentKey) {
      const auto a = value.to_integer<std::uint32_t>();
      // The spec asks for a multiple of 8: blocks and F16/F32 values are then aligned in memory.
      if (!a || *a < 8 || (*a & (*a - 1)) != 0)
        r.fail_at(value_at, "general.alignment is not a power of two of at least 8",
                  "a power of two from 8 up, as UINT32");
      alignment_ = *a;
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }
}

inline void GGUFFile::read_tensor_infos(ByteReader& r, std::uint64_t n_tensors) {
  constexpr std::uint64_t kMaxElements = std::uint64_t(INT64_MAX);  // ggml counts in int64_t
  struct Placement { std::uint64_t offset; std::size_t offset_at; };
  std::vector<Placement> placements;
  placements.reserve(static_cast<std::size_t>(n_tensors));
  tensors_.reserve(static_cast<std::size_t>(n_tensors));

  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    TensorView t;
    const std::size_t name_at = r.offset();
    t.name = read_string(r, "tensor name");
    if (t.name.empty() || t.name.size() > kGGUFMaxTensorNameBytes)
      r.fail_at(name_at, "tensor name length " + std::to_string(t.name.size()), "1 to 64 bytes");
    if (tensor_index_.contains(t.name)) r.fail_at(name_at, "duplicate tensor name '" + t.name + "'");
    const std::string field = "tensor '" + t.name + "'";

    const std::size_t n_dims_at = r.offset();
    t.n_dims = r.read<std::uint32_t>(field + " n_dims");
    if (t.n_dims == 0 || t.n_dims > 4)
      r.fail_at(n_dims_at, field + " has n_dims " + std::to_string(t.n_dims), "1 to 4");
    std::uint64_t n_elements = 1;
    for (std::uint32_t d = 0; d < t.n_dims; ++d) {
      const std::size_t dim_at = r.offset();
      t.dims[d] = r.read<std::uint64_t>(field + " dimension");
      if (t.dims[d] == 0 || t.dims[d] > kMaxElements)
        r.fail_at(dim_at, field + " dimension " + std::to_string(d) + " is " +
                              std::to_string(t.dims[d]), "1 to 2^63-1");
      const auto product = checked_mul(n_elements, t.dims[d]);
      if (!product || *product > kMaxElements)
        r.fail_at(dim_at, field + " has dimensions whose product overflows", "at most 2^63-1 elements");
      n_elements = *product;
    }

    const std::size_t type_at = r.offset();
    const auto type_id = r.read<std::uint32_t>(field + " type");
    const auto info = dtype_info(type_id);
    if (!info) r.fail_at(type_at, field + " has unknown tensor type id " + std::to_string(type_id));
    t.dtype = static_cast<DType>(type_id);
    if (t.dims[0] % info->block_size != 0)
      r.fail_at(n_dims_at + 4, field + " dimension 0 (" + std::to_string(t.dims[0]) +
                                   ") is not a multiple of the " + std::string(info->name) +
                                   " block size " + std::to_string(info->block_size));
    const auto n_bytes = checked_mul(n_elements / info->block_size, info->block_bytes);
    if (!n_bytes) r.fail_at(n_dims_at + 4, field + " byte size overflows");
    t.n_bytes = static_cast<std::size_t>(*n_bytes);

    const std::size_t offset_at = r.offset();
    const auto offset = r.read<std::uint64_t>(field + " data offset");
    if (offset % alignment_ != 0)
      r.fail_at(offset_at, field + " data offset " + std::to_string(offset) +
                               " is not a multiple of the alignment " + std::to_string(alignment_));
    placements.push_back({offset, offset_at});
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the first aligned offset after the tensor infos.
  data_offset_ = (r.offset() + alignment_ - 1) / alignment_ * alignment_;
  const std::uint64_t data_size = r.size() > data_offset_ ? r.size() - data_offset_ : 0;
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    TensorView& t = tensors_[i];
    const Placement& p = placements[i];
    if (p.offset > data_size || t.n_bytes > data_size - p.offset)
      r.fail_at(p.offset_at, "tensor '" + t.name + "' data (offset " + std::to_string(p.offset) +
                                 ", " + std::to_string(t.n_bytes) +
                                 " bytes) lies past the end of the file",
                "within the " + std::to_string(data_size) + " bytes of the data section");
    t.data = bytes_.data() + data_offset_ + p.offset;
  }

  // Tensors may come in any order but must not share bytes.
  std::vector<std::size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return placements[a].offset < placements[b].offset; });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const std::size_t prev = order[k - 1], cur = order[k];
    if (placements[prev].offset + tensors_[prev].n_bytes > placements[cur].offset)
      r.fail_at(placements[cur].offset_at, "tensor '" + tensors_[cur].name +
                                               "' data overlaps tensor '" + tensors_[prev].name + "'");
  }
}

// The writer checks what it is given as strictly as GGUFFile checks what it reads, so whatever
// it writes reads back. Tensors are copied in; each one's data starts at a multiple of the
// alignment. For synthetic test and benchmark models and for converters.
class GGUFWriter {
 public:
  // general.alignment is written only when it differs from GGUF's default of 32.
  explicit GGUFWriter(std::uint32_t alignment = kGGUFDefaultAlignment) : alignment_(alignment) {
    if (alignment < 8 || (alignment & (alignment - 1)) != 0)
      throw Error("GGUF alignment " + std::to_string(alignment), "GGUFWriter", "a power of two from 8 up");
  }

  // Sets a key; a key set twice keeps its first position and its last value.
  void set(std::string key, GGUFValue value) {
    if (key.empty() || key.size() > kGGUFMaxKeyBytes)
      throw Error("metadata key length " + std::to_string(key.size()), "GGUFWriter", "1 to 65535 bytes");
    if (key == kGGUFAlignmentKey)
      throw Error("general.alignment is set by the GGUFWriter constructor", "GGUFWriter");
    if (array_depth(value) > kGGUFMaxArrayDepth)
      throw Error("metadata '" + key + "' nests arrays too deep", "GGUFWriter",
                  "at most " + std::to_string(kGGUFMaxArrayDepth) + " levels");
    for (auto& [k, v] : metadata_)
      if (k == key) { v = std::move(value); return; }
    metadata_.emplace_back(std::move(key), std::move(value));
  }
  void set_u32(std::string key, std::uint32_t v) { set(std::move(key), GGUFValue::uint32(v)); }
  void set_i32(std::string key, std::int32_t v) { set(std::move(key), GGUFValue::int32(v)); }
  void set_u64(std::string key, std::uint64_t v) { set(std::move(key), GGUFValue::uint64(v)); }
  void set_f32(std::string key, float v) { set(std::move(key), GGUFValue::float32(v)); }
  void set_bool(std::string key, bool v) { set(std::move(key), GGUFValue::boolean(v)); }
  void set_string(std::string key, std::string v) { set(std::move(key), GGUFValue::string(std::move(v))); }
  void set_string_array(std::string key, std::span<const std::string> v) {
    set(std::move(key), array_of(GGUFType::STRING, v, GGUFValue::string));
  }
  void set_f32_array(std::string key, std::span<const float> v) {
    set(std::move(key), array_of(GGUFType::FLOAT32, v, GGUFValue::float32));
  }
  void set_i32_array(std::string key, std::span<const std::int32_t> v) {
    set(std::move(key), array_of(GGUFType::INT32, v, GGUFValue::int32));
  }

  // dims in ne order (dims[0] fastest); n_bytes must be exactly the size those dims and type need.
  void add_tensor(std::string name, DType type, std::vector<std::uint64_t> dims, const void* data,
                  std::size_t n_bytes) {
    const std::string where = "GGUFWriter, tensor '" + name + "'";
    if (name.empty() || name.size() > kGGUFMaxTensorNameBytes)
      throw Error("tensor name length " + std::to_string(name.size()), where, "1 to 64 bytes");
    for (const auto& t : tensors_)
      if (t.name == name) throw Error("duplicate tensor name", where);
    if (dims.empty() || dims.size() > 4)
      throw Error(std::to_string(dims.size()) + " dimensions", where, "1 to 4");
    const DTypeInfo& ti = info(type);
    std::uint64_t n_elements = 1;
    for (const auto d : dims) {
      const auto product = checked_mul(n_elements, d);
      if (d == 0 || !product || *product > std::uint64_t(INT64_MAX))
        throw Error("a dimension is 0 or the dimensions' product overflows", where);
      n_elements = *product;
    }
    if (dims[0] % ti.block_size != 0)
      throw Error("dimension 0 (" + std::to_string(dims[0]) + ") is not a multiple of the " +
                  std::string(ti.name) + " block size " + std::to_string(ti.block_size), where);
    const std::uint64_t expected = n_elements / ti.block_size * ti.block_bytes;
    if (n_bytes != expected)
      throw Error("tensor data is " + std::to_string(n_bytes) + " bytes", where,
                  std::to_string(expected) + " bytes for these dimensions and type");
    const auto* p = static_cast<const std::byte*>(data);
    tensors_.push_back({std::move(name), type, std::move(dims), std::vector<std::byte>(p, p + n_bytes)});
  }

  std::vector<std::byte> to_bytes() const {
    std::vector<std::byte> out = header();
    for (const auto& t : tensors_) {
      out.insert(out.end(), t.data.begin(), t.data.end());
      out.resize(padded(out.size()));
    }
    return out;
  }

  // Streams to the file: memory stays at the tensors already held, not twice that.
  void write(const std::string& path) const {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) throw Error(std::string("cannot create file: ") + std::strerror(errno), path);
    const std::vector<std::byte> head = header();
    const std::vector<std::byte> zeros(alignment_);
    bool written = std::fwrite(head.data(), 1, head.size(), f) == head.size();
    for (const auto& t : tensors_) {
      const std::size_t pad = padded(t.data.size()) - t.data.size();
      written = written && std::fwrite(t.data.data(), 1, t.data.size(), f) == t.data.size() &&
                std::fwrite(zeros.data(), 1, pad, f) == pad;
    }
    const bool closed = std::fclose(f) == 0;
    if (!written || !closed) throw Error(std::string("cannot write file: ") + std::strerror(errno), path);
  }

 private:
  // Everything before the data section: magic, version, counts, metadata, tensor infos, padding.
  std::vector<std::byte> header() const {
    std::vector<std::byte> out;
    const bool write_alignment = alignment_ != kGGUFDefaultAlignment;
    put<std::uint32_t>(out, kGGUFMagic);
    put<std::uint32_t>(out, 3);
    put<std::uint64_t>(out, tensors_.size());
    put<std::uint64_t>(out, metadata_.size() + (write_alignment ? 1 : 0));
    if (write_alignment) put_kv(out, kGGUFAlignmentKey, GGUFValue::uint32(alignment_));
    for (const auto& [key, value] : metadata_) put_kv(out, key, value);

    std::uint64_t offset = 0;  // relative to the start of the data section
    for (const auto& t : tensors_) {
      put_string(out, t.name);
      put<std::uint32_t>(out, static_cast<std::uint32_t>(t.dims.size()));
      for (const auto d : t.dims) put<std::uint64_t>(out, d);
      put<std::uint32_t>(out, static_cast<std::uint32_t>(t.type));
      put<std::uint64_t>(out, offset);
      offset += padded(t.data.size());
    }
    out.resize(padded(out.size()));
    return out;
  }

  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<std::uint64_t> dims;
    std::vector<std::byte> data;
  };

  template <class T, class Make>
  static GGUFValue array_of(GGUFType type, std::span<const T> values, Make make) {
    std::vector<GGUFValue> items;
    items.reserve(values.size());
    for (const T& v : values) items.push_back(make(v));
    return GGUFValue::array(type, std::move(items));
  }

  static int array_depth(const GGUFValue& v) {
    if (v.type() != GGUFType::ARRAY) return 0;
    int deepest = 0;
    for (const auto& item : v.items()) deepest = std::max(deepest, array_depth(item));
    return 1 + deepest;
  }

  std::size_t padded(std::size_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }

  template <class T>
  static void put(std::vector<std::byte>& out, T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  static void put_string(std::vector<std::byte>& out, std::string_view s) {
    put<std::uint64_t>(out, s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
  }
  static void put_kv(std::vector<std::byte>& out, std::string_view key, const GGUFValue& v) {
    put_string(out, key);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(v.type()));
    put_value(out, v);
  }
  static void put_value(std::vector<std::byte>& out, const GGUFValue& v) {
    switch (v.type()) {
      case GGUFType::UINT8: put(out, v.as<std::uint8_t>()); break;
      case GGUFType::INT8: put(out, v.as<std::int8_t>()); break;
      case GGUFType::UINT16: put(out, v.as<std::uint16_t>()); break;
      case GGUFType::INT16: put(out, v.as<std::int16_t>()); break;
      case GGUFType::UINT32: put(out, v.as<std::uint32_t>()); break;
      case GGUFType::INT32: put(out, v.as<std::int32_t>()); break;
      case GGUFType::FLOAT32: put(out, v.as<float>()); break;
      case GGUFType::BOOL: put<std::uint8_t>(out, v.as<bool>() ? 1 : 0); break;
      case GGUFType::STRING: put_string(out, v.as<std::string>()); break;
      case GGUFType::UINT64: put(out, v.as<std::uint64_t>()); break;
      case GGUFType::INT64: put(out, v.as<std::int64_t>()); break;
      case GGUFType::FLOAT64: put(out, v.as<double>()); break;
      case GGUFType::ARRAY:
        put<std::uint32_t>(out, static_cast<std::uint32_t>(v.array_type()));
        put<std::uint64_t>(out, v.items().size());
        for (const auto& item : v.items()) put_value(out, item);
        break;
    }
  }

  std::uint32_t alignment_;
  std::vector<std::pair<std::string, GGUFValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace tinyllm
