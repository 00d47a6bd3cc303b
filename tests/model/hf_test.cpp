// Hugging Face folders (model/hf.hpp): the twins of arch/llama.gguf and arch/qwen2.gguf in
// ../shared/testdata/hf give llama.cpp's logits for the GGUF files within 1e-4 (llama through
// half-split RoPE over Hugging Face's Q/K row order), the same when the checkpoint is split into
// shards, and bad folders are clear errors.
#include <tinyllm/tinyllm.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// A folder against llama.cpp's references of its GGUF original (test::against_llama_cpp).
void check_against_llama_cpp(const std::string& folder, const std::string& ref, float tol) {
  LoadedModel lm = load(folder);
  ThreadPool pool(2);
  const auto d = test::against_llama_cpp(lm.model(), ref, pool);
  CHECK(d.prompt <= tol);
  CHECK(d.decode <= tol);
}

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("tinyllm_hf_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("Hugging Face llama and qwen2 folders give their GGUF originals' llama.cpp logits within 1e-4") {
  for (const char* name : {"llama", "qwen2"}) {
    TINYLLM_REQUIRE_TESTDATA(std::string("hf/") + name + "/model.safetensors");
    CAPTURE(name);
    check_against_llama_cpp(test::testdata(std::string("hf/") + name).string(), name, 1e-4f);
    // The folder's config.json names the folder too.
    CHECK(load(test::testdata(std::string("hf/") + name + "/config.json").string()).config().n_layers == 3);
  }
}

