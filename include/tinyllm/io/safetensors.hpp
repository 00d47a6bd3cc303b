#pragma once
// safetensors (Hugging Face's tensor file): an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
// optional "__metadata__": {string: string}}), then the tensors' bytes, offsets counted from the
// end of the header. Every field is checked against the file before any tensor is used: a
// header longer than the file, an offset range outside the data or overlapping another, a size
// that is not the shape's, an unknown dtype are Errors naming the file and tensor. Tensors are
// used in place over mmap. A checkpoint split into shards is read through its
// model.safetensors.index.json (SafetensorsModel). The JSON is read with nlohmann::json.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/core/tensor.hpp>

namespace tinyllm {

// The dtypes the format defines, with their element sizes; the library's DType where it has one.
struct SafetensorsDType {
  std::string_view name;
  std::size_t bytes;
  std::optional<DType> dtype;
};
inline constexpr SafetensorsDType kSafetensorsDTypes[] = {
    {"BOOL", 1, std::nullopt},     {"U8", 1, std::nullopt},      {"I8", 1, DType::I8},
    {"F8_E5M2", 1, std::nullopt},  {"F8_E4M3", 1, std::nullopt}, {"I16", 2, DType::I16},
    {"U16", 2, std::nullopt},      {"F16", 2, DType::F16},       {"BF16", 2, DType::BF16},
    {"I32", 4, DType::I32},        {"U32", 4, std::nullopt},     {"F32", 4, DType::F32},
    {"F64", 8, DType::F64},        {"I64", 8, DType::I64},       {"U64", 8, std::nullopt}};

inline const SafetensorsDType* safetensors_dtype(std::string_view name) {
  for (const auto& d : kSafetensorsDTypes)
    if (d.name == name) return &d;
  return nullptr;
}
inline std::string_view safetensors_dtype_name(DType t) {
  for (const auto& d : kSafetensorsDTypes)
    if (d.dtype == t) return d.name;
  throw Error("no safetensors dtype for " + std::string(name(t)), "safetensors");
}

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;          // as the file says ("BF16")
  std::optional<DType> dtype;      // the library's type, when it has one
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;
  std::size_t bytes = 0;

