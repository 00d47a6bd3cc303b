// tinyllm-run: generate text from a model, streamed as it is generated.
//   tinyllm-run -m stories260K.bin -z tok512.bin -p "Once upon a time" -n 200 --temp 0
// With no -m it runs the model built into it, stories260K (examples/models/README.md), greedily
// unless --temp is given, and writes a little story; --synthetic runs the embedded random-weight
// model instead (its text is noise).
// --chat renders the conversation with the model's chat template (or --chat-template NAME): with
// -p one turn, else an interactive conversation over stdin, one line per user turn, the history
// kept across turns (the oldest exchanges dropped when the context is full, and its use shown as
// it runs low); Ctrl-C stops the reply being written, Ctrl-C at the prompt or end of input quits.
// --lora FILE / --lora-scaled FILE SCALE (repeatable) add LoRA adapters.
#include <tinyllm/tinyllm.hpp>

#include "common/device_flag.hpp"
#include "common/lora_flags.hpp"
#include "common/progress.hpp"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

namespace {

// Ctrl-C in a conversation: while a reply is written it stops that reply; otherwise it quits.
std::atomic<bool> generating{false}, interrupted{false};

extern "C" void on_interrupt(int) {
  if (generating.load()) {
    interrupted.store(true);
    return;
  }
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(130);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-run: generate text from a GGUF or llama2.c model"};
  std::string model_path, tokenizer_path, prompt = "Once upon a time";
  std::size_t n_new = 256;
  unsigned threads = 0;
  tinyllm::SamplingParams sp;
  app.add_option("-m,--model", model_path, "model file (.gguf or llama2.c .bin) or Hugging Face folder; "
                                           "default: the built-in stories260K");
  bool synthetic = false;
  app.add_flag("--synthetic", synthetic, "run the embedded random-weight model (its text is noise)")->excludes("-m");
  app.add_option("-z,--tokenizer", tokenizer_path, "llama2.c tokenizer .bin (default: the model's own, or tok<vocab>.bin beside it)");
  app.add_option("-p,--prompt", prompt, "prompt text")->capture_default_str();
  app.add_option("-n,--n-predict", n_new, "tokens to generate after the prompt")->capture_default_str();
  app.add_option("--temp", sp.temperature, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", sp.top_k, "keep the k most likely tokens; 0 = off")->capture_default_str();
  app.add_option("--top-p", sp.top_p, "nucleus sampling mass; 1 = off")->capture_default_str();
  app.add_option("--min-p", sp.min_p, "drop tokens below min-p times the top probability; 0 = off")->capture_default_str();
  app.add_option("--repeat-penalty", sp.repetition_penalty, "repetition penalty; 1 = off")->capture_default_str();
  app.add_option("--presence-penalty", sp.presence_penalty,
                 "subtracted from each token already generated, in [-2, 2]; 0 = off")->capture_default_str();
  app.add_option("--frequency-penalty", sp.frequency_penalty,
                 "subtracted per time a token was generated, in [-2, 2]; 0 = off")->capture_default_str();
  app.add_option("--seed", sp.seed, "random seed")->capture_default_str();
  app.add_option("-t,--threads", threads, "threads; 0 = all cores")->capture_default_str();
  bool chat = false;
  std::string system, template_name;
  app.add_flag("--chat", chat, "chat: -p is one user turn; without -p, each line of stdin is a turn");
  app.add_option("--system", system, "system message for --chat");
  app.add_option("--chat-template", template_name, "llama3, llama2, mistral, gemma or chatml (default: from the model)");
  programs::LoraFlags lora;
  lora.add_to(app);
  programs::DeviceFlag device;
  device.add(app);
  CLI11_PARSE(app, argc, argv);
  const bool prompt_given = app.count("--prompt") > 0;

  try {
    tinyllm::LoadOptions opt;
    opt.tokenizer_path = tokenizer_path;
    programs::show_load_progress(opt, model_path.empty() ? "the built-in model" : model_path);
    tinyllm::LoadedModel lm = synthetic ? device.load_synthetic(opt) : device.load(model_path, opt);
    if (synthetic) {
      std::fprintf(stderr, "tinyllm-run: the embedded random-weight model; its text is noise\n");
    } else if (model_path.empty()) {
      std::fprintf(stderr, "tinyllm-run: no model given (-m): the built-in stories260K (llama2.c's tinyllamas, MIT)%s\n",
                   app.count("--temp") ? "" : ", greedy");
      if (!app.count("--temp")) sp.temperature = 0.0f;
    }
    lora.apply(lm.model());
    const tinyllm::Tokenizer& tok = lm.tokenizer();
    tinyllm::ThreadPool pool(threads);

    tinyllm::GenerateOptions g;
    g.max_new_tokens = n_new;
    g.sampling = sp;
    g.stop_tokens = {tok.eos(), tok.bos()};   // a model that starts a new document has ended this one

    // Streams the reply to `ids` and returns its text; `used`: the tokens of prompt and reply.
    std::size_t used = 0;
    auto reply = [&](const std::vector<std::int32_t>& ids, bool echo_prompt) {
      tinyllm::Utf8Stream out;
      std::string text;
      if (echo_prompt)
        for (std::size_t i = 1; i < ids.size(); ++i) std::fputs(out.push(tok.decode(ids[i - 1], ids[i])).c_str(), stdout);
      std::int32_t prev = ids.back();
      interrupted = false;
      generating = true;
      const auto stats = tinyllm::generate(pool, lm.model(), ids, g, [&](std::int32_t id) {
        const std::string piece = tok.decode(prev, id);
        text += piece;
        std::fputs(out.push(piece).c_str(), stdout);
        std::fflush(stdout);
        prev = id;
        return !interrupted.load();
      });
      generating = false;
      std::fputs(out.flush().c_str(), stdout);
      std::fputs("\n", stdout);
      if (interrupted) std::fprintf(stderr, "[stopped]\n");
      used = std::min(stats.prompt_tokens + stats.generated_tokens, lm.config().context);   // the last token needs no position
      std::fprintf(stderr,
                   "\nprompt: %zu tokens, %.2f tokens/s | generation: %zu tokens, %.2f tokens/s | %u threads, %s kernels\n",
                   stats.prompt_tokens, stats.prompt_tokens_per_second(), stats.generated_tokens,
                   stats.generate_tokens_per_second(), pool.size(),
                   device.device == "cpu" ? tinyllm::cpu::kernel_target() : device.describe().c_str());
      return text;
    };

    if (!chat) {
      reply(tok.encode(prompt, /*add_bos=*/true), true);
      return 0;
    }
    // The model's own Jinja template, or a built-in format that --chat-template names.
    const auto chat_template = tinyllm::ChatTemplate::for_model(lm.chat_template(), &tok, template_name, lm.path());
    for (const std::int32_t id : chat_template.stop_tokens(tok))
      if (std::find(g.stop_tokens.begin(), g.stop_tokens.end(), id) == g.stop_tokens.end()) g.stop_tokens.push_back(id);
    std::vector<tinyllm::ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    const std::size_t context = lm.config().context;
    const bool interactive = !prompt_given && isatty(STDIN_FILENO);
    if (!prompt_given) {
      struct sigaction sa {};
      sa.sa_handler = on_interrupt;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, nullptr);
      if (interactive)
        std::fprintf(stderr, "chat with %zu tokens of context; Ctrl-C stops a reply, Ctrl-C or Ctrl-D here quits\n", context);
    }
    std::string line;
    for (;;) {
      if (prompt_given) {
        if (!messages.empty() && messages.back().role == "assistant") break;
        line = prompt;
      } else {
        if (interactive) std::fputs("> ", stderr);
        if (!std::getline(std::cin, line)) break;
        if (line.empty()) continue;
      }
      messages.push_back({"user", line});
      // The conversation must leave room for a reply: drop the oldest exchanges (after any
      // system message) until it does.
      const std::size_t first = system.empty() ? 0 : 1;
      std::vector<std::int32_t> ids = tinyllm::chat_prompt_tokens(tok, chat_template.render(messages));
      std::size_t dropped = 0;
      while (ids.size() + 16 > context && messages.size() > first + 1) {
        messages.erase(messages.begin() + std::ptrdiff_t(first));   // a user turn, then its reply
        if (messages.size() > first + 1 && messages[first].role == "assistant") messages.erase(messages.begin() + std::ptrdiff_t(first));
        ++dropped;
        ids = tinyllm::chat_prompt_tokens(tok, chat_template.render(messages));
      }
      if (dropped) std::fprintf(stderr, "[context full: the %zu oldest turns were dropped]\n", dropped);
      if (ids.size() + 16 > context) {
        std::fprintf(stderr, "[this turn alone is %zu tokens, more than the context of %zu holds with a reply: skipped]\n",
                     ids.size(), context);
        messages.pop_back();
        if (prompt_given) return 1;
        continue;
      }
      messages.push_back({"assistant", reply(ids, false)});
      if (used * 4 >= context * 3)
        std::fprintf(stderr, "[context: %zu of %zu tokens used; the oldest turns will be dropped as it fills]\n", used, context);
    }
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
