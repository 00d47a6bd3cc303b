// tinyllm-finetune: trains a LoRA adapter for a model, the base weights frozen in whatever type
// its file holds (QLoRA for quantized files), and writes it as an adapter GGUF that tinyllm-run,
// tinyllm-server and llama.cpp load with --lora.
//   tinyllm-finetune -m stories260K.bin -z tok512.bin --data stories.txt -o style.gguf
// Data: a text file (next-token prediction over windows of --ctx tokens), or a .jsonl file of
// chat conversations, one {"messages": [{"role": ..., "content": ...}, ...]} per line, rendered
// with the model's chat template and scored on the assistant's tokens only. Held-out loss comes
// from --eval FILE, or else from every tenth example of the data, kept out of training. A
// progress line every --log-every steps: step, loss, learning rate, tokens/s, held-out loss.
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw tinyllm::Error("cannot read the data file", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Training examples of a text or JSONL file.
std::vector<tinyllm::TrainingSequence> examples(const std::string& path, const tinyllm::LoadedModel& lm,
                                                const std::string& template_name, std::size_t ctx) {
  const std::string bytes = read_file(path);
  if (!ends_with(path, ".jsonl")) return tinyllm::text_windows(lm.tokenizer(), bytes, ctx);
  const auto chat = tinyllm::ChatTemplate::for_model(lm.chat_template(), &lm.tokenizer(), template_name, lm.path());
  std::vector<tinyllm::TrainingSequence> out;
  std::istringstream lines(bytes);
  std::string line;
  for (std::size_t n = 1; std::getline(lines, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    std::vector<tinyllm::ChatMessage> messages;
    try {
      const auto j = nlohmann::json::parse(line);
      for (const auto& m : j.at("messages")) messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    } catch (const nlohmann::json::exception& e) {
      throw tinyllm::Error(std::string("bad conversation: ") + e.what(), where,
                           "{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, ...]}");
    }
    try {
      out.push_back(tinyllm::chat_sequence(lm.tokenizer(), chat, messages, ctx));
    } catch (const tinyllm::Error& e) {
      throw tinyllm::Error(e.problem(), where + (e.where().empty() ? "" : ", " + e.where()), e.expected());
    }
  }
  return out;
}

std::vector<tinyllm::LoraTarget> parse_targets(const std::vector<std::string>& names) {
  static const std::map<std::string, tinyllm::LoraTarget> known = {
      {"q", tinyllm::LoraTarget::q},       {"k", tinyllm::LoraTarget::k},   {"v", tinyllm::LoraTarget::v},
      {"o", tinyllm::LoraTarget::o},       {"gate", tinyllm::LoraTarget::gate}, {"up", tinyllm::LoraTarget::up},
      {"down", tinyllm::LoraTarget::down}};
  std::vector<tinyllm::LoraTarget> out;
  for (const auto& n : names) {
    const auto it = known.find(n);
    if (it == known.end()) throw tinyllm::Error("unknown target matrix '" + n + "'", "--targets", "q, k, v, o, gate, up, down");
    out.push_back(it->second);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-finetune: train a LoRA adapter (base weights frozen, any type)"};
  std::string model_path, tokenizer_path, data_path, eval_path, out_path, checkpoint, resume, template_name;
  std::size_t rank = 8, ctx = 128, batch = 4, steps = 300, epochs = 0, warmup = 10, log_every = 10, eval_every = 50;
  std::size_t checkpoint_every = 100;
  float alpha = 16.0f, lr = 3e-3f, weight_decay = 0.0f;
  std::uint64_t seed = 1;
  unsigned threads = 0;
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  app.add_option("-m,--model", model_path, "base model (.gguf or llama2.c .bin)")->required();
  app.add_option("-z,--tokenizer", tokenizer_path, "llama2.c tokenizer .bin");
  app.add_option("--data", data_path, "training data: text, or .jsonl chat conversations")->required();
  app.add_option("--eval", eval_path, "held-out data (same formats); default: every tenth example of --data");
  app.add_option("-o,--output", out_path, "adapter GGUF to write")->required();
  app.add_option("--rank", rank, "LoRA rank r")->capture_default_str();
  app.add_option("--alpha", alpha, "LoRA alpha (the update is scaled by alpha / r)")->capture_default_str();
  app.add_option("--targets", targets, "matrices to adapt: q, k, v, o, gate, up, down (comma separated)")
      ->delimiter(',')->capture_default_str();
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str();
  app.add_option("--epochs", epochs, "passes over the data instead of --steps (0: use --steps)");
  app.add_option("--lr", lr, "peak learning rate (linear warm-up, then cosine decay to a tenth)")->capture_default_str();
  app.add_option("--warmup", warmup, "warm-up steps")->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--batch", batch, "examples per optimizer step (gradients accumulated over them)")->capture_default_str();
  app.add_option("--ctx", ctx, "tokens per example")->capture_default_str();
  app.add_option("--chat-template", template_name, "chat format of .jsonl data (default: the model's)");
  app.add_option("--eval-every", eval_every, "held-out loss every N steps (0: at the end only)")->capture_default_str();
  app.add_option("--log-every", log_every, "a progress line every N steps")->capture_default_str();
  app.add_option("--checkpoint", checkpoint, "checkpoint file, written every --checkpoint-every steps and at the end");
  app.add_option("--checkpoint-every", checkpoint_every, "steps between checkpoints")->capture_default_str();
  app.add_option("--resume", resume, "continue from this checkpoint (same data and flags)");
  app.add_option("--seed", seed, "seed of the adapter's initial values and of the data order")->capture_default_str();
  app.add_option("-t,--threads", threads, "threads; 0 = all cores");
  CLI11_PARSE(app, argc, argv);

  try {
    tinyllm::LoadOptions opt;
    opt.tokenizer_path = tokenizer_path;
    opt.pack_weights = false;   // the trainer reads the weights as the file stores them
    tinyllm::LoadedModel lm = tinyllm::load(model_path, opt);
    if (ctx < 2 || ctx > lm.config().context)
      throw tinyllm::Error("--ctx " + std::to_string(ctx), "tinyllm-finetune",
                           "2 to the model's context " + std::to_string(lm.config().context));
    if (batch == 0) throw tinyllm::Error("--batch 0", "tinyllm-finetune", ">= 1");
    auto train = examples(data_path, lm, template_name, ctx);
    std::vector<tinyllm::TrainingSequence> heldout;
    if (!eval_path.empty()) {
      heldout = examples(eval_path, lm, template_name, ctx);
    } else if (train.size() >= 10) {
      std::vector<tinyllm::TrainingSequence> kept;
      for (std::size_t i = 0; i < train.size(); ++i) (i % 10 == 9 ? heldout : kept).push_back(std::move(train[i]));
      train = std::move(kept);
    }
    if (train.empty()) throw tinyllm::Error("no training examples", data_path);
    if (epochs > 0) steps = (epochs * train.size() + batch - 1) / batch;

    tinyllm::LoraTrainOptions topt{.rank = rank, .alpha = alpha, .targets = parse_targets(targets), .seed = seed,
                                   .weight_decay = weight_decay};
    tinyllm::LoraTrainer<float> trainer(lm.model(), topt);
    if (!resume.empty()) trainer.load_checkpoint(resume);
    tinyllm::ThreadPool pool(threads);
    std::fprintf(stderr, "tinyllm-finetune: %zu training and %zu held-out examples of up to %zu tokens; rank %zu, "
                         "%zu trainable parameters; %zu steps of %zu examples, %u threads\n",
                 train.size(), heldout.size(), ctx, rank, trainer.n_params(), steps, batch, pool.size());
    auto eval = [&] { return heldout.empty() ? 0.0 : trainer.evaluate(pool, heldout).mean(); };
    if (!heldout.empty()) std::fprintf(stderr, "held-out loss before: %.4f\n", eval());

    using Clock = std::chrono::steady_clock;
    const auto t_start = Clock::now();
    auto t_log = t_start;
    double tokens_since = 0, loss_since = 0, count_since = 0, tokens_all = 0;
    for (std::size_t step = trainer.steps_done(); step < steps; ++step) {
      std::vector<tinyllm::TrainingSequence> b;
      for (std::size_t i : tinyllm::batch_indices(train.size(), step, batch, seed)) b.push_back(train[i]);
      const tinyllm::TrainingLoss l = trainer.accumulate(pool, b);
      const float rate = tinyllm::learning_rate(step, steps, lr, warmup);
      if (l.count > 0) trainer.step(rate);
      for (const auto& s : b) tokens_since += double(s.tokens.size() - 1);
      loss_since += l.sum, count_since += l.count;
      const bool last = step + 1 == steps;
      if ((step + 1) % log_every == 0 || last) {
        const double s = std::chrono::duration<double>(Clock::now() - t_log).count();
        std::fprintf(stderr, "step %zu/%zu | loss %.4f | lr %.2e | %.0f tokens/s", step + 1, steps,
                     count_since > 0 ? loss_since / count_since : 0.0, rate, tokens_since / s);
        if (!heldout.empty() && ((eval_every > 0 && (step + 1) % eval_every == 0) || last))
          std::fprintf(stderr, " | held-out %.4f", eval());
        std::fprintf(stderr, "\n");
        tokens_all += tokens_since;
        tokens_since = loss_since = count_since = 0;
        t_log = Clock::now();
      }
      if (!checkpoint.empty() && ((step + 1) % checkpoint_every == 0 || last)) trainer.save_checkpoint(checkpoint);
    }
    trainer.save_adapter(out_path);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::fprintf(stderr, "wrote %s | %.0f training tokens/s overall | peak memory %.1f MiB\n", out_path.c_str(),
                 tokens_all / std::chrono::duration<double>(Clock::now() - t_start).count(), ru.ru_maxrss / 1024.0);
    return 0;
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
