// tinyllm-tokenize: the token ids of a text under a GGUF file's tokenizer (only its metadata is
// read, so vocabulary-only files work too) or a Hugging Face folder's (tokenizer.json and
// tokenizer_config.json; no weights needed).
//   tinyllm-tokenize -m model.gguf|FOLDER -p "Hello world" [--no-bos] [--parse-special] [--pieces]
//   tinyllm-tokenize -m model.gguf -f text.txt        (the file's bytes exactly, newlines included)
//   tinyllm-tokenize -m model.gguf -f texts.jsonl --json-lines
//                                         (one JSON string per line in, one JSON array of ids out)
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-tokenize: print the token ids of a text"};
  std::string path, text, file;
  bool no_bos = false, parse_special = false, pieces = false, json_lines = false;
  app.add_option("-m,--model", path, "GGUF file with tokenizer metadata, or a Hugging Face folder with tokenizer.json")
      ->required();
  auto* text_opt = app.add_option("-p,--prompt", text, "text to tokenize");
  auto* file_opt = app.add_option("-f,--file", file, "file whose bytes to tokenize");
  text_opt->excludes(file_opt);
  app.add_flag("--no-bos", no_bos, "do not add the BOS (or other special) tokens the tokenizer adds");
  app.add_flag("--parse-special", parse_special, "turn special-token text such as <s> into those tokens");
  app.add_flag("--pieces", pieces, "print one id and its piece per line");
  app.add_flag("--json-lines", json_lines, "the file holds one JSON string per line; print one JSON array of ids per line")
      ->needs(file_opt);
  CLI11_PARSE(app, argc, argv);
  try {
    const tinyllm::Tokenizer tok = std::filesystem::is_directory(path)
                                       ? tinyllm::load_hf_tokenizer(path)
                                       : tinyllm::tokenizer_from_gguf(tinyllm::GGUFFile::open(path));
    const tinyllm::Tokenizer::EncodeOptions options{.add_special = !no_bos, .parse_special = parse_special};
    std::ifstream in;
    if (!file.empty()) {
      in.open(file, std::ios::binary);
      if (!in) throw tinyllm::Error("cannot read the text file", file);
    }
    if (json_lines) {
      std::string line;
      for (std::size_t number = 1; std::getline(in, line); ++number) {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_string()) throw tinyllm::Error("is not one JSON string", file + ", line " + std::to_string(number));
        std::printf("%s\n", nlohmann::json(tok.encode(j.get<std::string>(), options)).dump().c_str());
      }
      return 0;
    }
    if (!file.empty()) text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    const auto ids = tok.encode(text, options);
    if (pieces) {
      for (std::int32_t id : ids) std::printf("%d %s\n", id, tok.piece(id).c_str());
    } else {
      for (std::size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
      std::printf("\n");
    }
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
