// LoRA adapters (model/lora.hpp): llama.cpp's logits with ../shared/testdata/lora's adapter on
// arch/llama.gguf, sequences with different adapters in one batch, and bad adapter files.
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

float max_abs(const float* a, const float* b, std::size_t n) {
  float worst = 0;
  for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// Logits of every prompt position of ids, in a fresh cache.
std::vector<float> prompt_logits(Model& m, ThreadPool& pool, const std::vector<std::int32_t>& ids) {
  const std::size_t vocab = m.config().vocab_size, n = ids.size();
  auto cache = m.new_kv_cache(n);
  const auto pos = test::iota(n);
  std::vector<float> out(n * vocab);
  m.forward(pool, ids, pos, *cache, MatrixView<float>(out.data(), n, vocab));
  return out;
}

// A copy of the adapter file with its metadata and tensors, where `edit` may change them.
std::vector<std::byte> adapter_bytes(const GGUFFile& src, const std::function<void(GGUFWriter&)>& before,
                                     const std::string& skip = "", const std::string& reshape = "") {
  GGUFWriter w;
  for (const auto& [k, v] : src.metadata())
    if (k != "general.alignment") w.set(k, v);
  before(w);
  for (const TensorView& t : src.tensors()) {
    if (t.name == skip) continue;
    std::vector<std::uint64_t> dims(t.dims.begin(), t.dims.begin() + t.n_dims);
    if (t.name == reshape) std::swap(dims[0], dims[1]);
    w.add_tensor(t.name, t.dtype, dims, t.data, t.n_bytes);
  }
  return w.to_bytes();
}

}  // namespace

TEST_CASE("LoRA adapter on llama matches llama.cpp within 1e-4") {
  TINYLLM_REQUIRE_TESTDATA("lora/lora_llama.gguf");
  const auto dir = test::testdata("lora");
  LoadedModel lm = load(test::testdata("arch/llama.gguf").string());
  Model& m = lm.model();
  const auto adapter = LoraAdapter::load((dir / "lora_llama.gguf").string(), m.config());
  CHECK(adapter->n_matrices() == 7 * m.config().n_layers);
  CHECK(adapter->max_rank() == 8);
  CHECK(adapter->alpha() == 16.0f);

  const auto header = dir / "llama+lora.header.txt";
  const auto ids = test::header_ids(header, "ids");
  const auto greedy = test::header_ids(header, "greedy_ids");
  const auto prompt_want = test::read_f32(dir / "llama+lora.logits.f32");
  const auto decode_want = test::read_f32(dir / "llama+lora.decode.f32");
  const std::size_t vocab = m.config().vocab_size, n = ids.size(), steps = decode_want.size() / vocab;
  REQUIRE(prompt_want.size() == n * vocab);
  ThreadPool pool(2);

  // Without the adapter the model is measurably elsewhere: the comparison below means something.
  CHECK(max_abs(prompt_logits(m, pool, ids).data(), prompt_want.data(), n * vocab) > 1e-2f);

  test::on_best_and_avx2([&] {
    m.set_adapters({{adapter, 1.0f}});
    auto cache = m.new_kv_cache(n + steps);
    const auto pos = test::iota(n);
    std::vector<float> got(n * vocab);
    m.forward(pool, ids, pos, *cache, MatrixView<float>(got.data(), n, vocab));
    const float prompt_err = max_abs(got.data(), prompt_want.data(), n * vocab);
    MESSAGE("prompt: max abs difference to llama.cpp " << prompt_err);
    CHECK(prompt_err <= 1e-4f);
    std::vector<float> dec(vocab);
    float decode_err = 0;
    for (std::size_t s = 0; s < steps; ++s) {
      const std::int32_t p = std::int32_t(n + s);
      m.forward(pool, std::span(&greedy[s], 1), std::span(&p, 1), *cache, MatrixView<float>(dec.data(), 1, vocab));
      decode_err = std::max(decode_err, max_abs(dec.data(), decode_want.data() + s * vocab, vocab));
      CHECK(argmax(std::span(dec)) == greedy[s + 1]);
    }
    MESSAGE("decode: max abs difference to llama.cpp " << decode_err);
    CHECK(decode_err <= 1e-4f);
  });
  m.set_adapters({});
}

