#pragma once
// Chat templates: a conversation rendered into the prompt text a chat model was trained on.
// A model carries its template as Jinja source (GGUF's tokenizer.chat_template, or
// chat_template in a Hugging Face folder's tokenizer_config.json): ChatTemplate renders that
// source (text/jinja.hpp) with the model's bos_token and eos_token, as transformers does. Five
// formats are also built in by name (ChatFormat), for files that carry no template; their renderings
// leave out the leading BOS, which the tokenizer adds. Special tokens inside the text
// (<|eot_id|>, <end_of_turn>, ...) must be encoded with parse_special: chat_prompt_tokens.
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/error.hpp>
#include <tinyllm/text/jinja.hpp>
#include <tinyllm/text/tokenizer.hpp>

namespace tinyllm {

enum class ChatFormat {
  llama3,   // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  llama2,   // [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] ...
  mistral,  // [INST] user [/INST]assistant</s>[INST] ...   (system prepended to the first user turn)
  gemma,    // <start_of_turn>user\ncontent<end_of_turn>\n<start_of_turn>model\n ...
  chatml,   // <|im_start|>role\ncontent<|im_end|>\n   (Qwen and many others)
  plain,    // role: content\n ... assistant:   (for models without a template: base models)
};

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

inline constexpr std::string_view chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::llama2: return "llama2";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::gemma: return "gemma";
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::plain: return "plain";
  }
  return "?";
}

inline ChatFormat chat_format_from_name(std::string_view name) {
  for (ChatFormat f : {ChatFormat::llama3, ChatFormat::llama2, ChatFormat::mistral, ChatFormat::gemma, ChatFormat::chatml,
                      ChatFormat::plain})
    if (chat_format_name(f) == name) return f;
  throw Error("unknown chat template '" + std::string(name) + "'", "chat template",
              "llama3, llama2, mistral, gemma, chatml or plain");
}

// The format a Jinja chat template implements, recognised by the markers it emits.
inline std::optional<ChatFormat> detect_chat_format(std::string_view jinja) {
  auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("<start_of_turn>")) return ChatFormat::gemma;
  if (has("<|im_start|>")) return ChatFormat::chatml;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::llama2 : ChatFormat::mistral;
  return std::nullopt;
}

// The tokens that end an assistant turn in each format, as text.
inline std::string_view chat_end_of_turn(ChatFormat f) {
  switch (f) {
    case ChatFormat::llama3: return "<|eot_id|>";
    case ChatFormat::gemma: return "<end_of_turn>";
    case ChatFormat::chatml: return "<|im_end|>";
    case ChatFormat::llama2:
    case ChatFormat::mistral: return "</s>";
    case ChatFormat::plain: return "";   // the reply ends at EOS
  }
  return "";
}

