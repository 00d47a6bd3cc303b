#pragma once
// --lora FILE and --lora-scaled FILE SCALE, repeatable, for the programs that run one model: the
// adapters add up, as in llama.cpp's tools.
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <string>
#include <utility>
#include <vector>

namespace programs {

struct LoraFlags {
  std::vector<std::string> files;
  std::vector<std::pair<std::string, float>> scaled;

  void add_to(CLI::App& app) {
    app.add_option("--lora", files, "LoRA adapter (GGUF) applied at scale 1; repeatable");
    app.add_option("--lora-scaled", scaled, "LoRA adapter (GGUF) and its scale; repeatable");
  }
  // Loads the adapters against the model and sets them as its own; returns how many.
  std::size_t apply(tinyllm::Model& m) const {
    std::vector<tinyllm::AdapterRef> refs;
    for (const std::string& f : files) refs.push_back({tinyllm::LoraAdapter::load(f, m.config()), 1.0f});
    for (const auto& [f, s] : scaled) refs.push_back({tinyllm::LoraAdapter::load(f, m.config()), s});
    m.set_adapters(refs);
    return refs.size();
  }
};

}  // namespace programs