TEST_CASE("LoRA: sequences with different adapters in one batch equal each run alone") {
  TINYLLM_REQUIRE_TESTDATA("lora/lora_llama.gguf");
  for (const char* base : {"arch/llama.gguf", "arch/llama-Q4_0.gguf"}) {
    CAPTURE(base);
    LoadedModel lm = load(test::testdata(base).string());
    Model& m = lm.model();
    const auto a = LoraAdapter::load(test::testdata("lora/lora_llama.gguf").string(), m.config());
    const std::size_t vocab = m.config().vocab_size;
    ThreadPool pool(2);
    // Four sequences: the adapter at 1, none, the adapter at -0.5 and at 1 again (a run of two).
    const std::vector<std::vector<AdapterRef>> sets = {{{a, 1.0f}}, {}, {{a, -0.5f}}, {{a, 1.0f}}};
    const std::vector<std::vector<std::int32_t>> prompts = {{1, 40, 41, 42, 43}, {1, 7, 9}, {1, 40, 41, 42, 43}, {1, 300, 5, 6}};

    // Alone: the adapters as the model's own.
    std::vector<std::vector<float>> alone;
    for (std::size_t i = 0; i < sets.size(); ++i) {
      m.set_adapters(sets[i]);
      const auto all = prompt_logits(m, pool, prompts[i]);
      alone.emplace_back(all.end() - std::ptrdiff_t(vocab), all.end());
    }
    m.set_adapters({});
    CHECK(max_abs(alone[0].data(), alone[2].data(), vocab) > 1e-3f);  // the scale matters

    std::vector<std::int32_t> tokens, pos;
    std::vector<std::unique_ptr<KVCache>> caches;
    std::vector<SequenceSlice> slices;
    for (std::size_t i = 0; i < sets.size(); ++i) {
      caches.push_back(m.new_kv_cache(16));
      slices.push_back({caches.back().get(), tokens.size(), prompts[i].size(), true, sets[i]});
      for (std::size_t t = 0; t < prompts[i].size(); ++t) {
        tokens.push_back(prompts[i][t]);
        pos.push_back(std::int32_t(t));
      }
    }
    std::vector<float> batched(sets.size() * vocab);
    m.forward_batch(pool, tokens, pos, slices, MatrixView<float>(batched.data(), sets.size(), vocab));
    for (std::size_t i = 0; i < sets.size(); ++i) {
      CAPTURE(i);
      CHECK(max_abs(batched.data() + i * vocab, alone[i].data(), vocab) <= 1e-4f);
      CHECK(argmax(std::span(batched.data() + i * vocab, vocab)) == argmax(std::span(alone[i])));
    }
  }
}