  std::uint64_t n_elements() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  // As the library's tensor views describe tensors: dims[0] the fastest-varying.
  TensorView view(const std::string& file) const {
    if (!dtype) throw Error("tensor of dtype " + dtype_name + " is not supported", file + ", tensor " + name);
    if (shape.size() > 4) throw Error("tensor of " + std::to_string(shape.size()) + " dimensions", file + ", tensor " + name, "at most 4");
    TensorView v;
    v.name = name;
    v.dtype = *dtype;
    v.n_dims = std::uint32_t(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i) v.dims[i] = shape[shape.size() - 1 - i];
    v.data = data;
    v.n_bytes = bytes;
    return v;
  }
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path) {
    SafetensorsFile f;
    f.file_ = MappedFile(path);
    f.parse(f.file_.bytes(), path);
    return f;
  }
  // Does not own `bytes`. `name` is used in error messages.
  static SafetensorsFile parse_bytes(std::span<const std::byte> bytes, std::string name) {
    SafetensorsFile f;
    f.parse(bytes, std::move(name));
    return f;
  }

  const std::string& name() const noexcept { return name_; }
  const std::vector<SafetensorsTensor>& tensors() const noexcept { return tensors_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  const SafetensorsTensor* find(std::string_view tensor) const {
    const auto it = index_.find(std::string(tensor));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const SafetensorsTensor& tensor(std::string_view tensor) const {
    if (const SafetensorsTensor* t = find(tensor)) return *t;
    throw Error("missing tensor " + std::string(tensor), name_);
  }

 private:
  void parse(std::span<const std::byte> bytes, std::string name) {
    name_ = std::move(name);
    if (bytes.size() < 8) throw Error("file of " + std::to_string(bytes.size()) + " bytes", name_, "an 8-byte header length first");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | std::uint64_t(bytes[std::size_t(i)]);
    if (n > bytes.size() - 8)
      throw Error("header of " + std::to_string(n) + " bytes in a file of " + std::to_string(bytes.size()), name_,
                  "a header that fits in the file");
    const auto* text = reinterpret_cast<const char*>(bytes.data() + 8);
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + n);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("header is not JSON: ") + e.what(), name_);
    }
    if (!header.is_object()) throw Error("header is not a JSON object", name_);
    const std::span<const std::byte> data = bytes.subspan(8 + n);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) throw Error("__metadata__ is not an object", name_);
        for (const auto& [mk, mv] : value.items()) {
          if (!mv.is_string()) throw Error("__metadata__." + mk + " is not a string", name_);
          metadata_[mk] = mv.get<std::string>();
        }
        continue;
      }
      tensors_.push_back(entry(key, value, data));
      ranges.push_back({std::uint64_t(static_cast<const std::byte*>(tensors_.back().data) - data.data()),
                        tensors_.back().bytes});
      index_[key] = tensors_.size() - 1;
    }
    // No byte may belong to two tensors.
    std::vector<std::size_t> order(ranges.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ranges[a].first < ranges[b].first; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      const auto& prev = ranges[order[i - 1]];
      if (prev.second > 0 && prev.first + prev.second > ranges[order[i]].first)
        throw Error("tensors " + tensors_[order[i - 1]].name + " and " + tensors_[order[i]].name + " overlap", name_);
    }
  }

  SafetensorsTensor entry(const std::string& key, const nlohmann::json& v, std::span<const std::byte> data) const {
    const std::string where = name_ + ", tensor " + key;
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw Error("tensor entry without dtype, shape and data_offsets", where);
    const auto& dt = v["dtype"];
    const auto& shape = v["shape"];
    const auto& off = v["data_offsets"];
    if (!dt.is_string()) throw Error("dtype is not a string", where);
    const SafetensorsDType* d = safetensors_dtype(dt.get<std::string>());
    if (!d) throw Error("unknown dtype " + dt.get<std::string>(), where, "one of the safetensors dtypes (F32, F16, BF16, ...)");
    if (!shape.is_array() || shape.size() > 8) throw Error("shape is not an array of at most 8 sizes", where);
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error("data_offsets is not [begin, end]", where);
    SafetensorsTensor t;
    t.name = key;
    t.dtype_name = d->name;
    t.dtype = d->dtype;
    std::uint64_t elements = 1;
    for (const auto& s : shape) {
      if (!s.is_number_unsigned()) throw Error("a size in shape is not a non-negative integer", where);
      const auto size = s.get<std::uint64_t>();
      if (size != 0 && elements > (std::uint64_t(1) << 62) / size) throw Error("shape too large", where);
      elements *= size;
      t.shape.push_back(size);
    }
    const auto begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
    if (begin > end || end > data.size())
      throw Error("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]", where,
                  "within the " + std::to_string(data.size()) + " bytes of data");
    if (end - begin != elements * d->bytes)
      throw Error(std::to_string(end - begin) + " bytes of data", where,
                  std::to_string(elements * d->bytes) + " for its shape and dtype");
    t.data = data.data() + begin;
    t.bytes = std::size_t(end - begin);
    return t;
  }

  MappedFile file_;
  std::string name_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The tensors of a checkpoint: model.safetensors, or the shards model.safetensors.index.json
