// PNG text chunks (tEXt, zTXt, iTXt) as oboro reads the A1111 infotext back from a generated image
// (io/image.h read_png_text_bytes: the whole file is walked with libpng so chunks after IDAT count),
// then the `parameters` chunk parsed as infotext (flow/infotext.h), and the chunks written again with
// encode_png (keywords and text from a hostile file must give a clear error, not a broken PNG).
#include "flow/infotext.h"
#include "fuzz_util.h"
#include "io/image.h"

using namespace oboro;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string label = "input.png";
  TextChunks chunks;
  fuzz::accept_errors([&] { chunks = read_png_text_bytes(bytes, label); },
                      [&](std::string_view m) { fuzz::require_one_line(m, label); });
  for (const auto& [key, text] : chunks)
    if (key == "parameters") {
      Infotext it = parse_infotext(text);
      (void)it;
    }
  if (!chunks.empty()) {
    Image px;
    px.width = px.height = 1;
    px.rgb = {1, 2, 3};
    fuzz::accept_errors([&] {
      const std::string png = encode_png(px, chunks);
      const TextChunks back = read_png_text_bytes(png, "re-encoded.png");
      if (back.size() != chunks.size()) std::abort();
    });
  }
  return 0;
}
