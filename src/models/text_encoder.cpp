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

// Another kind of model given where the text encoder belongs (--t5 pointing at the DiT, the VAE): said by name,
// from the file's metadata and tensor names, before the search for a tokenizer that such a file never has.
static void check_is_text_encoder(const TensorSource& src, const std::string& path) {
  const auto& md = src.metadata();
  const auto arch = md.find("modelspec.architecture");
  if (md.count("oboro.config") || (arch != md.end() && arch->second.rfind("oboro-dit", 0) == 0))
    fail(path, " is an oboro DiT model, not a T5 text encoder: pass it as --model (its text encoder is the "
               ".t5.safetensors file the model names)");
  if (src.has("decoder.conv_in.weight") || src.has("encoder.conv_in.weight") || src.has("decoder.conv_in.conv.weight"))
    fail(path, " is a VAE (autoencoder), not a T5 text encoder: pass it as --vae");
}

Tokenizer TextEncoder::load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  TensorSource src = TensorSource::open(path);
  check_is_text_encoder(src, path);
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
  // One file: the T5 weights and config, with the tokenizer in the metadata.
  t5_->save(path, {{"oboro.tokenizer", base64_encode(tok_.serialized())}});
}

TextBatch TextEncoder::encode(const std::vector<std::string>& prompts, bool training, int max_len) {
  const int B = (int)prompts.size();
  std::vector<std::vector<int>> ids(prompts.size());
  std::vector<int> lengths(B);
  int L = 0;
  for (int b = 0; b < B; ++b) {
    ids[b] = tok_.encode(prompts[b], max_len);
    lengths[b] = (int)ids[b].size();
    L = std::max(L, lengths[b]);
  }
  std::vector<int32_t> flat((size_t)B * L, Tokenizer::kPad);
  std::vector<float> mask((size_t)B * L, 0.f);
  for (int b = 0; b < B; ++b)
    for (size_t j = 0; j < ids[b].size(); ++j) {
      flat[(size_t)b * L + j] = ids[b][j];
      mask[(size_t)b * L + j] = 1.f;
    }
  Backend& be = t5_->backend();
  TextBatch tb = alloc_text_batch(be, B, L, dim(), std::move(lengths));
  t5_->forward(tb.hidden.f32(), flat.data(), mask.data(), B, L, training);
  // Padded rows are unspecified by the encoder; zero them so downstream sees clean inputs.
  be.mask_rows(tb.hidden.f32(), tb.mask.f32(), B * L, tb.dim);
  if (training) {
    last_mask_ = be.alloc((size_t)B * L, DType::F32, "text_encoder.last_mask");
    be.copy(last_mask_.f32(), tb.mask.f32(), (size_t)B * L);
    last_rows_ = B * L;
    last_dim_ = tb.dim;
  }
  return tb;
}

void TextEncoder::backward(float* dhidden) {
  t5_->backend().mask_rows(dhidden, last_mask_.f32(), last_rows_, last_dim_);
  t5_->backward(dhidden);
}

TextBatch alloc_text_batch(Backend& be, int B, int L, int dim, std::vector<int> lengths) {
  if ((int)lengths.size() != B) fail("internal error: ", lengths.size(), " row lengths for a text batch of ", B);
  std::vector<float> mask((size_t)B * L, 0.f);
  for (int b = 0; b < B; ++b) {
    if (lengths[b] < 1)
      fail("text row ", b, " has no valid token: the first text token (the pooled BOS vector) must be valid");
    if (lengths[b] > L) fail("internal error: text row ", b, " has ", lengths[b], " tokens in a batch of ", L);
    std::fill_n(mask.begin() + (size_t)b * L, lengths[b], 1.f);
  }
  TextBatch tb;
  tb.B = B, tb.L = L, tb.dim = dim;
  tb.lengths = std::move(lengths);
  tb.hidden = be.alloc((size_t)B * L * dim, DType::F32, "text.hidden");
  tb.mask = upload_new(be, mask, "text.mask");
  return tb;
}

TextBatch concat_text(Backend& be, const TextBatch& a, const TextBatch& b) {
  if (a.dim != b.dim) fail("internal error: text batches of different widths");
  std::vector<int> lengths = a.lengths;
  lengths.insert(lengths.end(), b.lengths.begin(), b.lengths.end());
  TextBatch r = alloc_text_batch(be, a.B + b.B, std::max(a.L, b.L), a.dim, std::move(lengths));
  int row = 0;
  for (const TextBatch* t : {&a, &b})
    for (int i = 0; i < t->B; ++i, ++row)
      be.copy(r.hidden.f32() + (size_t)row * r.L * r.dim, t->hidden.f32() + (size_t)i * t->L * t->dim,
              (size_t)t->L * t->dim);
  return r;
}

TextBatch repeat_rows(Backend& be, const TextBatch& one, int n) {
  TextBatch r = alloc_text_batch(be, n, one.L, one.dim, std::vector<int>(n, one.lengths.at(0)));
  for (int i = 0; i < n; ++i)
    be.copy(r.hidden.f32() + (size_t)i * one.L * one.dim, one.hidden.f32(), (size_t)one.L * one.dim);
  return r;
}

std::vector<float> download_row(const TextBatch& t, int b) {
  std::vector<float> h((size_t)t.lengths[b] * t.dim);
  t.hidden.backend()->download(h.data(), t.hidden.f32() + (size_t)b * t.L * t.dim, h.size());
  return h;
}

}  // namespace oboro
