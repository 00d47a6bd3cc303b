// tinyllm-run, tinyllm-logits, tinyllm-tokenize, tinyllm-batch, tinyllm-perplexity and tinyllm-finetune as a user
// runs them: output,
// exit codes, error messages.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.hpp"

#if defined(TINYLLM_RUN_BIN) && defined(TINYLLM_LOGITS_BIN) && defined(TINYLLM_TOKENIZE_BIN) && defined(TINYLLM_BATCH_BIN) && \
    defined(TINYLLM_PERPLEXITY_BIN) && defined(TINYLLM_FINETUNE_BIN)

namespace {

struct Outcome { int status; std::string out; };

// Runs a shell command; stdout is captured, stderr is folded in when `with_stderr`.
Outcome shell(const std::string& cmd, bool with_stderr = false) {
  std::FILE* p = popen((cmd + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  for (std::size_t n; (n = std::fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string q(const std::filesystem::path& p) {
  std::string quoted = "'";   // appended piece by piece: GCC 12 warns (wrongly) on "'" + s + "'"
  quoted += p.string();
  quoted += '\'';
  return quoted;
}

}  // namespace

TEST_CASE("tinyllm-run with no arguments tells llama2.c's story from the built-in stories260K, in any directory") {
  // From another directory: the model is inside the program, not read from the source tree.
  const Outcome r = shell("cd / && " + std::string(TINYLLM_RUN_BIN));
  CHECK(r.status == 0);
  REQUIRE(r.out.size() >= 100);
  CHECK(r.out.starts_with("Once upon a time"));
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  // llama2.c: run stories260K.bin -z tok512.bin -t 0.0 -n 200 -i "Once upon a time".
  const auto want = tinyllm::test::read_bytes(tinyllm::test::testdata("reference/Once_upon_a_time_n200.txt"));
  CHECK(r.out.substr(0, 100) == std::string(want.begin(), want.begin() + 100));
}

TEST_CASE("the built-in model is stories260K as the library's converter writes it from llama2.c's files") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  tinyllm::GGUFWriter w;
  tinyllm::convert_llama2c_to_gguf(tinyllm::test::testdata("llama2c/stories260K.bin").string(),
                                   tinyllm::test::testdata("llama2c/tok512.bin").string(), w, "stories260K", "MIT",
                                   "https://huggingface.co/karpathy/tinyllamas/tree/main/stories260K");
  const auto bytes = w.to_bytes();
  const auto committed = tinyllm::test::read_bytes(std::filesystem::path(TINYLLM_SOURCE_DIR) / "examples/models/stories260K.gguf");
  REQUIRE(bytes.size() == committed.size());
  CHECK(std::memcmp(bytes.data(), committed.data(), bytes.size()) == 0);
}

TEST_CASE("tinyllm-run --synthetic runs the embedded random-weight model") {
  const Outcome r = shell(std::string(TINYLLM_RUN_BIN) + " --synthetic -n 8 --seed 3", true);
  CHECK(r.status == 0);
  CHECK(r.out.find("embedded random-weight model") != std::string::npos);
  CHECK(r.out.find("generation: 8 tokens") != std::string::npos);
}

TEST_CASE("tinyllm-run prints llama2.c's greedy text for stories260K") {
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  // llama2.c's -n 200 counts the 5 prompt positions; 196 tokens follow the prompt.
  const Outcome r = shell(std::string(TINYLLM_RUN_BIN) + " -m " + q(tinyllm::test::testdata("llama2c/stories260K.bin")) +
                          " -z " + q(tinyllm::test::testdata("llama2c/tok512.bin")) +
                          " -p 'Once upon a time' -n 196 --temp 0 -t 2");
  CHECK(r.status == 0);
  const auto want = tinyllm::test::read_bytes(tinyllm::test::testdata("reference/Once_upon_a_time_n200.txt"));
  CHECK(r.out == std::string(want.begin(), want.end()));
}

TEST_CASE("tinyllm-run --chat keeps the conversation across turns and drops the oldest when the context fills") {
  // The built-in stories260K (512 positions, no chat template: "role: content" lines), six turns
  // of up to 100 tokens each from stdin: the conversation outgrows the context.
  const Outcome r = shell("printf 'Tell me a story.\\nAnd then?\\nWhat did Lily do?\\nWhere is the cat?\\nMore.\\nThe end?\\n' | " +
                          std::string(TINYLLM_RUN_BIN) + " --chat -n 100 --temp 0 -t 1", true);
  CHECK(r.status == 0);
  std::vector<std::size_t> prompts, replies;
  for (std::size_t at = 0; (at = r.out.find("prompt: ", at)) != std::string::npos; ++at) {
    std::size_t p = 0, g = 0;
    REQUIRE(std::sscanf(r.out.c_str() + at, "prompt: %zu tokens, %*f tokens/s | generation: %zu", &p, &g) == 2);
    prompts.push_back(p);
    replies.push_back(g);
  }
  REQUIRE(prompts.size() == 6);
  // Each turn's prompt holds the one before it and its reply (until the context is full).
  CHECK(prompts[1] > prompts[0] + replies[0]);
  CHECK(prompts[2] > prompts[1] + replies[1]);
  CHECK(r.out.find("[context: ") != std::string::npos);
  CHECK(r.out.find("[context full: the ") != std::string::npos);
  for (std::size_t i = 0; i < 6; ++i) CHECK(prompts[i] + replies[i] <= 512);
}

namespace {

// A program with its stdin, stdout and stderr on pipes, for a conversation driven by the test.
struct Child {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;
  std::string out_text, err_text;

  explicit Child(const std::vector<std::string>& args) {
    int i[2], o[2], e[2];
    REQUIRE((pipe(i) == 0 && pipe(o) == 0 && pipe(e) == 0));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, i[0], 0);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    for (const int fd : {i[0], i[1], o[0], o[1], e[0], e[1]}) posix_spawn_file_actions_addclose(&fa, fd);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(i[0]);
    close(o[1]);
    close(e[1]);
    in = i[1];
    out = o[0];
    err = e[0];
  }
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    for (const int fd : {in, out, err})
      if (fd >= 0) close(fd);
  }
  void say(const std::string& line) { REQUIRE(write(in, line.data(), line.size()) == ssize_t(line.size())); }
  // Reads stdout and stderr until `done()` holds; false after 60 s or at the end of both.
  template <class Pred>
  bool read_until(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done()) {
      if (out < 0 && err < 0) return false;   // both ended
      pollfd fds[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};   // poll skips an fd of -1
      if (std::chrono::steady_clock::now() > deadline || poll(fds, 2, 1000) < 0) return false;
      for (auto& f : fds) {
        if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP))) continue;
        char buf[4096];
        const ssize_t n = read(f.fd, buf, sizeof buf);
        int& fd = f.fd == out ? out : err;
        if (n > 0) {
          (fd == out ? out_text : err_text).append(buf, std::size_t(n));
        } else {
          close(fd);
          fd = -1;
        }
      }
    }
    return true;
  }
  // The exit status, or 128 + the signal that ended it.
  int wait() {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
}

}  // namespace

