// Image decode (io/image.h): the format is sniffed from magic bytes and decoded by libpng (PNG), libwebp
// (WebP) or stb_image (JPEG, BMP, GIF, TGA, PSD, PNM, HDR); sizes are checked before any pixel buffer
// is allocated. A decoded image is then resized and cropped as the training loader does with every
// image (data/dataset.cpp) and converted to the [-1, 1] tensor layout.
#include "fuzz_util.h"
#include "io/image.h"

#include <vector>

using namespace oboro;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string label = "input.img";
  fuzz::accept_errors(
      [&] {
        Image img = decode_image(bytes, label);
        if (img.empty() || img.rgb.size() != (size_t)img.width * img.height * 3) std::abort();
        Image small = resize_cover_crop(img, 8, 6, 0.25f, 0.75f);
        std::vector<float> chw(3 * 8 * 6);
        image_to_chw(small, chw.data());
      },
      [&](std::string_view m) { fuzz::require_one_line(m, label); });
  return 0;
}
