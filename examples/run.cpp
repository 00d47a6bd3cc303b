// tinyllm-run: generate text from a model, streamed as it is generated.
//   tinyllm-run -m stories260K.bin -z tok512.bin -p "Once upon a time" -n 200 --temp 0
// With no -m it runs the model built into it, stories260K (examples/models/README.md), greedily
// unless --temp is given, and writes a little story; --synthetic runs the embedded random-weight
// model instead (its text is noise).
// --chat renders the conversation with the model's chat template (or --chat-template NAME).
// --lora FILE / --lora-scaled FILE SCALE (repeatable) add LoRA adapters.
#include <tinyllm/tinyllm.hpp>

#include "common/device_flag.hpp"
#include "common/lora_flags.hpp"
#include "common/progress.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

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

    // Streams the reply to `ids` and returns its text.
    auto reply = [&](const std::vector<std::int32_t>& ids, bool echo_prompt) {
      tinyllm::Utf8Stream out;
      std::string text;
      if (echo_prompt)
        for (std::size_t i = 1; i < ids.size(); ++i) std::fputs(out.push(tok.decode(ids[i - 1], ids[i])).c_str(), stdout);
      std::int32_t prev = ids.back();
      const auto stats = tinyllm::generate(pool, lm.model(), ids, g, [&](std::int32_t id) {
        const std::string piece = tok.decode(prev, id);
        text += piece;
        std::fputs(out.push(piece).c_str(), stdout);
        std::fflush(stdout);
        prev = id;
        return true;
      });
      std::fputs(out.flush().c_str(), stdout);
      std::fputs("\n", stdout);
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
    std::string line;
    while (prompt_given ? messages.empty() || messages.back().role != "assistant" : bool(std::getline(std::cin, line))) {
      messages.push_back({"user", prompt_given ? prompt : line});
      const auto ids = tinyllm::chat_prompt_tokens(tok, chat_template.render(messages));
      messages.push_back({"assistant", reply(ids, false)});
    }
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
