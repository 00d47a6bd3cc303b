// Chat templates against the formats their model cards document, for a multi-turn conversation
// with a system message.
#include <tinyllm/text/chat_template.hpp>

#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "2+2?"},
};

}  // namespace

TEST_CASE("Llama 3 format") {
  CHECK(render_chat(ChatFormat::llama3, kConversation) ==
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST_CASE("Llama 2 format: <<SYS>> inside the first [INST], BOS before each later turn") {
  CHECK(render_chat(ChatFormat::llama2, kConversation) ==
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
}

TEST_CASE("Mistral format: system text prepended to the first user turn") {
  CHECK(render_chat(ChatFormat::mistral, kConversation) ==
        "[INST] You are terse.\n\nHi! [/INST]Hello.</s>[INST] 2+2? [/INST]");
}

TEST_CASE("Gemma format: model role, system folded into the first user turn") {
  CHECK(render_chat(ChatFormat::gemma, kConversation) ==
        "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n"
        "<start_of_turn>model\n");
}

TEST_CASE("ChatML format") {
  CHECK(render_chat(ChatFormat::chatml, kConversation) ==
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(render_chat(ChatFormat::chatml, std::vector<ChatMessage>{{"user", "x"}}, false) == "<|im_start|>user\nx<|im_end|>\n");
}

TEST_CASE("plain format, the one a model without a template gets") {
  CHECK(render_chat(ChatFormat::plain, kConversation) ==
        "system: You are terse.\nuser: Hi!\nassistant: Hello.\nuser: 2+2?\nassistant:");
  CHECK(render_chat(ChatFormat::plain, std::vector<ChatMessage>{{"user", "x"}}, false) == "user: x\n");
  const ChatTemplate none = ChatTemplate::for_model("", nullptr, "", "test");
  CHECK(none.format() == ChatFormat::plain);
  CHECK_FALSE(none.is_jinja());
  CHECK(ChatTemplate::for_model("", nullptr, "chatml", "test").format() == ChatFormat::chatml);
  CHECK(chat_format_from_name("plain") == ChatFormat::plain);
}

TEST_CASE("formats are recognised from Jinja sources and by name, bad roles are errors") {
  CHECK(detect_chat_format("{{ '<|start_header_id|>' + message['role'] }}") == ChatFormat::llama3);
  CHECK(detect_chat_format("{{ '<start_of_turn>' + role }}") == ChatFormat::gemma);
  CHECK(detect_chat_format("{{'<|im_start|>' + message['role']}}") == ChatFormat::chatml);
  CHECK(detect_chat_format("[INST] <<SYS>>\\n") == ChatFormat::llama2);
  CHECK(detect_chat_format("{{ '[INST] ' + message['content'] + ' [/INST]' }}") == ChatFormat::mistral);
  CHECK_FALSE(detect_chat_format("{{ message['content'] }}").has_value());
  CHECK(chat_format_from_name("gemma") == ChatFormat::gemma);
  CHECK_THROWS_AS(chat_format_from_name("vicuna"), Error);
  CHECK_THROWS_AS(render_chat(ChatFormat::chatml, std::vector<ChatMessage>{{"user", "a"}, {"system", "late"}}), Error);
  CHECK_THROWS_AS(render_chat(ChatFormat::chatml, std::vector<ChatMessage>{{"tool", "a"}}), Error);
}
