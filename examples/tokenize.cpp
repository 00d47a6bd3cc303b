// tinyllm-tokenize: the token ids of a text under a GGUF file's tokenizer (only its metadata is
// read, so vocabulary-only files work too).
//   tinyllm-tokenize -m model.gguf -p "Hello world" [--no-bos] [--parse-special] [--pieces]
//   tinyllm-tokenize -m model.gguf -f text.txt        (the file's bytes exactly, newlines included)
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-tokenize: print the token ids of a text"};
  std::string path, text, file;
  bool no_bos = false, parse_special = false, pieces = false;
  app.add_option("-m,--model", path, "GGUF file with tokenizer metadata")->required();
  auto* text_opt = app.add_option("-p,--prompt", text, "text to tokenize");
  auto* file_opt = app.add_option("-f,--file", file, "file whose bytes to tokenize");
  text_opt->excludes(file_opt);
  app.add_flag("--no-bos", no_bos, "do not add the BOS (or other special) tokens the tokenizer adds");
  app.add_flag("--parse-special", parse_special, "turn special-token text such as <s> into those tokens");
  app.add_flag("--pieces", pieces, "print one id and its piece per line");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!file.empty()) {
      std::ifstream in(file, std::ios::binary);
      if (!in) throw tinyllm::Error("cannot read the text file", file);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const tinyllm::GGUFFile f = tinyllm::GGUFFile::open(path);
    const tinyllm::Tokenizer tok = tinyllm::tokenizer_from_gguf(f);
    const auto ids = tok.encode(text, tinyllm::Tokenizer::EncodeOptions{.add_special = !no_bos, .parse_special = parse_special});
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
