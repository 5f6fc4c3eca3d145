// safetensors, sharded: a Hugging Face `model.safetensors.index.json` ({"metadata": {...},
// "weight_map": {tensor: shard}}) and up to three shards, read with TensorSource::open (the index, and
// the directory holding it), then every tensor read as F32.
//
// Input layout: the index JSON, then each shard's bytes, separated by the 7 bytes "\0SHARD\0"
// (fuzz/make_corpus.sh writes seeds that way). The shards are written as
// model-0000K-of-00003.safetensors in a per-process temp folder, so the index can name them.
#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace oboro;

namespace {
constexpr std::string_view kSep("\0SHARD\0", 7);
constexpr size_t kMaxConvert = size_t(1) << 22;
const char* const kShardNames[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                   "model-00003-of-00003.safetensors"};

void read_all(const TensorSource& src) {
  size_t budget = kMaxConvert;
  for (const auto& [k, v] : src.metadata()) (void)k, (void)v;
  for (const std::string& name : src.names()) {
    const TensorInfo& ti = src.info(name);
    const size_t n = (size_t)shape_numel(ti.shape) * 4;
    if (n > budget) continue;
    budget -= n;
    Tensor t = src.tensor_f32(name);
    if (t.numel() != shape_numel(ti.shape)) std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split(std::string_view(reinterpret_cast<const char*>(data), size), kSep, 4);
  const fuzz::fs::path dir = fuzz::ScratchDir::get("sharded");
  fuzz::clear_dir(dir);
  const std::string index = (dir / "model.safetensors.index.json").string();
  fuzz::write_file(index, parts[0]);
  for (size_t i = 1; i < parts.size(); ++i) fuzz::write_file(dir / kShardNames[i - 1], parts[i]);
  // Every refusal is one line naming the index or a shard (all inside `dir`).
  auto check = [&](std::string_view m) { fuzz::require_one_line(m, dir.string()); };
  fuzz::accept_errors([&] { read_all(TensorSource::open(index)); }, check);
  fuzz::accept_errors([&] { read_all(TensorSource::open(dir.string())); }, check);
  fuzz::clear_dir(dir);
  return 0;
}
