// tinyllm-render-chat: a conversation rendered by a model's own chat template, printed exactly
// (no byte added), as the model would be prompted with it.
//   tinyllm-render-chat -m model.gguf|FOLDER -f messages.json [--no-generation-prompt]
// messages.json: a JSON array of {"role": ..., "content": ...}. A GGUF file's template is its
// tokenizer.chat_template, with its BOS and EOS texts; a Hugging Face folder's is
// tokenizer_config.json's chat_template, bos_token and eos_token (no weights are read).
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-render-chat: print a conversation as the model's chat template renders it"};
  std::string path, file;
  bool no_generation_prompt = false;
  app.add_option("-m,--model", path, "GGUF file, or a Hugging Face folder with tokenizer_config.json")->required();
  app.add_option("-f,--file", file, "JSON array of {role, content} messages")->required();
  app.add_flag("--no-generation-prompt", no_generation_prompt, "end after the last message (add_generation_prompt false)");
  CLI11_PARSE(app, argc, argv);
  try {
    const nlohmann::json j = tinyllm::read_json_file(file);
    if (!j.is_array()) throw tinyllm::Error("is not a JSON array of messages", file);
    std::vector<tinyllm::ChatMessage> messages;
    for (std::size_t i = 0; i < j.size(); ++i) {
      const nlohmann::json& m = j[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
        throw tinyllm::Error("message " + std::to_string(i) + " is not {\"role\": string, \"content\": string}", file);
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    std::optional<tinyllm::ChatTemplate> chat;
    if (std::filesystem::is_directory(path)) {
      chat = tinyllm::load_hf_chat_template(path);
      if (!chat) throw tinyllm::Error("the folder has no chat template", path + "/tokenizer_config.json", "chat_template");
    } else {
      const tinyllm::GGUFFile f = tinyllm::GGUFFile::open(path);
      const std::string source = f.has("tokenizer.chat_template") ? f.get_string("tokenizer.chat_template") : "";
      const std::optional<tinyllm::Tokenizer> tok =
          f.has("tokenizer.ggml.tokens") ? std::optional(tinyllm::tokenizer_from_gguf(f)) : std::nullopt;
      chat = tinyllm::ChatTemplate::for_model(source, tok ? &*tok : nullptr, "", path);
    }
    const std::string text = chat->render(messages, !no_generation_prompt);
    std::fwrite(text.data(), 1, text.size(), stdout);
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