TEST_CASE("tinyllm-run --chat: Ctrl-C stops the reply being written, not the conversation, and at the prompt it quits") {
  // The random-weight model writes noise with no end token: a reply runs to -n unless stopped. It
  // writes thousands of tokens a second, so the signal may come after the reply has ended: then
  // the test tries again (at most 5 times).
  bool stopped_one = false;
  for (int attempt = 0; attempt < 5 && !stopped_one; ++attempt) {
    Child run({TINYLLM_RUN_BIN, "--synthetic", "--chat", "-n", "400", "--temp", "0", "-t", "1"});
    run.say("Tell me a story.\n");
    REQUIRE(run.read_until([&] { return !run.out_text.empty(); }));   // the reply has begun
    kill(run.pid, SIGINT);
    REQUIRE(run.read_until([&] { return run.err_text.find("generation: ") != std::string::npos; }));
    if (run.err_text.find("[stopped]") == std::string::npos) continue;   // the reply was done first
    stopped_one = true;
    std::size_t first = 0;
    REQUIRE(std::sscanf(run.err_text.c_str() + run.err_text.find("generation: "), "generation: %zu", &first) == 1);
    CHECK(first < 400);
    // The conversation goes on: the next reply runs to its end.
    run.say("And then?\n");
    REQUIRE(run.read_until([&] {
      const std::size_t at = run.err_text.rfind("generation: ");
      return count(run.err_text, "generation: ") == 2 && run.err_text.find('\n', at) != std::string::npos;
    }));
    std::size_t second = 0;
    REQUIRE(std::sscanf(run.err_text.c_str() + run.err_text.rfind("generation: "), "generation: %zu", &second) == 1);
    CHECK(count(run.err_text, "[stopped]") == 1);
    CHECK(second > first);
    // Waiting for the next line, Ctrl-C ends the program (130, as a shell reports SIGINT).
    kill(run.pid, SIGINT);
    CHECK(run.wait() == 130);
  }
  CHECK(stopped_one);
}