TEST_CASE("LoRA: bad adapter files are clear errors") {
  TINYLLM_REQUIRE_TESTDATA("lora/lora_llama.gguf");
  LoadedModel lm = load(test::testdata("arch/llama.gguf").string());
  const ModelConfig& cfg = lm.config();
  const auto path = test::testdata("lora/lora_llama.gguf").string();
  const GGUFFile src = GGUFFile::open(path);

  auto fails_with = [&](std::vector<std::byte> bytes, const std::string& what) {
    CAPTURE(what);
    bool threw = false;
    try {
      (void)LoraAdapter::from_gguf(GGUFFile::parse(bytes, "bad.gguf"), cfg);
    } catch (const Error& e) {
      threw = true;
      CHECK_MESSAGE(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
    CHECK(threw);
  };
  // A model is not an adapter.
  CHECK_THROWS_AS(LoraAdapter::load(test::testdata("arch/llama.gguf").string(), cfg), Error);
  fails_with(adapter_bytes(src, [](GGUFWriter& w) { w.set_string("adapter.type", "control_vector"); }), "adapter of type");
  fails_with(adapter_bytes(src, [](GGUFWriter& w) { w.set_string("general.architecture", "gemma"); }), "architecture \"gemma\"");
  fails_with(adapter_bytes(src, [](GGUFWriter&) {}, "blk.1.ffn_up.weight.lora_b"), "only one of lora_a and lora_b");
  fails_with(adapter_bytes(src, [](GGUFWriter&) {}, "", "blk.0.attn_q.weight.lora_a"), "blk.0.attn_q.weight: lora_a is");
  {
    GGUFWriter w;
    for (const auto& [k, v] : src.metadata())
      if (k != "general.alignment") w.set(k, v);
    const std::vector<float> z(8 * cfg.n_embd);
    w.add_tensor("blk.9.attn_q.weight.lora_a", DType::F32, {cfg.n_embd, 8}, z.data(), z.size() * 4);
    fails_with(w.to_bytes(), "is for block 9");
  }
  {
    GGUFWriter w;
    for (const auto& [k, v] : src.metadata())
      if (k != "general.alignment") w.set(k, v);
    const std::vector<float> z(8 * cfg.n_embd);
    w.add_tensor("output.weight.lora_a", DType::F32, {cfg.n_embd, 8}, z.data(), z.size() * 4);
    fails_with(w.to_bytes(), "not a block's matrix");
  }
  // An adapter checked against one model does not go into another of other shapes.
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  LoadedModel other = load(test::testdata("arch/stories260K.gguf").string());
  const auto a = LoraAdapter::load(path, cfg);
  CHECK_THROWS_AS(other.model().set_adapters({{a, 1.0f}}), Error);
}

TEST_CASE("LoRA in the engine: requests with different adapters batch together; the prefix cache keeps them apart") {
  TINYLLM_REQUIRE_TESTDATA("lora/lora_llama.gguf");
  LoadedModel lm = load(test::testdata("arch/llama.gguf").string());
  Model& m = lm.model();
  const auto a = LoraAdapter::load(test::testdata("lora/lora_llama.gguf").string(), m.config());
  ThreadPool pool(2);
  const std::vector<std::vector<AdapterRef>> sets = {{}, {{a, 1.0f}}, {{a, 2.0f}}, {{a, 1.0f}}, {}};
  std::vector<std::int32_t> prompt = {1};
  for (std::int32_t i = 0; i < 20; ++i) prompt.push_back(3 + (i * 37) % 500);   // 21 tokens: 2 full blocks of 8

  // Alone, with the adapters as the model's own.
  std::vector<std::vector<std::int32_t>> alone;
  for (const auto& set : sets) {
    m.set_adapters(set);
    GenerateOptions g{.max_new_tokens = 8, .sampling = {.temperature = 0.0f}};
    std::vector<std::int32_t> out;
    generate(pool, m, prompt, g, [&](std::int32_t id) { out.push_back(id); return true; });
    alone.push_back(out);
  }
  m.set_adapters({});
  CHECK(alone[0] != alone[1]);   // the adapter changes the greedy text of this prompt

  Engine engine(lm, pool, {.block_size = 8, .kv_blocks = 64, .prefix_caching = true});
  std::vector<std::vector<std::int32_t>> got(sets.size());
  // The first request alone fills the prefix cache with the base model's blocks, then the rest
  // run in one batch: only the last (the base model again) may reuse them.
  std::vector<std::size_t> cached(sets.size());
  for (std::size_t i = 0; i < sets.size(); ++i) {
    Request r{.tokens = prompt, .max_tokens = 8, .sampling = {.temperature = 0.0f}, .stop_at_eos = false, .adapters = sets[i]};
    engine.submit(r, [&, i](const TokenEvent& e) {
      if (e.token >= 0) got[i].push_back(e.token);
      if (e.finished) cached[i] = e.metrics.cached_prompt_tokens;
    });
    if (i == 0) engine.run_until_idle();
  }
  engine.run_until_idle();
  for (std::size_t i = 0; i < sets.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == alone[i]);
  }
  CHECK(cached[1] == 0);
  CHECK(cached[2] == 0);
  CHECK(cached[4] == 16);
  // An adapter loaded for another model is refused at submit.
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  LoadedModel other = load(test::testdata("arch/stories260K.gguf").string());
  Engine other_engine(other, pool, {});
  CHECK_THROWS_AS(other_engine.submit({.tokens = {1, 2}, .adapters = {{a, 1.0f}}}, [](const TokenEvent&) {}), Error);
}
