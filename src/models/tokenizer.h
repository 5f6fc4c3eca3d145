// SentencePiece tokenizer with the T5 conventions: pad 0, eos 1, unk 2, no BOS; encode appends </s>.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece { class SentencePieceProcessor; }

namespace oboro {

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  static Tokenizer load(const std::string& spiece_model_path);       // error names the file
  static Tokenizer from_serialized(const std::string& model_proto);  // bytes of a .model file
  const std::string& serialized() const { return proto_; }           // to embed in checkpoints

  // ids of `text` followed by </s> (1); at most max_len ids (truncated, </s> kept last).
  std::vector<int> encode(const std::string& text, int max_len = 256) const;
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  static constexpr int kPad = 0, kEos = 1, kUnk = 2;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string proto_;
};

// Train a unigram vocabulary on caption lines; writes `out_prefix`.model (and .vocab) with the
// T5 id layout above. Deterministic for the same input.
void train_vocab(const std::vector<std::string>& lines, int vocab_size, const std::string& out_prefix);

}  // namespace oboro