TEST_CASE("tinyllm-logits writes llama2.c's 25 rows of logits for stories260K") {
  TINYLLM_REQUIRE_TESTDATA("reference/once_upon_a_time_p25.logits.f32");
  const auto out = std::filesystem::temp_directory_path() / "tinyllm_cli_test_logits.f32";
  const Outcome r = shell(std::string(TINYLLM_LOGITS_BIN) + " -m " + q(tinyllm::test::testdata("llama2c/stories260K.bin")) +
                          " --ids '1 403 407 261 378' --greedy 20 -o " + q(out));
  REQUIRE(r.status == 0);
  const auto got = tinyllm::test::read_f32(out);
  const auto want = tinyllm::test::read_f32(tinyllm::test::testdata("reference/once_upon_a_time_p25.logits.f32"));
  REQUIRE(got.size() == want.size());
  float worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  CHECK(worst <= 1e-4f);
  std::filesystem::remove(out);
}

TEST_CASE("tinyllm-tokenize reproduces llama.cpp's tokenizations of its test strings, file bytes exact") {
  TINYLLM_REQUIRE_TESTDATA("vocab/ggml-vocab-llama-spm.gguf.inp");
  for (const std::string name : {"llama-spm", "gpt-2"}) {
    CAPTURE(name);
    const auto vocab = tinyllm::test::testdata("vocab/ggml-vocab-" + name + ".gguf");
    const auto inp = tinyllm::test::read_bytes(vocab.string() + ".inp");
    const auto out = tinyllm::test::read_bytes(vocab.string() + ".out");
    const std::string all(inp.begin(), inp.end()), expected(out.begin(), out.end());
    // Test strings are separated by "\n__ggml_vocab_test__\n"; take the first few.
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::size_t at = 0, line_at = 0;
    for (int i = 0; i < 6; ++i) {
      const std::size_t end = all.find(sep, at);
      const std::string text = all.substr(at, end - at);
      const std::size_t line_end = expected.find('\n', line_at);
      std::string want = expected.substr(line_at, line_end - line_at);   // " 474 287 ...": ids after a space
      want.erase(0, want.find_first_not_of(' ') == std::string::npos ? want.size() : want.find_first_not_of(' '));
      at = end + sep.size();
      line_at = line_end + 1;
      const auto file = std::filesystem::temp_directory_path() / "tinyllm_cli_tokenize.txt";
      { std::ofstream(file, std::ios::binary) << text; }
      const Outcome r = shell(std::string(TINYLLM_TOKENIZE_BIN) + " -m " + q(vocab) + " -f " + q(file) + " --no-bos");
      CHECK(r.status == 0);
      CHECK(r.out == want + "\n");
      std::filesystem::remove(file);
    }
  }
}

