// Tensor parallelism (model/tensor_parallel.hpp) with ranks as threads (comm/thread_group.hpp):
// how heads, FFN units and the vocabulary are shared out, and the logits of 2 and 3 ranks
// against the same model in one process and against llama.cpp. tests/mpi/ runs the same split
// over MPI.
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

TEST_CASE("rank_share: every query head, K/V head, FFN unit and vocabulary row is held, grouped as in the model") {
  struct Shape { std::size_t heads, kv_heads, ff, vocab, unit; };
  for (const Shape& m : {Shape{4, 2, 512, 512, 256}, Shape{32, 8, 5632, 32000, 32}, Shape{8, 1, 96, 7, 1},
                         Shape{12, 12, 3072, 50257, 256}, Shape{14, 2, 4864, 151936, 32}, Shape{6, 3, 64, 10, 32}})
    for (std::size_t ranks = 1; ranks <= m.heads; ++ranks) {
      CAPTURE(m.heads);
      CAPTURE(m.kv_heads);
      CAPTURE(ranks);
      ModelConfig c;
      c.n_heads = m.heads;
      c.n_kv_heads = m.kv_heads;
      c.n_ff = m.ff;
      c.vocab_size = m.vocab;
      const std::size_t group = m.heads / m.kv_heads;
      std::size_t next_q = 0, next_ff = 0, next_vocab = 0;
      std::vector<std::size_t> kv_holders(m.kv_heads, 0);
      for (std::size_t r = 0; r < ranks; ++r) {
        const RankShare s = rank_share(c, r, ranks, m.unit);
        CHECK(s.q_head0 == next_q);   // contiguous, in rank order, never empty
        CHECK(s.n_q_heads >= 1);
        next_q += s.n_q_heads;
        // The rank's query heads read its K/V heads with one group size: local head j reads local K/V head j / g.
        REQUIRE(s.n_kv_heads >= 1);
        REQUIRE(s.n_q_heads % s.n_kv_heads == 0);
        const std::size_t g = s.n_q_heads / s.n_kv_heads;
        for (std::size_t j = 0; j < s.n_q_heads; ++j) CHECK((s.q_head0 + j) / group == s.kv_head0 + j / g);
        for (std::size_t k = s.kv_head0; k < s.kv_head0 + s.n_kv_heads; ++k) ++kv_holders.at(k);
        CHECK(s.ff0 == next_ff);
        CHECK(s.n_ff % m.unit == 0);
        next_ff += s.n_ff;
        CHECK(s.vocab0 == next_vocab);
        next_vocab += s.n_vocab;
      }
      CHECK(next_q == m.heads);
      CHECK(next_ff == m.ff);
      CHECK(next_vocab == m.vocab);
      for (std::size_t holders : kv_holders) CHECK(holders >= 1);
    }
  ModelConfig c;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.n_ff = 512;
  c.vocab_size = 512;
  CHECK_THROWS_WITH_AS(rank_share(c, 0, 5), doctest::Contains("at most one rank per attention head"), Error);
}

TEST_CASE("ThreadGroup: all-reduce sums, all-gather concatenates in rank order, broadcast copies the root's") {
  const auto got = test::on_ranks(3, [](Communicator& comm) {
    const float r = float(comm.rank());
    std::vector<float> sum = {r, 10 * r, 1.0f};
    comm.all_reduce_sum(sum);
    const std::vector<std::size_t> counts = {1, 2, 3};
    std::vector<float> mine(counts[comm.rank()], r), all(6);
    comm.all_gather(mine, all, counts);
    std::vector<std::byte> b(4, std::byte(comm.rank()));
    comm.broadcast(b, 2);
    sum.insert(sum.end(), all.begin(), all.end());
    for (std::byte x : b) sum.push_back(float(x));
    return sum;
  });
  for (const auto& g : got) CHECK(g == std::vector<float>{3, 30, 3, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2});
}

