// LoRA fine-tuning (train/): the whole model's adapter gradients against finite differences, the
// trainer's forward against the model's own with the saved adapter, fine-tuning stories260K on
// the project's Captain Moss stories (tests/train/data), resuming from a checkpoint, and the data
// helpers.
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::filesystem::path corpus(const char* name) {
  return std::filesystem::path(TINYLLM_SOURCE_DIR) / "tests/train/data" / name;
}

LoadedModel load_stories() {
  LoadOptions opt;
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  return load(test::testdata("llama2c/stories260K.bin").string(), opt);
}

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("tinyllm_" + std::to_string(::getpid()) + "_" + name);
}

}  // namespace

TEST_CASE("LoRA training: every adapter matrix's gradient on a whole model matches finite differences") {
  // Small random models in F32 and Q8_0 (a quantized base trains the same way), its
  // adapters given random B so that every gradient is non-zero, all in double.
  for (const auto& [mix, shape] : {std::pair{"F32", "tiny"}, std::pair{"Q8_0", "small"}}) {
    CAPTURE(mix);
    GGUFWriter w;
    write_synthetic_llama(w, synthetic_shape(shape), weight_mix(mix), 5);
    LoadedModel lm = load_gguf_bytes(w.to_bytes(), "tiny");
    LoraTrainer<double> tr(lm.model(), {.rank = 2, .alpha = 3.0f, .seed = 9});
    SplitMix64 rng(11);
    const auto& cfg = lm.config();
    for (std::size_t l = 0; l < cfg.n_layers; ++l)
      for (std::size_t t = 0; t < kLoraTargets; ++t) {
        auto& b = tr.b(l, LoraTarget(t));
        for (Eigen::Index i = 0; i < b.size(); ++i) b.data()[i] = 0.3 * rng.normal();
      }
    TrainingSequence s;
    for (std::size_t i = 0; i < 9; ++i) s.tokens.push_back(std::int32_t(3 + rng.next() % (cfg.vocab_size - 3)));
    s.weights = {1, 1, 0, 1, 0.5f, 1, 1, 1};
    ThreadPool pool(1);
    tr.accumulate(pool, std::span(&s, 1));
    auto loss = [&] { return tr.evaluate(pool, std::span(&s, 1)).sum; };
    const double h = 1e-5;
    double worst = 0;
    for (std::size_t l = 0; l < cfg.n_layers; ++l)
      for (std::size_t t = 0; t < kLoraTargets; ++t)
        for (const bool is_a : {true, false}) {
          auto& p = is_a ? tr.a(l, LoraTarget(t)) : tr.b(l, LoraTarget(t));
          const auto& g = is_a ? tr.grad_a(l, LoraTarget(t)) : tr.grad_b(l, LoraTarget(t));
          for (int k = 0; k < 4; ++k) {   // a few elements of each matrix
            const Eigen::Index i = Eigen::Index(rng.next() % std::uint64_t(p.size()));
            const double saved = p.data()[i];
            p.data()[i] = saved + h;
            const double up = loss();
            p.data()[i] = saved - h;
            const double down = loss();
            p.data()[i] = saved;
            const double fd = (up - down) / (2 * h);
            worst = std::max(worst, std::fabs(fd - g.data()[i]) / std::max(1e-3, std::fabs(fd)));
          }
        }
    MESSAGE(std::string(mix) << ": worst relative difference of the sampled adapter gradients to finite differences: " << worst);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("LoRA training: fine-tuning stories260K on Captain Moss stories lowers their held-out loss") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = load_stories();
  const Tokenizer& tok = lm.tokenizer();
  const std::size_t context = 128;
  const auto train = text_windows(tok, read_text(corpus("train.txt")), context);
  const auto heldout = text_windows(tok, read_text(corpus("heldout.txt")), context);
  REQUIRE(train.size() >= 8);
  REQUIRE(!heldout.empty());
  ThreadPool pool(2);
  LoraTrainer<float> tr(lm.model(), {.rank = 8, .alpha = 16.0f});
  const double before = tr.evaluate(pool, heldout).mean();
  const std::size_t steps = 200, batch = 4;
  double first_train = 0, last_train = 0;
  for (std::size_t step = 0; step < steps; ++step) {
    std::vector<TrainingSequence> b;
    for (std::size_t i : batch_indices(train.size(), step, batch, 1)) b.push_back(train[i]);
    const double l = tr.accumulate(pool, b).mean();
    tr.step(learning_rate(step, steps, 3e-3f, 10));
    if (step == 0) first_train = l;
    last_train = l;
  }
  const double after = tr.evaluate(pool, heldout).mean();
  MESSAGE("held-out loss per token " << before << " -> " << after << " (train " << first_train << " -> " << last_train
                                     << ") after " << steps << " steps of " << batch << " windows");
  CHECK(after < before - 0.5);

  // The saved adapter, loaded as any adapter, gives the trained model's logits.
  const auto path = temp_file("moss.gguf");
  tr.save_adapter(path.string());
  auto adapter = LoraAdapter::load(path.string(), lm.config());
  std::filesystem::remove(path);
  lm.model().set_adapters({{adapter, 1.0f}});
  const auto& ids = heldout[0].tokens;
  const std::size_t n = ids.size(), vocab = lm.config().vocab_size;
  std::vector<std::int32_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);
  std::vector<float> got(n * vocab);
  auto cache = lm.model().new_kv_cache(n);
  lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(got.data(), n, vocab));
  const auto want = tr.logits(ids);
  float worst = 0;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t i = 0; i < vocab; ++i) worst = std::max(worst, std::fabs(got[t * vocab + i] - want(Eigen::Index(t), Eigen::Index(i))));
  MESSAGE("model with the saved adapter against the trainer's logits: max abs difference " << worst);
  CHECK(worst < 1e-3f);
  lm.model().set_adapters({});
}

