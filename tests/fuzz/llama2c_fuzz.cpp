// Fuzz target: llama2.c's two file formats (io/llama2c.hpp). The first input byte picks the reader,
// the rest is the file:
//   byte % 3 == 0  a model .bin: Llama2cFile::parse; every weight region's first and last float is
//                  read (the parser promised they lie in the file); a model that parses is written
//                  to a private folder in /dev/shm, loaded with load() (max_batch 2, no repacking)
//                  and one token is run through it into a 2-position KV cache;
//   byte % 3 == 1  a tokenizer .bin read to its end (parse_llama2c_vocab, vocab_size 0);
//   byte % 3 == 2  a tokenizer .bin of exactly (next byte + 1) tokens.
// A vocabulary that reads becomes a Tokenizer, which encodes a fixed text and the input's bytes
// and decodes in-range ids, then out-of-range ids (which must throw).
// Fine: a tinyllm::Error. Findings: any other exception, a crash, a sanitizer report, a leak, a
// hang, an allocation past the libFuzzer limits, or an out-of-range id that decodes.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/model/load.hpp>
#include <tinyllm/text/tokenizer.hpp>

#include "fuzz_util.hpp"

namespace {

// A folder of this process's own, removed at exit.
const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("tinyllm-fuzz-llama2c-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return d;
  }();
  return dir;
}

void expect_out_of_range(const tinyllm::Tokenizer& tok, std::int32_t id) {
  try {
    fuzz::sink = tok.decode(id).size();
  } catch (const tinyllm::Error&) {
    return;
  }
  std::fprintf(stderr, "token id %d decoded in a vocabulary of %zu tokens\n", id, tok.size());
  std::abort();
}

void exercise(const tinyllm::Tokenizer& tok, std::string_view input) {
  const std::int32_t n = static_cast<std::int32_t>(tok.size());
  std::uint64_t sum = 0;
  for (const std::string_view text : {std::string_view("Once upon a time, there was a little girl. \xF0\x9F\x99\x82 \xE2\x96\x81\xFF"),
                                      input.substr(0, 256)}) {
    for (const bool bos : {false, true}) {
      try {
        const std::vector<std::int32_t> ids = tok.encode(text, bos, !bos);
        fuzz::check_ids(ids, n);
        sum += tok.decode(ids).size();
      } catch (const tinyllm::Error& e) {
        fuzz::note(e);
      }
    }
  }
  for (std::int32_t id = 0; id < n && id < 64; ++id) sum += tok.decode(id == 0 ? -1 : id - 1, id).size();
  sum += tok.decode(n - 1).size();
  fuzz::sink = sum;
  for (const std::int32_t bad : {-1, n, n + 1, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()})
    expect_out_of_range(tok, bad);
}

void fuzz_model(std::span<const std::byte> file) {
  const tinyllm::Llama2cFile f = tinyllm::Llama2cFile::parse(file, "fuzz.bin");
  const tinyllm::Llama2cConfig& c = f.config();
  const tinyllm::Llama2cWeights& w = f.weights();
  const std::size_t L = c.n_layers, D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, V = c.vocab_size;
  float sum = 0;
  const auto touch = [&](const float* p, std::size_t n) {  // the region's first and last float
    if (n) sum += p[0] + p[n - 1];
  };
  touch(w.token_embedding, V * D);
  touch(w.rms_att, L * D);
  touch(w.wq, L * D * D);
  touch(w.wk, L * KV * D);
  touch(w.wv, L * KV * D);
  touch(w.wo, L * D * D);
  touch(w.rms_ffn, L * D);
  touch(w.w1, L * H * D);
  touch(w.w2, L * D * H);
  touch(w.w3, L * H * D);
  touch(w.rms_final, D);
  touch(w.wcls, V * D);
  fuzz::sink = static_cast<std::uint64_t>(sum != sum);

  // load() takes a path: the model as a file of its own (no tokenizer beside it).
  const auto path = scratch_dir() / "model.bin";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
  }
  tinyllm::LoadOptions opt;
  opt.max_batch = 2;
  opt.pack_weights = false;
  tinyllm::LoadedModel lm = tinyllm::load(path.string(), opt);
  tinyllm::Model& model = lm.model();
  static tinyllm::ThreadPool pool(1);
  auto cache = model.new_kv_cache(2);
  std::vector<float> logits(V);
  const std::int32_t token = static_cast<std::int32_t>(file.size() % V), position = 0;
  model.forward(pool, std::span(&token, 1), std::span(&position, 1), *cache,
                tinyllm::MatrixView<float>(logits.data(), 1, V));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned mode = data[0] % 3;
  const std::size_t skip = mode == 2 ? 2 : 1;
  if (size < skip) return 0;
  // A heap copy of exactly the file (operator new aligns it for floats): AddressSanitizer reports
  // a read one byte past it.
  std::vector<std::byte> file(size - skip);
  if (!file.empty()) std::memcpy(file.data(), data + skip, file.size());
  const std::string_view text(reinterpret_cast<const char*>(data + skip), size - skip);

  try {
    if (mode == 0) {
      fuzz_model(file);
    } else {
      const int vocab_size = mode == 2 ? data[1] + 1 : 0;   // 0: to the end of the file
      tinyllm::Llama2cVocab v = tinyllm::parse_llama2c_vocab(file, "fuzz-tokenizer.bin", vocab_size);
      if (mode == 2 && v.pieces.size() != static_cast<std::size_t>(vocab_size)) {
        std::fprintf(stderr, "asked for %d tokens, read %zu\n", vocab_size, v.pieces.size());
        std::abort();
      }
      const tinyllm::Tokenizer tok(std::move(v.pieces), std::move(v.scores));
      exercise(tok, text.size() > 256 ? text.substr(text.size() - 256) : text);
    }
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  return 0;
}
