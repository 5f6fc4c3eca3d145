// manifest.jsonl as `oboro data ingest` reads it (data/ingest.cpp stages it into the SQLite manifest and
// takes each image's licence, source, attribution, original and captions from its record, and checks its
// sha256). Per input: a fresh manifest database in the per-process temp folder, and a source folder with
// one small PNG (a.png = kTinyPng, with a caption sidecar) and the input as its manifest.jsonl. Slower than the
// other harnesses (SQLite + image decode per run); it covers the second manifest.jsonl reader.
#include "data/manifest.h"
#include "fuzz_util.h"

using namespace oboro;

namespace {
const fuzz::fs::path& dir() { return fuzz::ScratchDir::get("ingest-jsonl"); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  fuzz::fs::create_directories(dir() / "src");
  fuzz::write_file(dir() / "src" / "a.png", fuzz::kTinyPng);  // make_corpus.sh lists its sha256
  fuzz::write_file(dir() / "src" / "a.txt", "red circle\n");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::write_file(dir() / "src" / "manifest.jsonl", std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::clear_dir(dir(), {"src"});
  fuzz::accept_errors([&] {
    auto m = Manifest::open((dir() / "m.db").string(), /*create=*/true);
    IngestOptions opt;
    opt.source = (dir() / "src").string();
    opt.progress = false;
    ingest(*m, opt);
    if (auto row = m->image_by_id(1)) (void)m->training_caption(row->id);
  });
  return 0;
}