// Every architecture file (the mixture-of-experts ones split each expert as a dense FFN) and the
// quantized llama files, split over 2 and 3 ranks (4 query heads,
// 2 K/V heads: 3 ranks share a K/V head; Q4_K's 256-column blocks leave one of 3 ranks no FFN).
// F32 files: the ranks' partial sums add up in another order, a few ulps. Quantized files: those
// ulps move an occasional activation across an 8-bit rounding boundary (for a few tokens of 512,
// about 0.01 in the logits), so they are held to the tolerance of their llama.cpp references.
TEST_CASE("2 and 3 ranks give the single-process logits (1e-4; quantized files: llama.cpp's within 0.05)") {
  TINYLLM_REQUIRE_TESTDATA("arch/llama.gguf");
  struct File { const char* model; const char* ref; bool quantized; };
  for (const File& f : {File{"llama", "llama", false}, File{"llama3rope", "llama3rope", false}, File{"qwen2", "qwen2", false},
                        File{"qwen3", "qwen3", false}, File{"gemma", "gemma", false}, File{"gemma2", "gemma2", false},
                        File{"gemma3", "gemma3", false}, File{"mixtral", "mixtral", false},
                        File{"qwen3moe", "qwen3moe", false}, File{"llama-Q8_0", "llama-Q8_0.norepack", true},
                        File{"llama-Q4_0", "llama-Q4_0.norepack", true}, File{"llama-Q4_K_M", "llama-Q4_K_M.norepack", true},
                        File{"llama-Q5_K_M", "llama-Q5_K_M.norepack", true}, File{"llama-Q6_K", "llama-Q6_K.norepack", true}}) {
    const std::string model = f.model;
    CAPTURE(model);
    const std::string path = test::testdata(std::string("arch/") + f.model + ".gguf").string();
    ThreadPool pool(1);
    LoadedModel whole = load(path);
    const auto want = test::run_reference_inputs(whole.model(), f.ref, pool);
    const auto llama_cpp_prompt = test::read_f32(test::testdata("arch") / (std::string(f.ref) + ".logits.f32"));
    const auto llama_cpp_decode = test::read_f32(test::testdata("arch") / (std::string(f.ref) + ".decode.f32"));
    for (std::size_t ranks : {2u, 3u}) {
      CAPTURE(ranks);
      const auto runs = test::on_ranks(ranks, [&](Communicator& comm) {
        LoadOptions opt;
        opt.comm = &comm;
        LoadedModel part = load(path, opt);
        ThreadPool one(1);
        return test::run_reference_inputs(part.model(), f.ref, one);
      });
      for (std::size_t r = 0; r < ranks; ++r) {
        CAPTURE(r);
        REQUIRE(runs[r].prompt.size() == want.prompt.size());
        REQUIRE(runs[r].decode.size() == want.decode.size());
        CHECK(runs[r].prompt == runs[0].prompt);   // every rank has the same logits
        const float d = std::max(test::max_abs_diff(runs[r].prompt, want.prompt), test::max_abs_diff(runs[r].decode, want.decode));
        MESSAGE("max abs difference to one process: " << d);
        if (f.quantized) {
          CHECK(test::max_abs_diff(runs[r].prompt, llama_cpp_prompt) <= 0.05f);
          CHECK(test::max_abs_diff(runs[r].decode, llama_cpp_decode) <= 0.05f);
        } else {
          CHECK(d <= 1e-4f);
        }
      }
    }
  }
}

TEST_CASE("stories260K split over 2 and 3 ranks writes llama2.c's greedy text") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  const std::string path = test::testdata("arch/stories260K.gguf").string();
  ThreadPool pool(1);
  LoadedModel whole = load(path);
  const std::string want = test::stories_greedy_text(whole, pool);
  for (std::size_t ranks : {2u, 3u}) {
    const auto texts = test::on_ranks(ranks, [&](Communicator& comm) {
      LoadOptions opt;
      opt.comm = &comm;
      LoadedModel part = load(path, opt);
      ThreadPool one(1);
      return test::stories_greedy_text(part, one);
    });
    for (const std::string& t : texts) CHECK(t == want);
  }
}

TEST_CASE("a rank's share: its own heads' K/V and FFN rows, as views of the file's rows") {
  TINYLLM_REQUIRE_TESTDATA("arch/llama-Q4_0.gguf");
  const std::string path = test::testdata("arch/llama-Q4_0.gguf").string();
  const auto file = GGUFFile::open(path);
  const std::size_t q_row = row_bytes(DType::Q4_0, 256);
  const auto shares = test::on_ranks(2, [&](Communicator& comm) {
    LoadOptions opt;
    opt.comm = &comm;
    opt.pack_weights = false;
    LoadedModel part = load(path, opt);
    const ModelConfig& c = part.config();
    const LayerWeights& l = part.model().weights().layers[0];
    // Rank r's query rows are rows [128 r, 128 r + 128) of the file's attn_q, not a copy of them.
    const auto* q = static_cast<const std::byte*>(file.tensor("blk.0.attn_q.weight").data) + comm.rank() * 128 * q_row;
    const bool view = l.wq.data != nullptr && !l.wq.owned && std::memcmp(l.wq.data, q, 128 * q_row) == 0;
    return std::vector<std::size_t>{c.n_heads, c.n_kv_heads, c.n_ff, c.vocab_size, l.wq.rows, l.wk.rows, l.w_gate.rows,
                                    l.wo.cols, l.w_down.cols, part.model().weights().output.rows, std::size_t(view)};
  });
  // 4 query heads of 64 and 2 K/V heads over 2 ranks: 2 and 1 each, half of the 512 FFN units
  // and of the 512 vocabulary rows; the vocabulary size the logits have stays whole.
  for (const auto& s : shares) CHECK(s == std::vector<std::size_t>{2, 1, 256, 512, 128, 64, 256, 128, 256, 256, 1});
}