TEST_CASE("tinyllm-batch completes every line through the engine: llama2.c's text, tinyllm-run's text") {
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  const std::vector<std::string> prompts{"Once upon a time", "The cat sat", "Lily and Tom", "One day, a big dog",
                                         "She was happy"};
  const auto file = std::filesystem::temp_directory_path() / "tinyllm_cli_batch_prompts.txt";
  {
    std::ofstream f(file);
    for (const auto& p : prompts) f << p << "\n";
  }
  const std::string model = " -m " + q(tinyllm::test::testdata("llama2c/stories260K.bin")) + " -z " +
                            q(tinyllm::test::testdata("llama2c/tok512.bin"));
  // One JSON object per line, each index once: index -> text.
  const auto run_batch = [&](const std::string& kv) {
    const Outcome r = shell(std::string(TINYLLM_BATCH_BIN) + model + " -f " + q(file) +
                            " -n 40 --temp 0 --parallel 3 -t 2 --kv-type " + kv);
    CHECK(r.status == 0);
    std::vector<std::string> texts(prompts.size());
    std::set<std::size_t> seen;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      const auto j = nlohmann::json::parse(line);
      const std::size_t i = j.at("index").get<std::size_t>();
      REQUIRE(i < prompts.size());
      CHECK(seen.insert(i).second);
      texts[i] = j.at("text").get<std::string>();
    }
    CHECK(seen.size() == prompts.size());
    return texts;
  };
  const auto texts = run_batch("f32");
  // llama2.c's greedy continuation of the first prompt (independent of tinyllm).
  const auto ref = tinyllm::test::read_bytes(tinyllm::test::testdata("reference/Once_upon_a_time_n200.txt"));
  const std::string continuation = std::string(ref.begin(), ref.end()).substr(prompts[0].size());
  CHECK(texts[0].size() > 40);
  CHECK(continuation.compare(0, texts[0].size(), texts[0]) == 0);
  // The others: what tinyllm-run (one sequence, contiguous cache) prints after the prompt.
  for (std::size_t i = 1; i < prompts.size(); ++i) {
    CAPTURE(prompts[i]);
    const Outcome r = shell(std::string(TINYLLM_RUN_BIN) + model + " -p '" + prompts[i] + "' -n 40 --temp 0 -t 2");
    REQUIRE(r.status == 0);
    CHECK(r.out == prompts[i] + texts[i] + "\n");
  }
  // F16 K/V storage (the default) changes no greedy token of this model.
  CHECK(run_batch("f16") == texts);
  std::filesystem::remove(file);
}

TEST_CASE("tinyllm-perplexity: stories260K finds a story likelier than the same words shuffled") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  const std::string story =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her mom. "
      "One day, she saw a big red ball under a tree. She ran to the ball and picked it up. Lily was very happy.";
  // The same words in another order (a fixed permutation): grammar and story gone.
  std::vector<std::string> words;
  for (std::istringstream in(story); in;) {
    std::string w;
    if (in >> w) words.push_back(w);
  }
  std::string shuffled;
  for (std::size_t i = 0; i < words.size(); ++i) shuffled += (i ? " " : "") + words[(i * 17 + 5) % words.size()];
  REQUIRE(std::gcd(std::size_t(17), words.size()) == 1);   // a permutation
  auto perplexity = [&](const std::string& text, std::size_t ctx) {
    const auto file = std::filesystem::temp_directory_path() / "tinyllm_cli_test_ppl.txt";
    { std::ofstream(file) << text; }
    const Outcome r = shell(std::string(TINYLLM_PERPLEXITY_BIN) + " -m " + q(tinyllm::test::testdata("llama2c/stories260K.bin")) +
                            " -f " + q(file) + " --ctx " + std::to_string(ctx) + " -t 2");
    std::filesystem::remove(file);
    REQUIRE(r.status == 0);
    const auto at = r.out.rfind("perplexity: ");
    REQUIRE(at != std::string::npos);
    return std::stod(r.out.substr(at + 12));
  };
  const double story_ppl = perplexity(story, 256), shuffled_ppl = perplexity(shuffled, 256);
  MESSAGE("stories260K perplexity: story " << story_ppl << ", shuffled " << shuffled_ppl);
  CHECK(story_ppl > 1.0);
  CHECK(story_ppl < 512.0);   // better than a uniform guess over its 512 tokens
  CHECK(story_ppl * 2 < shuffled_ppl);
  // Short windows see less context: the story gets no likelier.
  CHECK(perplexity(story, 8) > story_ppl);
}

