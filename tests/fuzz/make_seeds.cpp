// tinyllm_fuzz_seeds TESTDATA OUT: small seed inputs for the fuzz targets (tests/fuzz/run.sh calls
// it), written under OUT/<target>/. The test data's models are megabytes, mostly weights, which
// slow a fuzzer down without reaching more code; these seeds keep what the parsers read and make
// the rest small:
//   gguf                  tiny synthetic Llamas (F32, F16, Q8_0; Q4_0 and Q4_K_M at width 256);
//                         each TESTDATA/arch/*.gguf with its metadata and tensor names but tiny
//                         sizes (2 layers, 4 heads of 8, FFN 16); each TESTDATA/vocab/*.gguf cut to
//                         its first 1000 tokens and the merges among them;
//   gguf_tokenizer        the cut vocabularies, and the models' metadata without their tensors;
//   llama2c               tiny models (shared and own classifier), TESTDATA/llama2c tokenizers,
//                         with the target's leading mode byte;
//   hf_tokenizer          tokenizer.json files built from the cut vocabularies in the pipelines
//                         of Llama 2, Gemma, Llama 3, Qwen and GPT-2, each followed by NUL, a
//                         tokenizer_config.json, NUL and a text.
// Missing test data files are skipped; what each seed is comes from its file name.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/model/synthetic.hpp>

namespace fs = std::filesystem;
using namespace tinyllm;

namespace {

int g_written = 0;

void write_file(const fs::path& path, const void* data, std::size_t n) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!out) throw Error("cannot write", path.string());
  ++g_written;
}
void write_file(const fs::path& path, std::string_view s) { write_file(path, s.data(), s.size()); }
void write_file(const fs::path& path, const std::vector<std::byte>& b) { write_file(path, b.data(), b.size()); }

void write_gguf(const std::vector<fs::path>& dirs, const std::string& name, const GGUFWriter& w) {
  const std::vector<std::byte> bytes = w.to_bytes();
  for (const auto& d : dirs) write_file(d / name, bytes);
}

// A model for the gguf target, and its metadata alone (no tensors: the tokenizer target reads
// none, and small inputs fuzz faster) for the gguf_tokenizer target.
void write_model(const fs::path& gguf_dir, const fs::path& tokenizer_dir, const std::string& name, const GGUFWriter& w) {
  const std::vector<std::byte> bytes = w.to_bytes();
  write_file(gguf_dir / name, bytes);
  const GGUFFile f = GGUFFile::parse(bytes, name);
  GGUFWriter meta(static_cast<std::uint32_t>(f.alignment()));
  for (const auto& [key, value] : f.metadata())
    if (key != kGGUFAlignmentKey) meta.set(key, value);
  const std::vector<std::byte> head = meta.to_bytes();
  write_file(tokenizer_dir / (fs::path(name).stem().string() + "-metadata.gguf"), head);
}

// ---- GGUF models ----

void synthetic_models(const fs::path& gguf_dir, const fs::path& tokenizer_dir) {
  const SyntheticShape narrow{"fuzz", 32, 1, 4, 2, 64, 260, 64};
  const SyntheticShape wide{"fuzz-k", 256, 1, 4, 2, 256, 260, 64};   // whole K-quant blocks
  for (const char* mix : {"F32", "F16", "Q8_0"}) {
    GGUFWriter w;
    write_synthetic_llama(w, narrow, weight_mix(mix), 7);
    write_model(gguf_dir, tokenizer_dir, std::string("synthetic-llama-") + mix + ".gguf", w);
  }
  for (const char* mix : {"Q4_0", "Q4_K_M"}) {
    GGUFWriter w;
    write_synthetic_llama(w, wide, weight_mix(mix), 7);
    write_model(gguf_dir, tokenizer_dir, std::string("synthetic-llama-") + mix + ".gguf", w);
  }
  GGUFWriter w(64);   // a general.alignment of its own
  write_synthetic_llama(w, narrow, weight_mix("F32"), 7, "mistral");
  write_model(gguf_dir, tokenizer_dir, "synthetic-mistral-F32-align64.gguf", w);
}