TEST_CASE("a checkpoint split into shards loads through model.safetensors.index.json") {
  TINYLLM_REQUIRE_TESTDATA("hf/llama/model.safetensors");
  const auto src = test::testdata("hf/llama");
  const auto one = SafetensorsFile::open((src / "model.safetensors").string());
  const auto dir = temp_dir("shards");
  std::filesystem::copy_file(src / "config.json", dir / "config.json");
  SafetensorsWriter shard[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  std::size_t i = 0;
  for (const auto& t : one.tensors()) {
    const std::size_t s = i++ % 2;
    shard[s].add_tensor(t.name, *t.dtype, t.shape, t.data, t.bytes);
    index["weight_map"][t.name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  for (std::size_t s = 0; s < 2; ++s) shard[s].write((dir / ("model-0000" + std::to_string(s + 1) + "-of-00002.safetensors")).string());
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(1);
  check_against_llama_cpp(dir.string(), "llama", 1e-4f);

  // A missing shard is named.
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("missing shard model-00002-of-00002.safetensors"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("bad Hugging Face folders are clear errors") {
  const auto dir = temp_dir("bad");
  std::ofstream(dir / "config.json") << R"({"model_type": "gpt2", "hidden_size": 64})";
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("unsupported model_type 'gpt2'"), Error);
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 64})";
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("missing key num_hidden_layers"), Error);
  std::ofstream(dir / "config.json") << "{not json";
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("not JSON"), Error);
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 32, "max_position_embeddings": 64})";
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("no model.safetensors"), Error);
  // Weights of the wrong shape name the tensor.
  SafetensorsWriter w;
  std::vector<float> v(64 * 16);
  w.add_tensor("model.embed_tokens.weight", DType::F32, {16, 64}, v.data(), v.size() * sizeof(float));
  w.write((dir / "model.safetensors").string());
  CHECK_THROWS_WITH_AS(load(dir.string()), doctest::Contains("model.embed_tokens.weight"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("BF16 and F16 checkpoints run on their own kernels, close to the F32 twin") {
  TINYLLM_REQUIRE_TESTDATA("hf/llama/model.safetensors");
  const auto src = test::testdata("hf/llama");
  const auto one = SafetensorsFile::open((src / "model.safetensors").string());
  LoadedModel f32 = load(src.string());
  const std::size_t n = 16, vocab = f32.config().vocab_size;
  std::vector<std::int32_t> ids(n), pos(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t(1 + (i * 29) % (vocab - 1)), pos[i] = std::int32_t(i);
  ThreadPool pool(2);
  auto logits_of = [&](LoadedModel& lm) {
    std::vector<float> out(n * vocab);
    auto cache = lm.model().new_kv_cache(n);
    lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(out.data(), n, vocab));
    return out;
  };
  const auto want = logits_of(f32);
  double rms = 0;
  for (float v : want) rms += double(v) * v / want.size();
  rms = std::sqrt(rms);
  // Relative to the logits' RMS: BF16 keeps 8 bits of mantissa, F16 11.
  for (const auto& [type, bound] : {std::pair{DType::BF16, 0.05}, std::pair{DType::F16, 0.01}}) {
    CAPTURE(name(type));
    const auto dir = temp_dir(std::string(name(type)));
    std::filesystem::copy_file(src / "config.json", dir / "config.json");
    SafetensorsWriter w;
    std::vector<std::uint16_t> half;
    for (const auto& t : one.tensors()) {
      const auto* v = static_cast<const float*>(t.data);
      half.resize(t.n_elements());
      for (std::size_t i = 0; i < half.size(); ++i) half[i] = type == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      w.add_tensor(t.name, type, t.shape, half.data(), half.size() * 2);
    }
    w.write((dir / "model.safetensors").string());
    LoadedModel lm = load(dir.string());
    CHECK(lm.model().weights().layers[0].wq.type == type);
    const auto got = logits_of(lm);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / rms);
    MESSAGE(name(type) << ": worst difference to the F32 twin's logits, relative to their RMS " << rms << ": " << worst);
    CHECK(worst < bound);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("a synthetic Llama written as a Hugging Face folder is the same model as its GGUF") {
  GGUFWriter g;
  write_synthetic_llama(g, synthetic_shape("tiny"), weight_mix("F32"), 8);
  const auto bytes = g.to_bytes();
  const auto dir = temp_dir("synth");
  write_hf_llama(GGUFFile::parse(bytes, "synthetic"), dir, DType::F32);
  LoadedModel gguf = load_gguf_bytes(bytes, "synthetic"), hf = load(dir.string());
  const std::size_t n = 20, vocab = gguf.config().vocab_size;
  std::vector<std::int32_t> ids(n), pos(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t(3 + (i * 41) % (vocab - 3)), pos[i] = std::int32_t(i);
  ThreadPool pool(2);
  std::vector<float> a(n * vocab), b(n * vocab);
  auto ca = gguf.model().new_kv_cache(n), cb = hf.model().new_kv_cache(n);
  gguf.model().forward(pool, ids, pos, *ca, MatrixView<float>(a.data(), n, vocab));
  hf.model().forward(pool, ids, pos, *cb, MatrixView<float>(b.data(), n, vocab));
  float worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  MESSAGE("GGUF against its Hugging Face folder: max abs logit difference " << worst);
  CHECK(worst < 1e-4f);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tinyllm-convert's conversion of the twins gives back the GGUF originals' tensors bit for bit") {
  for (const char* name : {"llama", "qwen2"}) {
    TINYLLM_REQUIRE_TESTDATA(std::string("hf/") + name + "/model.safetensors");
    CAPTURE(name);
    GGUFWriter w;
    convert_hf_to_gguf(test::testdata(std::string("hf/") + name), w);
    const auto bytes = w.to_bytes();
    const GGUFFile got = GGUFFile::parse(bytes, "converted");
    const GGUFFile want = GGUFFile::open(test::testdata(std::string("arch/") + name + ".gguf").string());
    std::size_t compared = 0;
    for (const TensorView& t : want.tensors()) {
      CAPTURE(t.name);
      const TensorView* g = got.find_tensor(t.name);
      REQUIRE(g != nullptr);
      CHECK(g->dims == t.dims);
      std::vector<float> a(t.cols()), b(t.cols());
      for (std::size_t r = 0; r < t.rows(); ++r) {
        dequantize_row(t.dtype, static_cast<const std::byte*>(t.data) + r * row_bytes(t.dtype, t.cols()), a.data(), a.size());
        dequantize_row(g->dtype, static_cast<const std::byte*>(g->data) + r * row_bytes(g->dtype, g->cols()), b.data(), b.size());
        REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
      }
      ++compared;
    }
    CHECK(compared == got.tensors().size());
    // And the converted file runs: the same hyper-parameters and logits as the original's.
    LoadedModel lm = load_gguf_bytes(bytes, "converted");
    CHECK(lm.config().n_kv_heads == 2);
    CHECK(lm.config().rope_theta == want.get_f32(std::string(name) + ".rope.freq_base"));
  }
  // A quantized conversion reads back as Q8_0 where rows are whole blocks.
  TINYLLM_REQUIRE_TESTDATA("hf/llama/model.safetensors");
  GGUFWriter w;
  convert_hf_to_gguf(test::testdata("hf/llama"), w, DType::Q8_0);
  const auto bytes = w.to_bytes();
  CHECK(GGUFFile::parse(bytes, "q8").tensor("blk.0.attn_q.weight").dtype == DType::Q8_0);
  CHECK(GGUFFile::parse(bytes, "q8").tensor("blk.0.attn_norm.weight").dtype == DType::F32);
}

TEST_CASE("--quantize at load gives the model that tinyllm-convert's quantized GGUF gives") {
  TINYLLM_REQUIRE_TESTDATA("hf/llama/model.safetensors");
  const auto src = test::testdata("hf/llama");
  const std::size_t n = 12;
  std::vector<std::int32_t> ids(n), pos(n);
  ThreadPool pool(2);
  auto logits_of = [&](LoadedModel& lm) {
    const std::size_t vocab = lm.config().vocab_size;
    for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t(1 + (i * 37) % (vocab - 1)), pos[i] = std::int32_t(i);
    std::vector<float> out(n * vocab);
    auto cache = lm.model().new_kv_cache(n);
    lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(out.data(), n, vocab));
    return out;
  };
  for (const DType type : {DType::Q8_0, DType::Q4_0}) {
    CAPTURE(name(type));
    LoadedModel quantized = load(src.string(), LoadOptions{.quantize = type});
    const auto& w = quantized.model().weights();
    CHECK(w.layers[0].wq.type == type);
    CHECK(w.layers[0].w_down.type == type);
    CHECK(w.token_embd.type == type);
    GGUFWriter g;
    convert_hf_to_gguf(src, g, type);
    const auto bytes = g.to_bytes();
    LoadedModel converted = load_gguf_bytes(bytes, "converted");
    CHECK(converted.model().weights().layers[0].wq.type == type);
    const auto a = logits_of(quantized), b = logits_of(converted);
    float worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    MESSAGE(name(type) << " at load against the converted GGUF: max abs logit difference " << worst);
    CHECK(worst < 1e-4f);
  }
  CHECK_THROWS_WITH_AS(load(src.string(), LoadOptions{.quantize = DType::Q8_K}), doctest::Contains("cannot quantize to"), Error);
}