// names (each tensor in the shard its weight_map says; a missing shard or a tensor the shard
// lacks is an Error naming both).
class SafetensorsModel {
 public:
  static SafetensorsModel open_folder(const std::filesystem::path& dir) {
    SafetensorsModel m;
    const auto index = dir / "model.safetensors.index.json";
    if (std::filesystem::exists(index)) {
      std::ifstream in(index);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("not JSON: ") + e.what(), index.string());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object())
        throw Error("no weight_map object", index.string(), "{\"weight_map\": {tensor: shard file}}");
      std::map<std::string, std::size_t> shard_of_file;
      for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string()) throw Error("weight_map." + tensor + " is not a file name", index.string());
        const std::string f = file.get<std::string>();
        if (f.find('/') != std::string::npos || f == "..")
          throw Error("shard " + f + " outside the folder", index.string(), "a file name in " + dir.string());
        if (!shard_of_file.contains(f)) {
          const auto path = dir / f;
          if (!std::filesystem::exists(path))
            throw Error("missing shard " + f + " (holding tensor " + tensor + ")", index.string());
          shard_of_file[f] = m.shards_.size();
          m.shards_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(path.string())));
        }
        m.where_[tensor] = shard_of_file[f];
      }
      for (const auto& [tensor, s] : m.where_)
        if (!m.shards_[s]->find(tensor))
          throw Error("tensor " + tensor + " is not in its shard " + m.shards_[s]->name(), index.string());
      return m;
    }
    const auto single = dir / "model.safetensors";
    if (!std::filesystem::exists(single))
      throw Error("no model.safetensors or model.safetensors.index.json", dir.string());
    m.shards_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(single.string())));
    for (const auto& t : m.shards_[0]->tensors()) m.where_[t.name] = 0;
    return m;
  }

  const SafetensorsTensor* find(std::string_view tensor) const {
    const auto it = where_.find(std::string(tensor));
    return it == where_.end() ? nullptr : shards_[it->second]->find(tensor);
  }
  const SafetensorsTensor& tensor(std::string_view tensor) const {
    if (const SafetensorsTensor* t = find(tensor)) return *t;
    throw Error("missing tensor " + std::string(tensor), shards_.empty() ? "safetensors" : shards_[0]->name());
  }
  const std::string& file_of(std::string_view tensor) const { return shards_[where_.at(std::string(tensor))]->name(); }
  std::size_t n_shards() const { return shards_.size(); }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::size_t> where_;
};

// Writes tensors as one safetensors file: the header padded with spaces to a multiple of 8 bytes
// (so every tensor's data is 8-byte aligned in the file), then the data in the order added.
class SafetensorsWriter {
 public:
  void add_tensor(const std::string& name, DType type, std::vector<std::uint64_t> shape, const void* data,
                  std::size_t bytes) {
    std::uint64_t elements = 1;
    for (auto s : shape) elements *= s;
    const std::string_view dt = safetensors_dtype_name(type);
    if (elements * safetensors_dtype(dt)->bytes != bytes)
      throw Error(std::to_string(bytes) + " bytes for tensor " + name, "SafetensorsWriter",
                  std::to_string(elements * safetensors_dtype(dt)->bytes) + " for its shape");
    if (header_.contains(name)) throw Error("tensor " + name + " added twice", "SafetensorsWriter");
    header_[name] = {{"dtype", std::string(dt)}, {"shape", shape}, {"data_offsets", nlohmann::json::array({data_.size(), data_.size() + bytes})}};
    const auto* p = static_cast<const std::byte*>(data);
    data_.insert(data_.end(), p, p + bytes);
  }
  void set_metadata(const std::string& key, const std::string& value) { header_["__metadata__"][key] = value; }

  std::vector<std::byte> to_bytes() const {
    std::string text = header_.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::byte> out(8 + text.size() + data_.size());
    const std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = std::byte((n >> (8 * i)) & 0xff);
    std::memcpy(out.data() + 8, text.data(), text.size());
    if (!data_.empty()) std::memcpy(out.data() + 8 + text.size(), data_.data(), data_.size());
    return out;
  }
  void write(const std::string& path) const {
    const auto bytes = to_bytes();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) throw Error("cannot write", path);
  }

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::vector<std::byte> data_;
};

}  // namespace tinyllm
