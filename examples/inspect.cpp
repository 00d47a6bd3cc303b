// tinyllm-inspect: what a GGUF model is and what it needs, from its metadata and tensor infos
// only (tensor data is never read, so multi-GB files are inspected instantly).
//   tinyllm-inspect model.gguf [--metadata] [--tensors]
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>

namespace {

std::string value_text(const tinyllm::GGUFValue& v, std::size_t max_items = 6) {
  using T = tinyllm::GGUFType;
  switch (v.type()) {
    case T::STRING: {
      const auto& s = v.as<std::string>();
      return "\"" + (s.size() > 60 ? s.substr(0, 60) + "..." : s) + "\"";
    }
    case T::BOOL: return v.as<bool>() ? "true" : "false";
    case T::FLOAT32: return std::to_string(v.as<float>());
    case T::FLOAT64: return std::to_string(v.as<double>());
    case T::ARRAY: {
      const auto& items = v.items();
      std::string s = "[" + std::to_string(items.size()) + " x " + std::string(tinyllm::gguf_type_name(v.array_type())) + "]";
      for (std::size_t i = 0; i < items.size() && i < max_items; ++i) s += (i ? ", " : " ") + value_text(items[i], 0);
      return s + (items.size() > max_items ? ", ..." : "");
    }
    default: {
      if (auto u = v.to_integer<std::int64_t>()) return std::to_string(*u);
      if (auto u = v.to_integer<std::uint64_t>()) return std::to_string(*u);
      return "?";
    }
  }
}

std::string bytes_text(double b) {
  char s[32];
  if (b >= 1ull << 30) std::snprintf(s, sizeof s, "%.2f GiB", b / (1ull << 30));
  else if (b >= 1ull << 20) std::snprintf(s, sizeof s, "%.2f MiB", b / (1ull << 20));
  else std::snprintf(s, sizeof s, "%.2f KiB", b / (1ull << 10));
  return s;
}

double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (in >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

// --metadata and --tensors.
int print_lists(const tinyllm::GGUFFile& f, bool all_metadata, bool all_tensors) {
  if (all_metadata) {
    std::printf("\nmetadata:\n");
    for (const auto& [key, value] : f.metadata()) std::printf("  %s = %s\n", key.c_str(), value_text(value).c_str());
  }
  if (all_tensors) {
    std::printf("\ntensors:\n");
    for (const auto& t : f.tensors()) {
      std::string shape;
      for (std::uint32_t i = 0; i < t.n_dims; ++i) shape += (i ? " x " : "") + std::to_string(t.dims[i]);
      std::printf("  %-32s %-6s [%s]\n", t.name.c_str(), std::string(tinyllm::name(t.dtype)).c_str(), shape.c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-inspect: describe a GGUF model from its metadata"};
  std::string path;
  bool all_metadata = false, all_tensors = false;
  app.add_option("file", path, "model .gguf")->required();
  app.add_flag("--metadata", all_metadata, "print every metadata key");
  app.add_flag("--tensors", all_tensors, "print every tensor's name, type and shape");
  CLI11_PARSE(app, argc, argv);
  try {
    const tinyllm::GGUFFile f = tinyllm::GGUFFile::open(path);
    const std::string arch = f.get_string("general.architecture");
    const std::string p = arch + ".";
    double params = 0, bytes = 0;
    std::map<std::string, std::pair<double, double>> by_type;   // type -> (params, bytes)
    for (const auto& t : f.tensors()) {
      params += double(t.n_elements());
      bytes += double(t.n_bytes);
      auto& e = by_type[std::string(tinyllm::name(t.dtype))];
      e.first += double(t.n_elements());
      e.second += double(t.n_bytes);
    }
    std::printf("file:          %s (GGUF v%u, %zu tensors, %zu metadata keys)\n", path.c_str(), f.version(),
                f.tensors().size(), f.metadata().size());
    std::printf("name:          %s\n", f.has("general.name") ? f.get_string("general.name").c_str() : "(none)");
    std::printf("architecture:  %s\n", arch.c_str());
    if (f.has("general.type") && f.get_string("general.type") == "adapter") {
      // A LoRA adapter (model/lora.hpp): no model of its own, a low-rank update of one.
      const std::string kind = f.has("adapter.type") ? f.get_string("adapter.type") : "(unknown)";
      std::set<std::uint64_t> ranks;
      std::set<std::string> targets;
      std::size_t pairs = 0;
      for (const auto& t : f.tensors())
        if (t.name.ends_with(".weight.lora_a") && t.n_dims == 2) {
          ++pairs;
          ranks.insert(t.dims[1]);
          const std::string n = t.name.substr(0, t.name.size() - std::string(".weight.lora_a").size());
          targets.insert(n.substr(n.find('.', n.find('.') + 1) + 1));   // after "blk.N."
        }
      std::string rank_text, target_text;
      for (const auto r : ranks) rank_text += (rank_text.empty() ? "" : ", ") + std::to_string(r);
      for (const auto& t : targets) target_text += (target_text.empty() ? "" : ", ") + t;
      std::printf("type:          %s adapter for a %s model (apply with tinyllm-run --lora)\n", kind.c_str(), arch.c_str());
      std::printf("adapter:       alpha %g, rank %s, %zu matrices (%s), %.0f parameters, %s\n",
                  f.get_f32_or("adapter.lora.alpha", 0.0f), rank_text.c_str(), pairs, target_text.c_str(), params,
                  bytes_text(bytes).c_str());
      return print_lists(f, all_metadata, all_tensors);
    }
    std::printf("parameters:    %.3f B (%.0f)\n", params / 1e9, params);
    const bool general = params <= 30e9;
    std::printf("class:         %s\n", general ? "SLM (general-purpose, at most 30B parameters)"
                                               : "LLM (general-purpose, above 30B parameters)");
    std::string finetune;
    if (f.has("general.finetune")) finetune = f.get_string("general.finetune");
    const std::uint32_t base_models = f.get_u32_or("general.base_model.count", 0);
    if (!finetune.empty() || base_models > 0)
      std::printf("               derived from %u base model(s)%s%s: an sLLM if the tuning specialises a domain\n",
                  base_models, finetune.empty() ? "" : ", fine-tune: ", finetune.c_str());
    std::printf("weights:       %s in file\n", bytes_text(bytes).c_str());
    for (const auto& [type, e] : by_type)
      std::printf("  %-6s       %6.2f%% of parameters, %s, %.2f bits per weight\n", type.c_str(), 100 * e.first / params,
                  bytes_text(e.second).c_str(), 8 * e.second / e.first);
    std::printf("memory needed: F16 %s, Q8_0 %s, Q4_K_M ~%s (4.85 bits per weight)\n", bytes_text(params * 2).c_str(),
                bytes_text(params * 34 / 32).c_str(), bytes_text(params * 4.85 / 8).c_str());
    if (const double experts = f.get_u32_or(p + "expert_count", 0); experts > 0) {
      // A mixture of experts: a token runs expert_used_count of each block's experts, so it reads
      // that share of the experts' bytes, the other weights whole, and one row of the embedding
      // (all of it when it doubles as the output layer).
      const double used = f.get_u32_or(p + "expert_used_count", 0);
      double expert_params = 0, expert_bytes = 0, embd_bytes = 0;
      for (const auto& t : f.tensors()) {
        if (t.name.find("_exps.") != std::string::npos) expert_params += double(t.n_elements()), expert_bytes += double(t.n_bytes);
        if (t.name == "token_embd.weight" && f.find_tensor("output.weight")) embd_bytes = double(t.n_bytes);
      }
      const double idle = 1 - used / experts;
      std::printf("experts:       %.0f per block, %.0f used per token: %.3f B of %.3f B parameters active\n", experts, used,
                  (params - expert_params * idle) / 1e9, params / 1e9);
      std::printf("read / token:  %s of weights (the active experts and every other matrix)\n",
                  bytes_text(bytes - expert_bytes * idle - embd_bytes).c_str());
    }
    if (f.has(p + "block_count") && f.has(p + "attention.head_count")) {
      const double layers = f.get_u32(p + "block_count"), heads = f.get_u32(p + "attention.head_count");
      const double kv_heads = f.get_u32_or(p + "attention.head_count_kv", std::uint32_t(heads));
      const double n_embd = f.get_u32(p + "embedding_length");
      const double k_len = f.get_u32_or(p + "attention.key_length", std::uint32_t(n_embd / heads));
      const double v_len = f.get_u32_or(p + "attention.value_length", std::uint32_t(k_len));
      const double per_token = layers * kv_heads * (k_len + v_len);
      const double ctx = f.get_u32_or(p + "context_length", 0);
      std::printf("KV cache:      %s per token at F16 (%s at F32); %s for the full context of %.0f\n",
                  bytes_text(per_token * 2).c_str(), bytes_text(per_token * 4).c_str(),
                  bytes_text(per_token * 2 * ctx).c_str(), ctx);
    }
    const double avail = available_memory_bytes();
    if (avail > 0)
      std::printf("this machine:  %s available: the weights %s\n", bytes_text(avail).c_str(),
                  bytes < avail ? "fit" : "do NOT fit");
    return print_lists(f, all_metadata, all_tensors);
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
