// fuzz/make_corpus.sh helper: from one PNG that `oboro generate` wrote, the same pixels in the other
// encodings the image reader takes but oboro does not write itself: WebP (lossy, lossless, with alpha,
// via libwebp's encoder), PNG as 16-bit RGBA, grey and grey+alpha (libpng), binary PPM, 24-bit BMP,
// uncompressed TGA, and a minimal GIF.
//   seed_images IN.png OUT_PREFIX   →  OUT_PREFIX.lossy.webp, OUT_PREFIX.lossless.webp, ...
#include <png.h>
#include <webp/encode.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

void put(const std::string& path, const void* p, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(p), (std::streamsize)n);
  if (!f) {
    std::fprintf(stderr, "seed_images: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}
void put(const std::string& path, const std::string& s) { put(path, s.data(), s.size()); }

void le16(std::string& s, unsigned v) { s += char(v & 255); s += char((v >> 8) & 255); }
void le32(std::string& s, uint32_t v) { le16(s, v & 0xffff); le16(s, v >> 16); }

bool write_png(const std::string& path, int w, int h, uint32_t format, const void* px) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = (png_uint_32)w;
  im.height = (png_uint_32)h;
  im.format = format;
  return png_image_write_to_file(&im, path.c_str(), 0, px, 0, nullptr) != 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: seed_images IN.png OUT_PREFIX\n");
    return 2;
  }
  const std::string out = argv[2];
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&im, argv[1])) {
    std::fprintf(stderr, "seed_images: %s: %s\n", argv[1], im.message);
    return 1;
  }
  im.format = PNG_FORMAT_RGBA;
  const int w = (int)im.width, h = (int)im.height;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(im));
  if (!png_image_finish_read(&im, nullptr, rgba.data(), 0, nullptr)) {
    std::fprintf(stderr, "seed_images: %s: %s\n", argv[1], im.message);
    return 1;
  }
  // A soft alpha ramp so the alpha paths (compositing on white) are exercised.
  std::vector<uint8_t> alpha = rgba;
  for (int i = 0; i < w * h; ++i) alpha[4 * i + 3] = (uint8_t)(255 * (i % w) / (w > 1 ? w - 1 : 1));

  uint8_t* enc = nullptr;
  size_t n = WebPEncodeRGBA(rgba.data(), w, h, w * 4, 80.f, &enc);
  if (!n) return 1;
  put(out + ".lossy.webp", enc, n);
  WebPFree(enc);
  n = WebPEncodeLosslessRGBA(rgba.data(), w, h, w * 4, &enc);
  if (!n) return 1;
  put(out + ".lossless.webp", enc, n);
  WebPFree(enc);
  n = WebPEncodeRGBA(alpha.data(), w, h, w * 4, 50.f, &enc);
  if (!n) return 1;
  put(out + ".alpha.webp", enc, n);
  WebPFree(enc);

  std::vector<uint16_t> rgba16(rgba.size());
  for (size_t i = 0; i < rgba.size(); ++i) rgba16[i] = (uint16_t)(alpha[i] * 257);
  std::vector<uint8_t> grey(w * h), ga(2 * w * h);
  for (int i = 0; i < w * h; ++i) {
    grey[i] = (uint8_t)((rgba[4 * i] * 77 + rgba[4 * i + 1] * 150 + rgba[4 * i + 2] * 29) >> 8);
    ga[2 * i] = grey[i];
    ga[2 * i + 1] = alpha[4 * i + 3];
  }
  if (!write_png(out + ".16bit.png", w, h, PNG_FORMAT_LINEAR_RGB_ALPHA, rgba16.data()) ||
      !write_png(out + ".grey.png", w, h, PNG_FORMAT_GRAY, grey.data()) ||
      !write_png(out + ".greyalpha.png", w, h, PNG_FORMAT_GA, ga.data())) {
    std::fprintf(stderr, "seed_images: PNG write failed\n");
    return 1;
  }

  std::string ppm = "P6\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  for (int i = 0; i < w * h; ++i) ppm.append(reinterpret_cast<const char*>(&rgba[4 * i]), 3);
  put(out + ".ppm", ppm);

  const int stride = (w * 3 + 3) / 4 * 4;
  std::string bmp = "BM";
  le32(bmp, 54 + stride * h); le32(bmp, 0); le32(bmp, 54);
  le32(bmp, 40); le32(bmp, w); le32(bmp, h); le16(bmp, 1); le16(bmp, 24); le32(bmp, 0);
  le32(bmp, stride * h); le32(bmp, 2835); le32(bmp, 2835); le32(bmp, 0); le32(bmp, 0);
  for (int y = h - 1; y >= 0; --y) {
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = &rgba[4 * (y * w + x)];
      bmp += char(p[2]); bmp += char(p[1]); bmp += char(p[0]);
    }
    bmp.append(stride - w * 3, '\0');
  }
  put(out + ".bmp", bmp);

  std::string tga(18, '\0');
  tga[2] = 2;  // uncompressed true colour
  tga[12] = char(w & 255); tga[13] = char(w >> 8); tga[14] = char(h & 255); tga[15] = char(h >> 8);
  tga[16] = 32; tga[17] = 0x28;  // 32 bpp, top-left origin, 8 alpha bits
  for (int i = 0; i < w * h; ++i) {
    const uint8_t* p = &alpha[4 * i];
    tga += char(p[2]); tga += char(p[1]); tga += char(p[0]); tga += char(p[3]);
  }
  put(out + ".tga", tga);

  // 1×1 GIF89a, one colour (the smallest well-formed GIF).
  static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 0xff, 0x00, 0x00, 0, 0, 0,
                                      0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
  put(out + ".gif", gif, sizeof gif);
  return 0;
}
