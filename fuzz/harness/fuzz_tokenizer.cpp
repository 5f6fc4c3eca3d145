// The tokenizer (models/tokenizer.h) on arbitrary bytes: prompts are user text of any encoding, so
// encode() must take every byte string (invalid UTF-8, NULs, huge runs) and return ids in range ending
// with </s>; decode() of arbitrary ids must give a clear error for ids out of range. The model is the
// SentencePiece vocabulary the project makes: $OBORO_FUZZ_SPM (fuzz/make_corpus.sh trains one with
// `oboro data vocab`), else the one embedded in models/default/oboro-default.t5.safetensors.
// Input: byte 0 = token limit (1..256), then the text; the same bytes read as little-endian int32
// ids are decoded.
#include "core/base64.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "models/tokenizer.h"

#include <cstring>
#include <memory>

using namespace oboro;

namespace {
std::unique_ptr<Tokenizer> tok;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  const char* spm = std::getenv("OBORO_FUZZ_SPM");
  if (spm && *spm) {
    tok = std::make_unique<Tokenizer>(Tokenizer::load(spm));
  } else {
    auto f = SafetensorsFile::open(OBORO_SOURCE_DIR "/models/default/oboro-default.t5.safetensors");
    tok = std::make_unique<Tokenizer>(Tokenizer::from_serialized(base64_decode(f->metadata().at("oboro.tokenizer"))));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int max_len = 1 + data[0];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::vector<int> ids = tok->encode(text, max_len);
  const int V = tok->vocab_size();
  if (ids.empty() || (int)ids.size() > max_len || ids.back() != Tokenizer::kEos) std::abort();
  for (int id : ids)
    if (id < 0 || id >= V) std::abort();
  (void)tok->decode(ids);

  std::vector<int> raw((size - 1) / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
  fuzz::accept_errors([&] { (void)tok->decode(raw); });
  return 0;
}