// An architecture file with its metadata and tensor names, at a tiny size. Shapes follow the tensor
// names the loader binds (model/load.hpp); tensors of other names are left out.
void shrink_model(const fs::path& src, const fs::path& gguf_dir, const fs::path& tokenizer_dir) {
  const GGUFFile f = GGUFFile::open(src.string());
  const std::string arch = f.get_string("general.architecture");
  const std::string p = arch + ".";
  const std::uint32_t heads = f.get_u32(p + "attention.head_count");
  const std::uint32_t kv_heads = f.get_u32_or(p + "attention.head_count_kv", heads);
  const std::uint32_t group = kv_heads ? std::max<std::uint32_t>(1, heads / kv_heads) : 1;
  const std::size_t n_heads = 4, n_kv = std::max<std::size_t>(1, n_heads / group), hd = 8;
  const bool own_head_dim = f.has(p + "attention.key_length");
  const std::size_t n_embd = own_head_dim ? 48 : n_heads * hd, n_ff = 16;
  const std::size_t n_layers = std::min<std::size_t>(2, f.get_u32(p + "block_count"));
  const std::size_t q_dim = n_heads * hd, kv_dim = n_kv * hd;
  const std::size_t vocab = f.tensor("token_embd.weight").rows();
  const std::size_t n_expert = f.get_u32_or(p + "expert_count", 0);

  GGUFWriter w(static_cast<std::uint32_t>(f.alignment()));
  for (const auto& kv : f.metadata()) {   // not a structured binding: clang 14's lambdas cannot capture one
    const std::string& key = kv.first;
    const GGUFValue& value = kv.second;
    if (key == kGGUFAlignmentKey) continue;
    const auto set = [&](std::string_view k, std::size_t v) {
      if (key == p + std::string(k)) { w.set_u32(key, static_cast<std::uint32_t>(v)); return true; }
      return false;
    };
    if (set("embedding_length", n_embd) || set("block_count", n_layers) || set("feed_forward_length", n_ff) ||
        set("attention.head_count", n_heads) || set("attention.head_count_kv", n_kv) ||
        set("attention.key_length", hd) || set("attention.value_length", hd) || set("rope.dimension_count", hd) ||
        set("context_length", 64) || set("expert_feed_forward_length", n_ff))
      continue;
    w.set(key, value);
  }

  SplitMix64 rng(11);
  std::vector<float> values;
  const auto add = [&](const TensorView& t, std::vector<std::uint64_t> dims, float mean, float sd) {
    std::uint64_t n = 1;
    for (const auto d : dims) n *= d;
    values.resize(n);
    for (float& v : values) v = mean + sd * rng.normal();
    if (t.dtype == DType::F16) {
      std::vector<std::uint16_t> h(n);
      for (std::size_t i = 0; i < n; ++i) h[i] = f32_to_f16(values[i]);
      w.add_tensor(t.name, DType::F16, std::move(dims), h.data(), h.size() * 2);
    } else {
      w.add_tensor(t.name, DType::F32, std::move(dims), values.data(), values.size() * 4);
    }
  };
  const auto ends = [](const std::string& s, std::string_view suffix) { return s.ends_with(suffix); };
  for (const TensorView& t : f.tensors()) {
    const std::string& n = t.name;
    if (n.starts_with("blk.")) {
      const std::size_t layer = std::stoul(n.substr(4));
      if (layer >= n_layers) continue;
    }
    const auto with_experts = [&](std::vector<std::uint64_t> dims) {
      if (n_expert && t.n_dims == 3) dims.push_back(n_expert);
      return dims;
    };
    if (n == "token_embd.weight" || n == "output.weight") add(t, {n_embd, vocab}, 0, 0.02f);
    else if (ends(n, "attn_q_norm.weight") || ends(n, "attn_k_norm.weight")) add(t, {hd}, 1, 0.1f);
    else if (ends(n, "norm.weight")) add(t, {n_embd}, 1, 0.1f);
    else if (ends(n, "attn_q.weight")) add(t, {n_embd, q_dim}, 0, 0.02f);
    else if (ends(n, "attn_k.weight") || ends(n, "attn_v.weight")) add(t, {n_embd, kv_dim}, 0, 0.02f);
    else if (ends(n, "attn_output.weight")) add(t, {q_dim, n_embd}, 0, 0.02f);
    else if (ends(n, "attn_q.bias")) add(t, {q_dim}, 0, 0.02f);
    else if (ends(n, "attn_k.bias") || ends(n, "attn_v.bias")) add(t, {kv_dim}, 0, 0.02f);
    else if (ends(n, "ffn_gate.weight") || ends(n, "ffn_up.weight")) add(t, {n_embd, n_ff}, 0, 0.02f);
    else if (ends(n, "ffn_down.weight")) add(t, {n_ff, n_embd}, 0, 0.02f);
    else if (ends(n, "ffn_gate_inp.weight") && n_expert) add(t, {n_embd, n_expert}, 0, 0.02f);
    else if (ends(n, "ffn_gate_exps.weight") || ends(n, "ffn_up_exps.weight")) add(t, with_experts({n_embd, n_ff}), 0, 0.02f);
    else if (ends(n, "ffn_down_exps.weight")) add(t, with_experts({n_ff, n_embd}), 0, 0.02f);
    else if (n == "rope_freqs.weight") add(t, {hd / 2}, 1, 0.1f);
    else std::fprintf(stderr, "tinyllm_fuzz_seeds: %s: left out tensor %s\n", src.string().c_str(), n.c_str());
  }
  write_model(gguf_dir, tokenizer_dir, "arch-" + src.stem().string() + "-tiny.gguf", w);
}

