// The transformer on a synthetic model: batching, chunking and threading do not change the
// logits; bad inputs are errors; the loader checks what it binds.
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using test::max_abs_diff;

namespace {

std::vector<std::int32_t> some_tokens(std::size_t n, std::size_t vocab) {
  std::vector<std::int32_t> ids(n);
  SplitMix64 rng(7);
  for (auto& id : ids) id = std::int32_t(rng.next() % vocab);
  return ids;
}

std::vector<float> all_logits(LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& ids, bool one_by_one) {
  const std::size_t vocab = lm.config().vocab_size, n = ids.size();
  const auto pos = test::iota(n);
  std::vector<float> out(n * vocab);
  auto cache = lm.model().new_kv_cache();
  if (!one_by_one) {
    lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(out.data(), n, vocab));
  } else {
    for (std::size_t i = 0; i < n; ++i)
      lm.model().forward(pool, std::span(&ids[i], 1), std::span(&pos[i], 1), *cache,
                         MatrixView<float>(out.data() + i * vocab, 1, vocab));
  }
  return out;
}

}  // namespace

TEST_CASE("synthetic Llama: prefill, decode, chunked prefill and thread counts agree") {
  for (DType type : {DType::F32, DType::F16}) {
    CAPTURE(name(type));
    LoadOptions chunked;
    chunked.max_batch = 5;
    LoadedModel whole = load_synthetic("tiny", type, 3);
    LoadedModel chunks = load_synthetic("tiny", type, 3, chunked);
    const auto ids = some_tokens(37, whole.config().vocab_size);
    ThreadPool one(1), two(2);
    const auto batch = all_logits(whole, one, ids, false);
    // Different summation orders only: float32 rounding, on logits of magnitude ~1.
    CHECK(max_abs_diff(batch, all_logits(whole, one, ids, true)) < 1e-4f);
    CHECK(max_abs_diff(batch, all_logits(chunks, two, ids, false)) < 1e-4f);
    CHECK(max_abs_diff(batch, all_logits(whole, two, ids, true)) < 1e-4f);
    // The last-row-only form gives the last row.
    std::vector<float> last(whole.config().vocab_size);
    auto cache = whole.model().new_kv_cache();
    whole.model().forward(one, ids, test::iota(ids.size()), *cache, MatrixView<float>(last.data(), 1, last.size()));
    CHECK(max_abs_diff(last, std::vector<float>(batch.end() - last.size(), batch.end())) < 1e-4f);
  }
}

TEST_CASE("synthetic Llama: seeds give different models, the same seed the same model") {
  LoadedModel a = load_synthetic("tiny", DType::F32, 1), b = load_synthetic("tiny", DType::F32, 1),
              c = load_synthetic("tiny", DType::F32, 2);
  ThreadPool pool(1);
  const auto ids = some_tokens(4, a.config().vocab_size);
  const auto la = all_logits(a, pool, ids, false);
  CHECK(la == all_logits(b, pool, ids, false));
  CHECK(max_abs_diff(la, all_logits(c, pool, ids, false)) > 1e-3f);
}

TEST_CASE("forward rejects bad tokens, positions and shapes with a clear Error") {
  LoadedModel lm = load_synthetic();
  ThreadPool pool(1);
  const std::size_t vocab = lm.config().vocab_size;
  std::vector<float> logits(vocab);
  MatrixView<float> out(logits.data(), 1, vocab);
  auto cache = lm.model().new_kv_cache(8);
  const std::int32_t zero = 0, bad_token = std::int32_t(vocab), negative = -1, far = 8;
  auto message = [&](auto&& f) {
    try { f(); } catch (const Error& e) { return std::string(e.what()); }
    return std::string("no error");
  };
  CHECK(message([&] { lm.model().forward(pool, std::span(&bad_token, 1), std::span(&zero, 1), *cache, out); })
            .find("token id 512 out of range") != std::string::npos);
  CHECK(message([&] { lm.model().forward(pool, std::span(&negative, 1), std::span(&zero, 1), *cache, out); })
            .find("token id -1") != std::string::npos);
  CHECK(message([&] { lm.model().forward(pool, std::span(&zero, 1), std::span(&far, 1), *cache, out); })
            .find("does not fit the KV cache") != std::string::npos);
  CHECK(message([&] { lm.model().forward(pool, std::span(&zero, 1), std::span(&zero, 1), *cache,
                                         MatrixView<float>(logits.data(), 1, vocab - 1)); })
            .find("logits must be") != std::string::npos);
}

TEST_CASE("generate: greedy output is deterministic and stops at length and at stop tokens") {
  LoadedModel lm = load_synthetic();
  ThreadPool pool(2);
  const auto prompt = lm.tokenizer().encode("hello there", true);
  GenerateOptions g;
  g.max_new_tokens = 20;
  g.sampling.temperature = 0;
  std::vector<std::int32_t> first, second;
  const auto stats = generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { first.push_back(id); return true; });
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { second.push_back(id); return true; });
  CHECK(first.size() == 20);
  CHECK(stats.generated_tokens == 20);
  CHECK(first == second);
  g.stop_tokens = {first[5]};
  std::vector<std::int32_t> stopped;
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { stopped.push_back(id); return true; });
  const auto at = std::find(first.begin(), first.end(), first[5]) - first.begin();
  CHECK(stopped == std::vector<std::int32_t>(first.begin(), first.begin() + at));
}