// Renders the conversation; with add_generation_prompt it ends where the assistant's reply begins.
// A system message may come only first; roles are system, user and assistant.
inline std::string render_chat(ChatFormat f, std::span<const ChatMessage> messages, bool add_generation_prompt = true) {
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "user" && r != "assistant" && !(r == "system" && i == 0))
      throw Error("chat message " + std::to_string(i) + " has role '" + r + "'", "render_chat",
                  "system (first message only), user or assistant");
  }
  const bool has_system = !messages.empty() && messages[0].role == "system";
  const std::string system = has_system ? messages[0].content : "";
  const auto turns = messages.subspan(has_system ? 1 : 0);
  std::string out;
  switch (f) {
    case ChatFormat::plain:
      for (const auto& m : messages) out += m.role + ": " + m.content + "\n";
      if (add_generation_prompt) out += "assistant:";
      return out;
    case ChatFormat::llama3:
      for (const auto& m : messages) out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::gemma: {
      bool first_user = true;
      for (const auto& m : turns) {
        std::string content = m.content;
        if (m.role == "user" && first_user && has_system) content = system + "\n\n" + content;
        if (m.role == "user") first_user = false;
        out += "<start_of_turn>" + std::string(m.role == "assistant" ? "model" : "user") + "\n" + content + "<end_of_turn>\n";
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case ChatFormat::llama2:
    case ChatFormat::mistral: {
      const bool llama2 = f == ChatFormat::llama2;
      bool first_user = true;
      for (const auto& m : turns) {
        if (m.role == "user") {
          std::string content = m.content;
          if (first_user && has_system)
            content = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
          out += std::string(llama2 && !first_user ? "<s>" : "") + "[INST] " + content + " [/INST]";
          first_user = false;
        } else {
          out += (llama2 ? " " : "") + m.content + (llama2 ? " </s>" : "</s>");
        }
      }
      return out;   // the reply follows [/INST] directly: no separate generation prompt
    }
  }
  return out;
}

// A model's chat template: its Jinja source, or a built-in format.
class ChatTemplate {
 public:
  // bos_token and eos_token: the texts the template sees under those names (nullopt: undefined).
  ChatTemplate(std::string_view jinja_source, std::optional<std::string> bos_token, std::optional<std::string> eos_token)
      : jinja_(std::make_shared<const JinjaTemplate>(jinja_source)), format_(detect_chat_format(jinja_source)),
        bos_token_(std::move(bos_token)), eos_token_(std::move(eos_token)) {}
  ChatTemplate(ChatFormat format) : format_(format) {}  // implicit: a built-in format is a template

  // What a program renders with: `forced` names a built-in format ("" for none), which wins;
  // else the model's own template `source` with `tok`'s BOS and EOS texts; else, for a model
  // without one, the plain format (one "role: content" line per message, then "assistant:").
  static ChatTemplate for_model(std::string_view source, const Tokenizer* tok, std::string_view forced,
                                const std::string& where) {
    if (!forced.empty()) return chat_format_from_name(forced);
    if (source.empty()) return ChatFormat::plain;
    const auto text_of = [&](std::int32_t id) {
      return tok && id >= 0 ? std::optional<std::string>(tok->piece(id)) : std::nullopt;
    };
    return ChatTemplate(source, tok ? text_of(tok->bos()) : std::nullopt, tok ? text_of(tok->eos()) : std::nullopt);
  }

  // The conversation as the model's prompt; with add_generation_prompt it ends where the
  // assistant's reply begins. `extra`: further variables for a Jinja template (tools, ...).
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt = true,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const {
    if (!jinja_) return render_chat(*format_, messages, add_generation_prompt);
    nlohmann::ordered_json context = extra.is_object() ? extra : nlohmann::ordered_json::object();
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
    context["messages"] = std::move(list);
    context["add_generation_prompt"] = add_generation_prompt;
    if (bos_token_) context["bos_token"] = *bos_token_;
    if (eos_token_) context["eos_token"] = *eos_token_;
    return jinja_->render(context);
  }

  bool is_jinja() const noexcept { return jinja_ != nullptr; }
  // The built-in format, or the one a Jinja template's markers show; nullopt for other templates.
  std::optional<ChatFormat> format() const noexcept { return format_; }
  std::string describe() const {
    if (!jinja_) return std::string(chat_format_name(*format_));
    return format_ ? "the model's Jinja template (" + std::string(chat_format_name(*format_)) + " markers)"
                   : "the model's Jinja template";
  }

  // The tokens that end an assistant turn: EOS, and the format's end-of-turn token where it is one.
  std::vector<std::int32_t> stop_tokens(const Tokenizer& tok) const {
    std::vector<std::int32_t> stops;
    if (tok.eos() >= 0) stops.push_back(tok.eos());
    if (format_) {
      const auto t = tok.encode(chat_end_of_turn(*format_), Tokenizer::EncodeOptions{.add_special = false, .parse_special = true});
      if (t.size() == 1 && t[0] != tok.eos()) stops.push_back(t[0]);
    }
    return stops;
  }

 private:
  std::shared_ptr<const JinjaTemplate> jinja_;
  std::optional<ChatFormat> format_;
  std::optional<std::string> bos_token_, eos_token_;
};

// The tokens of a rendered conversation: special tokens written in it are those tokens, and BOS
// is added where the tokenizer adds one, unless the template wrote it already.
inline std::vector<std::int32_t> chat_prompt_tokens(const Tokenizer& tok, std::string_view rendered) {
  std::vector<std::int32_t> ids = tok.encode(rendered, Tokenizer::EncodeOptions{.add_special = true, .parse_special = true});
  if (ids.size() >= 2 && tok.adds_bos() && ids[0] == tok.bos() && ids[1] == tok.bos()) ids.erase(ids.begin());
  return ids;
}

}  // namespace tinyllm