// ---- vocabularies ----

struct SmallVocab {
  std::string model;                 // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<std::int32_t> types;
  std::vector<std::string> merges;   // "left right", both sides and their join among the tokens
};

// The first `keep` tokens of a vocabulary GGUF and the merges among them, written as a GGUF with
// every other metadata key as it was (ids beyond the cut are kept: the reader must cope).
SmallVocab shrink_vocab(const fs::path& src, const std::vector<fs::path>& dirs, std::size_t keep) {
  const GGUFFile f = GGUFFile::open(src.string());
  SmallVocab v;
  v.model = f.get_string("tokenizer.ggml.model");
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  const std::size_t n = std::min(keep, tokens.size());
  tokens.resize(n);
  const std::set<std::string> known(tokens.begin(), tokens.end());
  if (f.has("tokenizer.ggml.merges"))
    for (const std::string& m : f.get_string_array("tokenizer.ggml.merges")) {
      const std::size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) continue;
      const std::string l = m.substr(0, sp), r = m.substr(sp + 1);
      if (known.count(l) && known.count(r) && known.count(l + r)) v.merges.push_back(m);
    }
  std::vector<std::int32_t> types;
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_i32_array("tokenizer.ggml.token_type");
    types.resize(n, 1);
  }
  GGUFWriter w;
  for (const auto& [key, value] : f.metadata()) {
    if (key == kGGUFAlignmentKey) continue;
    if (key == "tokenizer.ggml.tokens") w.set_string_array(key, tokens);
    else if (key == "tokenizer.ggml.merges") w.set_string_array(key, v.merges);
    else if (key == "tokenizer.ggml.token_type") w.set_i32_array(key, types);
    else if (key == "tokenizer.ggml.scores") {
      std::vector<float> scores = f.get_f32_array(key);
      scores.resize(n, 0.0f);
      w.set_f32_array(key, scores);
    } else {
      w.set(key, value);
    }
  }
  write_gguf(dirs, "vocab-" + src.stem().string() + "-1000.gguf", w);
  v.tokens = std::move(tokens);
  v.types = std::move(types);
  return v;
}