TEST_CASE("LoRA training: a run resumed from a checkpoint continues the same loss curve") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = load_stories();
  const auto train = text_windows(lm.tokenizer(), read_text(corpus("train.txt")), 64);
  ThreadPool pool(2);
  const LoraTrainOptions opt{.rank = 4, .alpha = 8.0f, .targets = {LoraTarget::q, LoraTarget::v, LoraTarget::down}};
  auto run_steps = [&](LoraTrainer<float>& tr, std::size_t from, std::size_t to) {   // of an 8-step schedule
    std::vector<double> losses;
    for (std::size_t step = from; step < to; ++step) {
      std::vector<TrainingSequence> b;
      for (std::size_t i : batch_indices(train.size(), step, 3, 7)) b.push_back(train[i]);
      losses.push_back(tr.accumulate(pool, b).mean());
      tr.step(learning_rate(step, 8, 2e-3f, 2));
    }
    return losses;
  };
  LoraTrainer<float> straight(lm.model(), opt);
  const auto all = run_steps(straight, 0, 8);
  LoraTrainer<float> first(lm.model(), opt);
  run_steps(first, 0, 4);
  const auto path = temp_file("checkpoint.gguf");
  first.save_checkpoint(path.string());
  LoraTrainer<float> resumed(lm.model(), {.rank = 4, .alpha = 8.0f, .targets = opt.targets, .seed = 99});
  resumed.load_checkpoint(path.string());
  CHECK(resumed.steps_done() == 4);
  const auto rest = run_steps(resumed, 4, 8);
  for (std::size_t i = 0; i < rest.size(); ++i) CHECK(rest[i] == all[4 + i]);
  // A trainer of another shape refuses the checkpoint.
  LoraTrainer<float> other(lm.model(), {.rank = 2});
  CHECK_THROWS_WITH_AS(other.load_checkpoint(path.string()), doctest::Contains("shape"), Error);
  std::filesystem::remove(path);
}

