#pragma once
// Training data for LoRA fine-tuning (lora_trainer.hpp), and the learning-rate schedule: a text
// cut into windows of next-token prediction, chat conversations rendered with the model's chat
// format and scored on the assistant's tokens only, and a seeded order of examples that depends
// on the step alone (so a run resumed from a checkpoint sees what the uninterrupted run would).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/sample/random.hpp>
#include <tinyllm/text/chat_template.hpp>
#include <tinyllm/text/tokenizer.hpp>
#include <tinyllm/train/lora_trainer.hpp>

namespace tinyllm {

// The text's tokens in windows of `context` predictions: BOS (when the vocabulary has one), then
// context tokens of the text, each window starting where the previous one ended. A last window
// shorter than a quarter of the context is dropped. Every prediction is scored.
inline std::vector<TrainingSequence> text_windows(const Tokenizer& tok, std::string_view text, std::size_t context) {
  if (context < 2) throw Error("a training context of " + std::to_string(context) + " tokens", "text_windows", ">= 2");
  const std::vector<std::int32_t> ids = tok.encode(text, /*add_bos=*/false);
  const bool bos = tok.bos() >= 0;
  const std::size_t body = bos ? context : context + 1;   // text tokens per window
  std::vector<TrainingSequence> out;
  for (std::size_t first = 0; first < ids.size(); first += body - 1) {
    const std::size_t n = std::min(body, ids.size() - first);
    if (n < std::max<std::size_t>(2, context / 4)) break;
    TrainingSequence s;
    if (bos) s.tokens.push_back(tok.bos());
    s.tokens.insert(s.tokens.end(), ids.begin() + std::ptrdiff_t(first), ids.begin() + std::ptrdiff_t(first + n));
    s.weights.assign(s.tokens.size() - 1, 1.0f);
    out.push_back(std::move(s));
    if (first + n == ids.size()) break;
  }
  return out;
}

// A conversation rendered by `chat` and tokenized turn by turn (special tokens parsed), the loss
// on the assistant turns' tokens (their content and end of turn) only; what follows the last
// assistant turn teaches nothing and is left out. At most context + 1 tokens: a longer
// conversation is cut.
inline TrainingSequence chat_sequence(const Tokenizer& tok, const ChatTemplate& chat, std::span<const ChatMessage> messages,
                                      std::size_t context) {
  TrainingSequence s;
  auto add = [&](std::string_view piece, float weight) {
    const auto ids = s.tokens.empty() ? chat_prompt_tokens(tok, piece) : tok.encode(piece, {.add_special = false, .parse_special = true});
    for (std::int32_t id : ids) {
      if (!s.tokens.empty()) s.weights.push_back(weight);
      s.tokens.push_back(id);
    }
  };
  std::string rendered;   // through the last assistant turn so far
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    // Everything before the assistant's first token (the generation prompt), then its turn.
    const std::string before = chat.render(messages.first(i), true);
    const std::string after = chat.render(messages.first(i + 1), false);
    if (before.compare(0, rendered.size(), rendered) != 0 || after.compare(0, before.size(), before) != 0)
      throw Error("the chat template does not render assistant message " + std::to_string(i) + " as a continuation",
                  "chat_sequence, " + chat.describe());
    add(std::string_view(before).substr(rendered.size()), 0.0f);
    add(std::string_view(after).substr(before.size()), 1.0f);
    rendered = after;
  }
  if (s.tokens.size() < 2) throw Error("a conversation without an assistant turn", "chat_sequence");
  if (s.tokens.size() > context + 1) {
    s.tokens.resize(context + 1);
    s.weights.resize(context);
  }
  return s;
}

// The examples of optimizer step `step`: `count` indices into `n` examples, a fresh shuffle of all
// of them each epoch (seeded by the epoch), read in order.
inline std::vector<std::size_t> batch_indices(std::size_t n, std::size_t step, std::size_t count, std::uint64_t seed) {
  if (n == 0) throw Error("no training examples", "batch_indices");
  std::vector<std::size_t> out;
  std::vector<std::size_t> order;
  std::size_t epoch = std::size_t(-1);
  for (std::size_t k = step * count; k < (step + 1) * count; ++k) {
    if (k / n != epoch) {
      epoch = k / n;
      order.resize(n);
      for (std::size_t i = 0; i < n; ++i) order[i] = i;
      SplitMix64 rng(seed ^ (0x9e3779b97f4a7c15ull * (epoch + 1)));
      for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
    }
    out.push_back(order[k % n]);
  }
  return out;
}

// Linear warm-up to `peak` over `warmup` steps, then a cosine decay to a tenth of it at `total`.
inline float learning_rate(std::size_t step, std::size_t total, float peak, std::size_t warmup) {
  if (step < warmup) return peak * float(step + 1) / float(warmup);
  const double progress = total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  return float(peak * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(1.0, progress)))));
}

}  // namespace tinyllm