// tokenizer.json for a cut vocabulary in one of the pipelines of real files.
std::string hf_tokenizer_json(const SmallVocab& v, std::string_view pipeline, std::string& config_out) {
  using nlohmann::json;
  json vocab = json::object(), added = json::array();
  std::string bos, eos;
  for (std::size_t id = 0; id < v.tokens.size(); ++id) {
    const std::int32_t type = id < v.types.size() ? v.types[id] : 1;
    if (type == 3 || type == 4) {
      added.push_back({{"id", id}, {"content", v.tokens[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", type == 4}, {"normalized", false}, {"special", type == 3}});
      if (type == 3 && bos.empty()) bos = v.tokens[id];
      else if (type == 3 && eos.empty()) eos = v.tokens[id];
    }
    vocab[v.tokens[id]] = id;
  }
  json merges = json::array();
  for (std::size_t i = 0; i < v.merges.size(); ++i) {
    const std::size_t sp = v.merges[i].find(' ', 1);
    if (i % 2) merges.push_back(v.merges[i]);   // both spellings of a merge
    else merges.push_back({v.merges[i].substr(0, sp), v.merges[i].substr(sp + 1)});
  }
  const std::string marker = "\xE2\x96\x81";
  json t = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added},
            {"normalizer", nullptr}, {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", nullptr},
            {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                       {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
  const auto bos_template = [&](const std::string& token) {
    return json{{"type", "TemplateProcessing"},
                {"single", json::array({{{"SpecialToken", {{"id", token}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                {"special_tokens", {{token, {{"id", token}, {"ids", json::array({vocab.value(token, 0)})}, {"tokens", json::array({token})}}}}}};
  };
  const json regex_llama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json regex_qwen2 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  json config = {{"add_bos_token", true}, {"add_eos_token", false}};
  if (!bos.empty()) config["bos_token"] = bos;
  if (!eos.empty()) config["eos_token"] = {{"content", eos}, {"lstrip", false}};
  if (pipeline == "llama2") {   // SentencePiece through normalizers
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", marker}},
                                                                           {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", marker}}})}};
    t["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", marker}}}, {"content", " "}},
                                                                     {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                                     {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
    t["model"]["byte_fallback"] = true;
    t["model"]["fuse_unk"] = true;
    if (vocab.contains("<unk>")) t["model"]["unk_token"] = "<unk>";
    if (!bos.empty()) t["post_processor"] = bos_template(bos);
  } else if (pipeline == "gemma") {   // SentencePiece, spaces replaced, split at spaces
    t["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", marker}};
    t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
    t["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", marker}}}, {"content", " "}},
                                                                     {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
    t["model"]["byte_fallback"] = true;
    if (!bos.empty()) t["post_processor"] = bos_template(bos);
  } else if (pipeline == "metaspace") {   // SentencePiece through a Metaspace pre-tokenizer
    t["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", marker}, {"prepend_scheme", "first"}, {"split", false}};
    t["decoder"] = {{"type", "Metaspace"}, {"replacement", marker}, {"prepend_scheme", "first"}, {"split", false}};
    t["model"]["byte_fallback"] = true;
  } else if (pipeline == "llama3" || pipeline == "qwen2") {   // byte-level after a known split
    if (pipeline == "qwen2") t["normalizer"] = {{"type", "NFC"}};
    t["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({
        {{"type", "Split"}, {"pattern", {{"Regex", pipeline == "qwen2" ? regex_qwen2 : regex_llama3}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
    t["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    t["model"]["ignore_merges"] = pipeline == "llama3";
  } else {   // gpt2: ByteLevel alone
    t["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    config["add_bos_token"] = false;
  }
  config["chat_template"] = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
  config_out = config.dump();
  return t.dump();
}

// ---- llama2.c ----

std::vector<std::byte> llama2c_model(std::int32_t dim, std::int32_t hidden, std::int32_t layers, std::int32_t heads,
                                     std::int32_t kv_heads, std::int32_t vocab, std::int32_t seq_len, bool shared) {
  const std::int32_t header[7] = {dim, hidden, layers, heads, kv_heads, shared ? vocab : -vocab, seq_len};
  const std::size_t L = layers, D = dim, KV = std::size_t(dim) / heads * kv_heads, H = hidden, V = vocab;
  std::size_t n = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D + D;
  n += std::size_t(seq_len) * (std::size_t(dim) / heads);   // the RoPE tables
  if (!shared) n += V * D;
  std::vector<float> w(n);
  SplitMix64 rng(3);
  for (float& x : w) x = 0.05f * rng.normal();
  std::vector<std::byte> bytes(1 + sizeof header + n * sizeof(float));
  bytes[0] = std::byte{0};   // the target's mode byte: a model
  std::memcpy(bytes.data() + 1, header, sizeof header);
  std::memcpy(bytes.data() + 1 + sizeof header, w.data(), n * sizeof(float));
  return bytes;
}

std::vector<std::byte> read_all(const fs::path& p) {
  const MappedFile m(p.string());
  return {m.bytes().begin(), m.bytes().end()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s TESTDATA_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path testdata = argv[1], out = argv[2];
  const fs::path gguf = out / "gguf", gguf_tok = out / "gguf_tokenizer", llama2c = out / "llama2c", hf = out / "hf_tokenizer";
  int failures = 0;
  const auto attempt = [&](const std::string& what, auto f) {
    try {
      f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tinyllm_fuzz_seeds: %s: %s\n", what.c_str(), e.what());
      ++failures;
    }
  };

  attempt("synthetic models", [&] { synthetic_models(gguf, gguf_tok); });
  std::vector<fs::path> arch_files, vocab_files;
  if (fs::is_directory(testdata / "arch"))
    for (const auto& e : fs::directory_iterator(testdata / "arch"))
      if (e.path().extension() == ".gguf" && !e.path().stem().string().starts_with("llama-Q")) arch_files.push_back(e.path());
  if (fs::is_directory(testdata / "vocab"))
    for (const auto& e : fs::directory_iterator(testdata / "vocab"))
      if (e.path().extension() == ".gguf") vocab_files.push_back(e.path());
  std::sort(arch_files.begin(), arch_files.end());
  std::sort(vocab_files.begin(), vocab_files.end());
  for (const auto& p : arch_files) attempt(p.string(), [&] { shrink_model(p, gguf, gguf_tok); });

  for (const auto& p : vocab_files)
    attempt(p.string(), [&] {
      const SmallVocab v = shrink_vocab(p, {gguf, gguf_tok}, 1000);
      const std::vector<std::string_view> pipelines = v.model == "gpt2" ? std::vector<std::string_view>{"gpt2", "llama3", "qwen2"}
                                                                        : std::vector<std::string_view>{"llama2", "gemma", "metaspace"};
      for (const std::string_view pipeline : pipelines) {
        std::string config;
        const std::string tokenizer = hf_tokenizer_json(v, pipeline, config);
        const std::string text = "Hello world! <s> 3.14159 can't \xC3\xA9t\xC3\xA9 \xF0\x9F\x99\x82\n\tend";
        std::string seed = tokenizer;
        seed += '\0';
        seed += config;
        seed += '\0';
        seed += text;
        write_file(hf / (p.stem().string() + "-" + std::string(pipeline) + ".json"), seed);
      }
    });

  attempt("llama2c", [&] {
    const auto shared = llama2c_model(8, 12, 2, 2, 1, 10, 4, true);
    write_file(llama2c / "model-tiny-shared.bin", shared);
    write_file(llama2c / "model-tiny-own-classifier.bin", llama2c_model(16, 24, 1, 4, 2, 32, 8, false));
    for (const char* name : {"tok512.bin", "tokenizer.bin"}) {
      const fs::path p = testdata / "llama2c" / name;
      if (!fs::exists(p)) continue;
      std::vector<std::byte> b = read_all(p);
      b.insert(b.begin(), std::byte{1});   // mode 1: a tokenizer read to its end
      write_file(llama2c / (std::string("vocab-") + name), b);
    }
    // Mode 2, an exact token count: the first 200 tokens of tok512.bin.
    const fs::path p = testdata / "llama2c" / "tok512.bin";
    if (fs::exists(p)) {
      const std::vector<std::byte> b = read_all(p);
      std::size_t at = 4;
      for (int i = 0; i < 200 && at + 8 <= b.size(); ++i) {
        std::int32_t len;
        std::memcpy(&len, b.data() + at + 4, 4);
        at += 8 + static_cast<std::size_t>(len);
      }
      std::vector<std::byte> seed{std::byte{2}, std::byte{199}};   // mode 2, 199 + 1 tokens
      seed.insert(seed.end(), b.begin(), b.begin() + static_cast<std::ptrdiff_t>(std::min(at, b.size())));
      write_file(llama2c / "vocab-tok512-first200.bin", seed);
    }
  });

  std::printf("tinyllm_fuzz_seeds: %d seed files in %s%s\n", g_written, out.string().c_str(),
              failures ? " (some sources failed, see above)" : "");
  return 0;
}