TEST_CASE("LoRA training data: text windows, chat masks, batch order, schedule") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = load_stories();
  const Tokenizer& tok = lm.tokenizer();
  const std::string text = read_text(corpus("train.txt"));
  const auto ids = tok.encode(text, false);
  const auto w = text_windows(tok, text, 64);
  // Each window is BOS then the next stretch of the text; consecutive windows overlap by one token
  // (the last target of one is the first input of the next), so every token is predicted once.
  std::size_t at = 0;
  for (const auto& s : w) {
    REQUIRE(s.tokens.front() == tok.bos());
    REQUIRE(s.tokens.size() <= 65);
    CHECK(std::equal(s.tokens.begin() + 1, s.tokens.end(), ids.begin() + std::ptrdiff_t(at)));
    CHECK(s.weights.size() == s.tokens.size() - 1);
    at += s.tokens.size() - 2;
  }
  CHECK(at + 1 >= ids.size() - 16);

  // Chat: only the assistant's tokens are scored, and the scored tokens spell its reply.
  const std::vector<ChatMessage> chat = {{"system", "Be kind."}, {"user", "Who is Pip?"}, {"assistant", "Pip is a frog."},
                                         {"user", "And Moss?"}, {"assistant", "Moss is a snail."}};
  const TrainingSequence s = chat_sequence(tok, ChatFormat::llama2, chat, 512);
  std::string scored;
  std::int32_t prev = s.tokens[0];
  for (std::size_t i = 0; i + 1 < s.tokens.size(); ++i) {
    if (s.weights[i] > 0) scored += tok.decode(prev, s.tokens[i + 1]);
    prev = s.tokens[i + 1];
  }
  CHECK(scored.find("Pip is a frog.") != std::string::npos);
  CHECK(scored.find("Moss is a snail.") != std::string::npos);
  CHECK(scored.find("Who is Pip") == std::string::npos);
  CHECK_THROWS_AS(chat_sequence(tok, ChatFormat::llama2, std::span(chat).first(2), 512), Error);

  // Each epoch visits every example once; the order depends on the step only.
  std::vector<int> seen(10, 0);
  for (std::size_t step = 0; step < 5; ++step)
    for (std::size_t i : batch_indices(10, step, 2, 3)) ++seen[i];
  CHECK(std::ranges::all_of(seen, [](int c) { return c == 1; }));
  CHECK(batch_indices(10, 7, 3, 3) == batch_indices(10, 7, 3, 3));

  CHECK(learning_rate(0, 100, 1.0f, 10) == doctest::Approx(0.1));
  CHECK(learning_rate(9, 100, 1.0f, 10) == doctest::Approx(1.0));
  CHECK(learning_rate(10, 100, 1.0f, 10) == doctest::Approx(1.0));
  CHECK(learning_rate(100, 100, 1.0f, 10) == doctest::Approx(0.1));
}

TEST_CASE("LoRA training: bad input is a clear error") {
  GGUFWriter w;
  write_synthetic_llama(w, synthetic_shape("tiny"), weight_mix("F32"), 5);
  LoadedModel lm = load_gguf_bytes(w.to_bytes(), "tiny");
  ThreadPool pool(1);
  LoraTrainer<float> tr(lm.model(), {});
  TrainingSequence bad{{1, 99999}, {1.0f}};
  CHECK_THROWS_WITH_AS(tr.accumulate(pool, std::span(&bad, 1)), doctest::Contains("out of range"), Error);
  TrainingSequence short_one{{1}, {}};
  CHECK_THROWS_AS(tr.accumulate(pool, std::span(&short_one, 1)), Error);
  CHECK_THROWS_WITH_AS(tr.step(1e-3f), doctest::Contains("without gradients"), Error);
  CHECK_THROWS_AS(LoraTrainer<float>(lm.model(), {.rank = 0}), Error);
}

TEST_CASE("LoRA training: the trainer's forward is the model's, for every architecture it supports") {
  // The adapter starts as a no-op (B = 0): the trainer's logits are the base model's. Llama,
  // Qwen2 (Q/K/V biases) and Gemma (GeGLU, scaled embeddings, half-split RoPE); the others are
  // refused by name.
  ThreadPool pool(2);
  int checked = 0;
  for (const char* name : {"llama", "qwen2", "gemma"}) {
    const std::string file = std::string("arch/") + name + ".gguf";
    if (!std::filesystem::exists(test::testdata(file))) continue;
    CAPTURE(name);
    LoadedModel lm = load(test::testdata(file).string());
    LoraTrainer<float> tr(lm.model(), {.rank = 4});
    const std::size_t n = 24, vocab = lm.config().vocab_size;
    std::vector<std::int32_t> ids(n), pos(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t(1 + (i * 37) % (vocab - 1)), pos[i] = std::int32_t(i);
    std::vector<float> want(n * vocab);
    auto cache = lm.model().new_kv_cache(n);
    lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(want.data(), n, vocab));
    const auto got = tr.logits(ids);
    float worst = 0;
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t i = 0; i < vocab; ++i)
        worst = std::max(worst, std::fabs(got(Eigen::Index(t), Eigen::Index(i)) - want[t * vocab + i]));
    MESSAGE(std::string(name) << ": trainer against model logits, max abs difference " << worst);
    CHECK(worst < 1e-3f);
    ++checked;
  }
  for (const char* name : {"gemma2", "qwen3"}) {
    const std::string file = std::string("arch/") + name + ".gguf";
    if (!std::filesystem::exists(test::testdata(file))) continue;
    LoadedModel lm = load(test::testdata(file).string());
    CHECK_THROWS_WITH_AS(LoraTrainer<float>(lm.model(), {}), doctest::Contains("does not support"), Error);
  }
  if (checked == 0) MESSAGE("TINYLLM_SKIP: no architecture file in " << test::testdata_dir().string());
}
