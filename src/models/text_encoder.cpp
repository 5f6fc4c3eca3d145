#include "models/text_encoder.h"
#include "core/base64.h"
#include "core/error.h"
#include "io/safetensors.h"
#include <algorithm>
#include <filesystem>

namespace oboro {

TextEncoder::TextEncoder(Tokenizer tok, std::unique_ptr<T5Encoder> t5) : tok_(std::move(tok)), t5_(std::move(t5)) {
  if (tok_.vocab_size() > t5_->config().vocab_size)
    fail("the tokenizer has ", tok_.vocab_size(), " pieces but the T5 embedding has only ", t5_->config().vocab_size,
         " rows: they do not belong together");
}

Tokenizer TextEncoder::load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  TensorSource src = TensorSource::open(path);
  auto it = src.metadata().find("oboro.tokenizer");
  if (it != src.metadata().end()) return Tokenizer::from_serialized(base64_decode(it->second));
  // HF layouts: spiece.model beside the weights, or in the tokenizer folder next to the text-encoder folder
  // (FLUX.1 repositories: text_encoder_2/ + tokenizer_2/).
  fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  std::vector<fs::path> tried{dir / "spiece.model", dir.parent_path() / "tokenizer_2" / "spiece.model",
                              dir.parent_path() / "tokenizer" / "spiece.model"};
  for (const auto& sp : tried)
    if (fs::exists(sp)) return Tokenizer::load(sp.string());
  std::string list;
  for (const auto& sp : tried) list += "\n  " + sp.string();
  fail(path, ": no tokenizer: the file has no 'oboro.tokenizer' metadata and no spiece.model was found; looked in:",
       list, "\nput the T5 spiece.model beside the weights (", dir.string(), ")");
}

std::unique_ptr<TextEncoder> TextEncoder::load(const std::string& path, Backend& be, std::optional<WFormat> type) {
  Tokenizer tok = load_tokenizer(path);  // first: a missing tokenizer fails before gigabytes are read
  return std::make_unique<TextEncoder>(std::move(tok), T5Encoder::load(path, be, type));
}

void TextEncoder::save(const std::string& path) const {
  // T5Encoder::save writes weights + config; re-write with the tokenizer added to the metadata.
  t5_->save(path);
  auto f = SafetensorsFile::open(path);
  SafetensorsWriter wr;
  std::vector<Tensor> keep;
  for (const auto& info : f->tensors()) keep.push_back(f->tensor(info.name));
  size_t k = 0;
  for (const auto& info : f->tensors()) wr.add(info.name, keep[k++]);
  for (const auto& [key, v] : f->metadata()) wr.set_metadata(key, v);
  wr.set_metadata("oboro.tokenizer", base64_encode(tok_.serialized()));
  wr.write(path);
}

TextBatch TextEncoder::encode(const std::vector<std::string>& prompts, bool training, int max_len) {
  TextBatch tb;
  tb.B = (int)prompts.size();
  tb.dim = dim();
  std::vector<std::vector<int>> ids(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ids[i] = tok_.encode(prompts[i], max_len);
    tb.L = std::max(tb.L, (int)ids[i].size());
  }
  std::vector<int32_t> flat((size_t)tb.B * tb.L, Tokenizer::kPad);
  tb.mask.assign((size_t)tb.B * tb.L, 0.f);
  for (int b = 0; b < tb.B; ++b)
    for (size_t j = 0; j < ids[b].size(); ++j) {
      flat[(size_t)b * tb.L + j] = ids[b][j];
      tb.mask[(size_t)b * tb.L + j] = 1.f;
    }
  tb.hidden.assign((size_t)tb.B * tb.L * tb.dim, 0.f);
  t5_->forward(tb.hidden.data(), flat.data(), tb.mask.data(), tb.B, tb.L, training);
  // Padded rows are unspecified by the encoder; zero them so downstream sees clean inputs.
  for (int b = 0; b < tb.B; ++b)
    for (int j = 0; j < tb.L; ++j)
      if (tb.mask[(size_t)b * tb.L + j] == 0.f)
        std::fill_n(tb.hidden.begin() + ((size_t)b * tb.L + j) * tb.dim, tb.dim, 0.f);
  if (training) { last_mask_ = tb.mask; last_dim_ = tb.dim; }
  return tb;
}

void TextEncoder::backward(const float* dhidden) {
  std::vector<float> d(dhidden, dhidden + last_mask_.size() * last_dim_);
  for (size_t r = 0; r < last_mask_.size(); ++r)
    if (last_mask_[r] == 0.f) std::fill_n(d.begin() + r * last_dim_, last_dim_, 0.f);
  t5_->backward(d.data());
}

}  // namespace oboro
