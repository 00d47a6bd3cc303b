// Fuzz target: a GGUF file. The input is the whole file: GGUFFile::parse reads its metadata and
// tensor table; every tensor's first and last byte are then read (the parser promised they lie in
// the input), and every metadata value is visited. A file that parses is loaded as a model
// (load_gguf_bytes, max_batch 2, weights not repacked) and, when it loads, runs one token through
// the model into a 2-position KV cache.
// Fine: a tinyllm::Error. Findings: any other exception, a crash, a sanitizer report, a leak, a
// hang (-timeout) or an allocation past -malloc_limit_mb / -rss_limit_mb (a small file must not
// make the loader allocate by the sizes its header claims).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/io/gguf.hpp>
#include <tinyllm/model/load.hpp>

#include "fuzz_util.hpp"

namespace {

// Reads every value, arrays and nested arrays included; the sum keeps the reads from being elided.
std::uint64_t visit(const tinyllm::GGUFValue& v) {
  using tinyllm::GGUFType;
  std::uint64_t sum = static_cast<std::uint64_t>(v.type());
  switch (v.type()) {
    case GGUFType::STRING: return sum + v.as<std::string>().size();
    case GGUFType::ARRAY:
      for (const auto& item : v.items()) sum += visit(item);
      return sum + static_cast<std::uint64_t>(v.array_type());
    default:
      if (const auto i = v.to_integer<std::int64_t>()) sum += static_cast<std::uint64_t>(*i);
      return sum;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A heap copy of exactly `size` bytes: AddressSanitizer reports a read one byte past the file.
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);

  try {
    const tinyllm::GGUFFile f = tinyllm::GGUFFile::parse(bytes, "fuzz.gguf");
    std::uint64_t sum = f.version() + f.alignment() + f.data_offset();
    for (const auto& [key, value] : f.metadata()) sum += key.size() + visit(value);
    for (const auto& t : f.tensors()) {
      const auto* p = static_cast<const unsigned char*>(t.data);
      if (t.n_bytes) sum += p[0] + p[t.n_bytes - 1];
      sum += t.n_elements();
      if (f.find_tensor(t.name) != &t) __builtin_trap();   // the index finds every tensor
    }
    if (f.has("general.architecture")) {
      try {
        sum += f.get_string("general.architecture").size();
      } catch (const tinyllm::Error& e) {
        fuzz::note(e);
      }
    }
    fuzz::sink = sum;
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
    return 0;
  }

  try {
    tinyllm::LoadOptions opt;
    opt.max_batch = 2;
    opt.pack_weights = false;
    tinyllm::LoadedModel lm = tinyllm::load_gguf_bytes(std::move(bytes), "fuzz.gguf", opt);
    tinyllm::Model& model = lm.model();
    const tinyllm::ModelConfig& c = model.config();
    // One token through the model. Its size is bounded by the input, which holds every weight.
    static tinyllm::ThreadPool pool(1);
    auto cache = model.new_kv_cache(2);
    std::vector<float> logits(c.vocab_size);
    const std::int32_t token = static_cast<std::int32_t>(size % c.vocab_size), position = 0;
    model.forward(pool, std::span(&token, 1), std::span(&position, 1), *cache,
                  tinyllm::MatrixView<float>(logits.data(), 1, c.vocab_size));
    if (lm.has_tokenizer()) fuzz::sink = lm.tokenizer().size();
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  return 0;
}
