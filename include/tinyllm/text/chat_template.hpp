#pragma once
// Chat templates: a conversation rendered into the prompt text a chat model was trained on.
// A GGUF file carries its template as Jinja source (tokenizer.chat_template); instead of running
// Jinja, the format is recognised by its marker tokens, and can always be named explicitly.
// As in llama.cpp, the rendered text leaves out the leading BOS: the tokenizer adds it. Special
// tokens inside the text (<|eot_id|>, <end_of_turn>, ...) must be encoded with parse_special.
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

enum class ChatFormat {
  llama3,   // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  llama2,   // [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] ...
  mistral,  // [INST] user [/INST]assistant</s>[INST] ...   (system prepended to the first user turn)
  gemma,    // <start_of_turn>user\ncontent<end_of_turn>\n<start_of_turn>model\n ...
  chatml,   // <|im_start|>role\ncontent<|im_end|>\n   (Qwen and many others)
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
  }
  return "?";
}

inline ChatFormat chat_format_from_name(std::string_view name) {
  for (ChatFormat f : {ChatFormat::llama3, ChatFormat::llama2, ChatFormat::mistral, ChatFormat::gemma, ChatFormat::chatml})
    if (chat_format_name(f) == name) return f;
  throw Error("unknown chat template '" + std::string(name) + "'", "chat template",
              "llama3, llama2, mistral, gemma or chatml");
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

}  // namespace tinyllm
