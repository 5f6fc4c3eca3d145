// kohya dataset TOML (data/dataset.h, Dataset::open): [general] < [[datasets]] < [[datasets.subsets]]
// keys, image_dir relative to the TOML, class_tokens, unknown keys. The temp folder holds `img/` with
// two small PNGs (one with a caption sidecar) so that seeds naming image_dir = "img" get past scanning;
// the first image is then loaded with the subset's augmentations (caption shuffle, keep_tokens,
// dropout, flip) as training does.
#include "data/dataset.h"
#include "fuzz_util.h"
#include "io/image.h"

#include <vector>

using namespace oboro;

namespace {
const fuzz::fs::path& dir() { return fuzz::ScratchDir::get("dataset-toml"); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  fuzz::fs::create_directories(dir() / "img");
  Image img;
  img.width = 4;
  img.height = 3;
  for (int i = 0; i < 4 * 3 * 3; ++i) img.rgb.push_back((uint8_t)(i * 7));
  fuzz::write_file(dir() / "img" / "a.png", encode_png(img));
  fuzz::write_file(dir() / "img" / "a.txt", "red circle, large, on blue, smile\n");
  fuzz::write_file(dir() / "img" / "b.png", encode_png(img));
  fuzz::write_file(dir() / "img" / "b.caption", "green square\n");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = (dir() / "dataset.toml").string();
  fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::accept_errors([&] {
    Dataset ds = Dataset::open(path);
    (void)ds.captions();
    (void)ds.image_files();
    std::vector<float> chw(3 * 4 * 4);
    std::string caption;
    const size_t n = ds.size() < 4 ? ds.size() : 4;
    for (size_t i = 0; i < n; ++i) (void)ds.load(i, 4, 4, 1 + i, chw.data(), &caption);
  });
  return 0;
}
