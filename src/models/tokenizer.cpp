// SentencePiece tokenizer with the T5 id layout (spec §1, §7) and deterministic vocabulary training.
#include "models/tokenizer.h"
#include "core/error.h"
#include "io/safetensors.h"
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <unordered_map>

namespace oboro {

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

namespace {

Tokenizer make(const std::string& bytes, const std::string& label,
               std::unique_ptr<sentencepiece::SentencePieceProcessor>& sp) {
  sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto st = sp->LoadFromSerializedProto(bytes);
  if (!st.ok())
    fail(label, ": not a SentencePiece model (", st.ToString(),
         "): pass the spiece.model of a T5 checkpoint or a vocabulary written by `oboro data vocab`");
  if (sp->pad_id() != Tokenizer::kPad || sp->eos_id() != Tokenizer::kEos || sp->unk_id() != Tokenizer::kUnk)
    fail(label, ": SentencePiece model has pad/eos/unk ids ", sp->pad_id(), "/", sp->eos_id(), "/", sp->unk_id(),
         " but T5 needs 0/1/2 — train it with `oboro data vocab` (or use a T5 spiece.model)");
  return Tokenizer();
}

}  // namespace

Tokenizer Tokenizer::from_serialized(const std::string& model_proto) {
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
  Tokenizer t = make(model_proto, "tokenizer", sp);
  t.sp_ = std::move(sp);
  t.proto_ = model_proto;
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    int e = errno;
    fail(path, ": cannot read the SentencePiece model: ", std::strerror(e),
         e == ENOENT ? " (check the path; T5 checkpoints ship it as spiece.model)" : "");
  }
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) fail(path, ": read error while loading the SentencePiece model");
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
  Tokenizer t = make(bytes, path, sp);
  t.sp_ = std::move(sp);
  t.proto_ = std::move(bytes);
  return t;
}

std::vector<int> Tokenizer::encode(const std::string& text, int max_len) const {
  if (!sp_) fail("internal error: Tokenizer::encode on a tokenizer with no model loaded");
  if (max_len < 1) fail("token limit ", max_len, " is too small: at least 1 (for </s>) is needed");
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  if (!st.ok()) fail("cannot tokenize the prompt: ", st.ToString());
  if ((int)ids.size() > max_len - 1) ids.resize((size_t)max_len - 1);  // truncate, keep </s> last
  ids.push_back(kEos);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  if (!sp_) fail("internal error: Tokenizer::decode on a tokenizer with no model loaded");
  const int V = vocab_size();
  for (int id : ids)
    if (id < 0 || id >= V) fail("token id ", id, " is out of range for the vocabulary of size ", V);
  std::string out;
  auto st = sp_->Decode(ids, &out);
  if (!st.ok()) fail("cannot decode token ids: ", st.ToString());
  return out;
}

int Tokenizer::vocab_size() const { return sp_ ? sp_->GetPieceSize() : 0; }

namespace {

class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) { skip(); }
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override {
    ++i_;
    skip();
  }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void skip() {
    while (i_ < lines_.size() && lines_[i_].find_first_not_of(" \t\r\n") == std::string::npos) ++i_;
  }
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

}  // namespace

void train_vocab(const std::vector<std::string>& lines, int vocab_size, const std::string& out_prefix) {
  size_t nonempty = 0;
  for (const auto& l : lines)
    if (l.find_first_not_of(" \t\r\n") != std::string::npos) ++nonempty;
  if (nonempty == 0) fail("no caption text to train a vocabulary on (every line is empty)");
  if (vocab_size < 4) fail("vocabulary size ", vocab_size, " is too small: T5 reserves pad, </s> and <unk>");
  // Deterministic: one thread, no sentence sampling/shuffling (input_sentence_size 0 = every line, in order).
  std::unordered_map<std::string, std::string> kw = {
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "false"},  // small corpora may not support vocab_size pieces: stop earlier
      {"pad_id", "0"},
      {"eos_id", "1"},
      {"unk_id", "2"},
      {"bos_id", "-1"},
      {"pad_piece", "<pad>"},
      {"eos_piece", "</s>"},
      {"unk_piece", "<unk>"},
      {"character_coverage", "1.0"},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", "16384"},
      {"minloglevel", "2"},
  };
  LineIterator it(lines);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(kw, &it, &proto);
  if (!st.ok())
    fail("vocabulary training failed: ", st.ToString(),
         " — the vocabulary size must exceed the number of distinct characters in the captions + 3");
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
  make(proto, out_prefix + ".model", sp);  // checks the id layout
  write_file_atomic(out_prefix + ".model", proto);
  std::ostringstream vocab;  // same layout as spm_train's .vocab: piece <TAB> score
  for (int i = 0; i < sp->GetPieceSize(); ++i) vocab << sp->IdToPiece(i) << '\t' << sp->GetScore(i) << '\n';
  write_file_atomic(out_prefix + ".vocab", vocab.str());
}

}  // namespace oboro