TEST_CASE("loader: an unknown architecture or shape is named") {
  GGUFWriter w;
  write_synthetic_llama(w, synthetic_shape("tiny"), DType::F32, 1);
  w.set_string("general.architecture", "mamba");
  try {
    load_gguf_bytes(w.to_bytes(), "mamba.gguf");
    FAIL("loaded an unknown architecture");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("unsupported architecture 'mamba'") != std::string::npos);
  }
  CHECK_THROWS_AS(synthetic_shape("llama-9000"), Error);
}

TEST_CASE("forward_batch: sequences stepped together give the logits each gives alone") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 4);
  Model& m = lm.model();
  const std::size_t vocab = lm.config().vocab_size;
  ThreadPool pool(2);
  const auto a = some_tokens(6, vocab), b = some_tokens(9, vocab), c = some_tokens(1, vocab);
  // Alone: the last-token logits of a[0..6), b[0..9), c[0..1).
  auto last_alone = [&](const std::vector<std::int32_t>& ids) {
    std::vector<float> out(vocab);
    auto cache = m.new_kv_cache(16);
    m.forward(pool, ids, test::iota(ids.size()), *cache, MatrixView<float>(out.data(), 1, vocab));
    return out;
  };
  // Together: a has its first 5 tokens already in its cache and decodes its 6th; b prefills all
  // 9 (no logits wanted: as if chunked); c prefills its one token.
  auto ca = m.new_kv_cache(16), cb = m.new_kv_cache(16), cc = m.new_kv_cache(16);
  std::vector<float> scratch(vocab);
  m.forward(pool, std::span(a).first(5), test::iota(5), *ca, MatrixView<float>(scratch.data(), 1, vocab));
  std::vector<std::int32_t> tokens = {a[5]}, positions = {5};
  tokens.insert(tokens.end(), b.begin(), b.end());
  const auto pb = test::iota(9);
  positions.insert(positions.end(), pb.begin(), pb.end());
  tokens.push_back(c[0]);
  positions.push_back(0);
  const SequenceSlice seqs[] = {{ca.get(), 0, 1, true}, {cb.get(), 1, 9, false}, {cc.get(), 10, 1, true}};
  std::vector<float> out(2 * vocab);
  m.forward_batch(pool, tokens, positions, seqs, MatrixView<float>(out.data(), 2, vocab));
  CHECK(max_abs_diff(std::vector<float>(out.begin(), out.begin() + vocab), last_alone(a)) < 1e-4f);
  CHECK(max_abs_diff(std::vector<float>(out.begin() + vocab, out.end()), last_alone(c)) < 1e-4f);
  // b's cache now holds its prompt: decoding one more token there equals b + that token alone.
  const std::int32_t next = 77, at = 9;
  std::vector<float> after(vocab);
  m.forward(pool, std::span(&next, 1), std::span(&at, 1), *cb, MatrixView<float>(after.data(), 1, vocab));
  auto b_next = b;
  b_next.push_back(next);
  CHECK(max_abs_diff(after, last_alone(b_next)) < 1e-4f);
  // Slices that do not partition the batch are refused.
  const SequenceSlice gap[] = {{ca.get(), 0, 1, true}, {cb.get(), 2, 9, false}};
  CHECK_THROWS_AS(m.forward_batch(pool, tokens, positions, gap, MatrixView<float>(out.data(), 1, vocab)), Error);
}

TEST_CASE("synthetic Llama: weights packed at load give the file layout's logits") {
  for (std::string mix : {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"}) {
    CAPTURE(mix);
    const auto load = [&](bool pack) {
      GGUFWriter w;
      write_synthetic_llama(w, synthetic_shape("small"), weight_mix(mix), 5);
      LoadOptions opt;
      opt.pack_weights = pack;
      return load_gguf_bytes(w.to_bytes(), mix, opt);
    };
    LoadedModel packed = load(true), in_place = load(false);
    const WeightMatrix& wq = packed.model().weights().layers[0].wq;
    CHECK(bool(wq.packed) == cpu::can_pack(wq.type));
    CHECK(!in_place.model().weights().layers[0].wq.packed);
    const auto ids = some_tokens(29, packed.config().vocab_size);
    ThreadPool two(2);
    // The kernels pack the file's layout group by group on every call, exactly as the loader
    // packs it once, and a token's sums do not depend on the batch it is in: the same bits from
    // both forms, prompt and decode alike. Prompt and decode run different attention batches,
    // so they agree up to float rounding (a wrongly packed matrix would change them entirely).
    const auto prompt_packed = all_logits(packed, two, ids, false), prompt_in_place = all_logits(in_place, two, ids, false);
    const auto decode_packed = all_logits(packed, two, ids, true), decode_in_place = all_logits(in_place, two, ids, true);
    float top = 0;
    for (float v : prompt_in_place) top = std::max(top, std::fabs(v));
    CHECK(prompt_packed == prompt_in_place);
    CHECK(decode_packed == decode_in_place);
    CHECK(max_abs_diff(decode_packed, prompt_packed) <= 1e-4f * top);
  }
}
