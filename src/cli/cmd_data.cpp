// `oboro data ...`: dataset preparation. One function per subcommand, registered on the `data` group:
//   oboro data vocab --captions FILE_OR_DIR --vocab-size N --out PREFIX
// (add further subcommands as register_data_<name>(CLI::App& data) and call them from register_data).
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "models/tokenizer.h"
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace oboro::cli {
namespace {

namespace fs = std::filesystem;

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::ifstream open_text(const fs::path& p) {
  std::ifstream f(p);
  if (!f) {
    int e = errno;
    fail(p.string(), ": cannot read: ", std::strerror(e));
  }
  return f;
}

// Caption lines for vocabulary training: a text file gives one caption per non-empty line; a dataset
// directory gives the first non-empty line of every *.txt sidecar below it (as the dataset loader reads
// captions), in sorted path order so the result does not depend on the file system's listing order.
std::vector<std::string> read_captions(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    fail(path, ": no such file or directory: pass a captions file (one per line) or a dataset folder with .txt "
               "sidecar captions");
  std::vector<std::string> lines;
  if (fs::is_regular_file(st)) {
    std::ifstream f = open_text(path);
    for (std::string l; std::getline(f, l);)
      if (!(l = trim(l)).empty()) lines.push_back(l);
    if (lines.empty()) fail(path, ": the captions file is empty");
    return lines;
  }
  if (!fs::is_directory(st)) fail(path, ": not a regular file or directory");
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) fail(path, ": cannot list directory: ", ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) fail(path, ": cannot list directory: ", ec.message());
    std::error_code e2;
    if (it->is_regular_file(e2) && it->path().extension() == ".txt") files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    std::ifstream f = open_text(p);
    for (std::string l; std::getline(f, l);)
      if (!(l = trim(l)).empty()) {
        lines.push_back(l);
        break;
      }
  }
  if (lines.empty()) fail(path, ": found no caption text (no non-empty .txt sidecar files below this folder)");
  return lines;
}

void register_data_vocab(CLI::App& data) {
  struct Opts {
    std::string captions, out;
    int vocab_size = 8000;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("vocab", "Train a SentencePiece unigram vocabulary (T5 ids: pad 0, </s> 1, <unk> 2) "
                                          "on captions; writes PREFIX.model and PREFIX.vocab");
  c->add_option("--captions", o->captions, "captions file (one per line) or dataset folder of .txt sidecars")
      ->required();
  c->add_option("--vocab-size", o->vocab_size, "number of pieces (an upper limit for small corpora)")
      ->check(int_in(8, 1000000));
  c->add_option("--out", o->out, "output prefix: writes PREFIX.model and PREFIX.vocab")->required();
  c->callback([o] {
    std::vector<std::string> lines = read_captions(o->captions);
    std::fprintf(stderr, "training a %d-piece unigram vocabulary on %zu captions\n", o->vocab_size, lines.size());
    train_vocab(lines, o->vocab_size, o->out);
    Tokenizer tok = Tokenizer::load(o->out + ".model");
    std::printf("wrote %s.model and %s.vocab: %d pieces\n", o->out.c_str(), o->out.c_str(), tok.vocab_size());
  });
}

}  // namespace

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Dataset preparation: vocabulary training, ...");
  data->require_subcommand(1);
  register_data_vocab(*data);
}

}  // namespace oboro::cli