TEST_CASE("tinyllm-finetune: an adapter trained on Captain Moss stories makes held-out ones likelier; resume") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  const auto data = std::filesystem::path(TINYLLM_SOURCE_DIR) / "tests/train/data";
  const auto tmp = std::filesystem::temp_directory_path();
  const auto adapter = tmp / "tinyllm_cli_test_moss.gguf", checkpoint = tmp / "tinyllm_cli_test_moss.ckpt";
  const std::string model = " -m " + q(tinyllm::test::testdata("llama2c/stories260K.bin")) + " -z " +
                            q(tinyllm::test::testdata("llama2c/tok512.bin"));
  const std::string train = std::string(TINYLLM_FINETUNE_BIN) + model + " --data " + q(data / "train.txt") +
                            " --eval " + q(data / "heldout.txt") + " -o " + q(adapter) + " --ctx 128 --batch 4 -t 2" +
                            " --checkpoint " + q(checkpoint) + " --checkpoint-every 20 --log-every 20";
  Outcome r = shell(train + " --steps 40", true);
  REQUIRE_MESSAGE(r.status == 0, r.out);
  CHECK(r.out.find("step 40/40 | loss") != std::string::npos);
  CHECK(r.out.find("tokens/s") != std::string::npos);
  // Resumed at step 40 of 80 from the checkpoint, the run goes on to 80.
  r = shell(train + " --steps 80 --resume " + q(checkpoint), true);
  REQUIRE_MESSAGE(r.status == 0, r.out);
  CHECK(r.out.find("step 60/80") != std::string::npos);
  CHECK(r.out.find("step 20/80") == std::string::npos);
  auto perplexity = [&](const std::string& extra) {
    const Outcome p = shell(std::string(TINYLLM_PERPLEXITY_BIN) + model + " -f " + q(data / "heldout.txt") +
                            " --ctx 128 -t 2" + extra);
    REQUIRE(p.status == 0);
    return std::stod(p.out.substr(p.out.rfind("perplexity: ") + 12));
  };
  const double base = perplexity(""), tuned = perplexity(" --lora " + q(adapter));
  MESSAGE("held-out Captain Moss perplexity: base " << base << ", with the adapter " << tuned);
  CHECK(tuned * 2 < base);
  // Bad data is a clear error naming the line.
  const auto bad = tmp / "tinyllm_cli_test_bad.jsonl";
  { std::ofstream(bad) << "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\nnot json\n"; }
  r = shell(std::string(TINYLLM_FINETUNE_BIN) + model + " --data " + q(bad) + " -o " + q(adapter) +
                " --chat-template llama2", true);
  CHECK(r.status == 1);
  CHECK(r.out.find("tinyllm_cli_test_bad.jsonl:1") != std::string::npos);   // no assistant turn
  for (const auto& f : {adapter, checkpoint, bad}) std::filesystem::remove(f);
}

TEST_CASE("bad input to the programs is a clear error and exit status 1") {
  Outcome r = shell(std::string(TINYLLM_RUN_BIN) + " -m /nonexistent/model.gguf", true);
  CHECK(r.status == 1);
  CHECK(r.out.find("/nonexistent/model.gguf") != std::string::npos);
  r = shell(std::string(TINYLLM_LOGITS_BIN) + " -m /nonexistent.gguf --ids '1 x' -o /dev/null", true);
  CHECK(r.status == 1);
  const auto model = std::filesystem::temp_directory_path() / "tinyllm_cli_test_not_a_model.bin";
  { std::ofstream(model) << "definitely not a model"; }
  r = shell(std::string(TINYLLM_LOGITS_BIN) + " -m " + q(model) + " --ids '1' -o /dev/null", true);
  CHECK(r.status == 1);
  CHECK(r.out.find("tinyllm:") != std::string::npos);
  r = shell(std::string(TINYLLM_PERPLEXITY_BIN) + " -m " + q(model) + " -f /nonexistent/text.txt", true);
  CHECK(r.status == 1);
  CHECK(r.out.find("/nonexistent/text.txt") != std::string::npos);
  r = shell(std::string(TINYLLM_BATCH_BIN) + " -f /nonexistent/prompts.txt -n 4", true);
  CHECK(r.status == 1);
  CHECK(r.out.find("/nonexistent/prompts.txt") != std::string::npos);
  std::filesystem::remove(model);
}

#endif
