// Prompt → T5 hidden states: the tokenizer plus the T5 encoder, padded into one batch with a mask.
// A text-encoder file is a T5 safetensors file whose metadata `oboro.tokenizer` holds the
// sentencepiece model (base64), so it is self-contained; or a directory / file with
// `spiece.model` beside it (HF layout).
#pragma once
#include "models/t5.h"
#include "models/tokenizer.h"
#include <memory>
#include <string>
#include <vector>

namespace oboro {

// Encoded prompts, on the backend. Each row is its valid tokens followed by padding (hidden rows zero there).
struct TextBatch {
  int B = 0, L = 0, dim = 0;
  Buffer hidden;             // (B, L, dim)
  Buffer mask;               // (B, L) 1 valid / 0 pad
  std::vector<int> lengths;  // (B) valid tokens per row, on the host (the tokenizer's counts)
};

// A batch of B rows of L tokens with `lengths` valid tokens each: the mask uploaded from the lengths, hidden zero.
// Fails unless every row has at least one valid token (position 0 carries the pooled BOS vector, spec §2.2).
TextBatch alloc_text_batch(Backend& be, int B, int L, int dim, std::vector<int> lengths);
// Rows of `a` then rows of `b` (same dim), padded to the longer L: copies on the backend.
TextBatch concat_text(Backend& be, const TextBatch& a, const TextBatch& b);
// `one` (B = 1) repeated n times.
TextBatch repeat_rows(Backend& be, const TextBatch& one, int n);
// The hidden states of row b, its valid tokens only (lengths[b] × dim), downloaded to the host.
std::vector<float> download_row(const TextBatch& t, int b);

class TextEncoder {
 public:
  TextEncoder(Tokenizer tok, std::unique_ptr<T5Encoder> t5);
  // `type`: storage of the T5's Linear weights (docs/formats.md); unset = as the file records.
  static std::unique_ptr<TextEncoder> load(const std::string& path, Backend& be,
                                           std::optional<WFormat> type = std::nullopt);
  // The tokenizer alone (cheap): the file's `oboro.tokenizer` metadata, or spiece.model beside it or in a sibling
  // tokenizer_2/ or tokenizer/ folder (HF / FLUX.1 layouts).
  static Tokenizer load_tokenizer(const std::string& path);
  void save(const std::string& path) const;  // T5 weights + tokenizer in metadata

  // Encode prompts (each tokenised with </s>, padded to the longest, at most max_len tokens).
  TextBatch encode(const std::vector<std::string>& prompts, bool training, int max_len = 256);
  // After encode(training = true): accumulate T5 gradients for dL/dhidden (B, L, dim), a backend buffer whose padded
  // rows are zeroed here (they get no gradient).
  void backward(float* dhidden);

  T5Encoder& t5() { return *t5_; }
  const Tokenizer& tokenizer() const { return tok_; }
  int dim() const { return t5_->config().d_model; }

 private:
  Tokenizer tok_;
  std::unique_ptr<T5Encoder> t5_;
  Buffer last_mask_;  // (B·L) of the last training encode: padded rows get no gradient
  int last_rows_ = 0, last_dim_ = 0;
};

}  // namespace oboro
