#pragma once
// What a client asks the engine for, and what it gets back while a request runs.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <tinyllm/model/lora.hpp>
#include <tinyllm/sample/grammar.hpp>
#include <tinyllm/sample/logprobs.hpp>
#include <tinyllm/sample/sampler.hpp>

namespace tinyllm {

using RequestId = std::uint64_t;

struct Request {
  std::string prompt;                     // encoded with BOS, unless `tokens` is given
  std::vector<std::int32_t> tokens;       // the prompt as token ids (used when not empty)
  std::size_t max_tokens = 128;           // generated tokens at most
  SamplingParams sampling;
  std::vector<std::string> stop;          // generation ends before the first of these strings
  bool stop_at_eos = true;
  // Further tokens that end generation as EOS does (a chat template's end of turn), not printed.
  std::vector<std::int32_t> stop_tokens;
  // Samples of the prompt (OpenAI's `n`): its K/V are computed once and its blocks shared (copy
  // on write); sample i draws with seed sampling.seed + i, so it equals a request with n = 1 and
  // that seed. Events say which sample they belong to (TokenEvent::index).
  std::size_t n = 1;
  // Constrained decoding: each generated token keeps the text a valid prefix of this grammar's
  // language (sample/json_schema.hpp makes one from a JSON Schema); EOS and the stop tokens are
  // allowed only once the text is complete. Null: unconstrained.
  std::shared_ptr<const Grammar> grammar;
  // -1: no log-probabilities; n >= 0: each generated token's event carries its log-probability
  // under the model's distribution (log-softmax of the logits, before any sampling parameter) and
  // the n most likely tokens' (sample/logprobs.hpp).
  int logprobs = -1;
  // LoRA adapters for this request (adding up; empty: the base model). The request holds them:
  // an adapter unloaded elsewhere stays alive until its requests end.
  std::vector<AdapterRef> adapters;
  // Speculative decoding by prompt lookup (serve/draft.hpp): each decode step drafts up to
  // draft_tokens tokens by finding the text's last draft_ngram tokens (or fewer) earlier in it and
  // copying what followed; one forward of the model checks them all, and the tokens it would have
  // produced itself are kept. The output is exactly that of decoding without drafts (each
  // position's token is sampled from the model's own logits, with the same random draws), only
  // faster when drafts hit. 0 = off. Only suffixes of at least draft_ngram_min tokens (at most
  // draft_ngram) are looked up: shorter matches are kept too rarely to pay for their place in the
  // step (stories260K, 4 drafts a step: 24 % kept from 1 token on, 58 % from 3; 0.74x and 1.04x
  // the speed of plain decoding). With EngineOptions::draft_model, that model drafts instead.
  std::size_t draft_tokens = 0;
  std::size_t draft_ngram = 3;
  std::size_t draft_ngram_min = 3;
};

enum class FinishReason { none, eos, stop, length, cancelled };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::eos: return "eos";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "?";
}

struct RequestMetrics {
  std::size_t prompt_tokens = 0, generated_tokens = 0, cached_prompt_tokens = 0, preemptions = 0;
  std::size_t draft_tokens = 0, accepted_draft_tokens = 0;   // speculative decoding (Request::draft_tokens)
  double queue_seconds = 0;        // submit to first scheduled
  double first_token_seconds = 0;  // submit to first generated token
  double total_seconds = 0;        // submit to finish
  double tokens_per_second() const {
    const double decode = total_seconds - first_token_seconds;
    return generated_tokens > 1 && decode > 0 ? double(generated_tokens - 1) / decode : 0;
  }
};

// One streamed event: a generated token and its text (UTF-8 safe: a character split across
// tokens arrives whole), or the end of the request with its reason and metrics.
struct TokenEvent {
  RequestId id = 0;
  std::size_t index = 0;        // the sample (0 .. Request::n - 1)
  std::int32_t token = -1;      // -1 on a final event that carries no token
  std::string text;
  bool finished = false;
  FinishReason reason = FinishReason::none;
  RequestMetrics metrics;       // complete when finished
  std::optional<TokenLogprobs> logprobs;   // of `token`, when the request asked for them
  bool request_finished = false;           // the last finished event of the request: every sample is done
};

}  // namespace tinyllm
