// Image IO: PNG/WebP/JPEG/BMP/GIF decode, PNG encode with text chunks, resampling, tensor
// conversion, grids, and error handling on corrupt input (never a crash).
#include "core/error.h"
#include "core/rng.h"
#include "io/image.h"

#include <gtest/gtest.h>
#include <png.h>
#include <stb_image_write.h>
#include <webp/encode.h>

#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir() {
  fs::path d = fs::temp_directory_path() / ("oboro_image_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary);
  f << b;
}

Image random_image(int w, int h, uint64_t seed) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize((size_t)w * h * 3);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = (uint8_t)(uniform_at(seed, 0, i) * 256.f);
  return im;
}

// Smooth gradient (compresses well as JPEG).
Image gradient(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize((size_t)w * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[3 * ((size_t)y * w + x)];
      p[0] = (uint8_t)(255 * x / (w - 1));
      p[1] = (uint8_t)(255 * y / (h - 1));
      p[2] = 128;
    }
  return im;
}

Image constant(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  Image im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.rgb.insert(im.rgb.end(), {r, g, b});
  return im;
}

void stb_sink(void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append((const char*)data, size); }

std::string encode_jpeg(const Image& im, int quality) {
  std::string out;
  EXPECT_TRUE(stbi_write_jpg_to_func(stb_sink, &out, im.width, im.height, 3, im.rgb.data(), quality));
  return out;
}

std::string encode_bmp(const Image& im) {
  std::string out;
  EXPECT_TRUE(stbi_write_bmp_to_func(stb_sink, &out, im.width, im.height, 3, im.rgb.data()));
  return out;
}

std::string encode_png_rgba(const std::vector<uint8_t>& rgba, int w, int h) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = w;
  im.height = h;
  im.format = PNG_FORMAT_RGBA;
  size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&im, nullptr, &size, 0, rgba.data(), 0, nullptr));
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&im, out.data(), &size, 0, rgba.data(), 0, nullptr));
  out.resize(size);
  return out;
}

// A PNG with a zTXt chunk before IDAT and a tEXt chunk after it (written by libpng directly).
struct WriteCtx { std::string out; };
void png_w(png_structp p, png_bytep d, size_t n) { static_cast<WriteCtx*>(png_get_io_ptr(p))->out.append((char*)d, n); }
void png_f(png_structp) {}
std::string png_with_ztxt_and_trailing_text() {
  WriteCtx ctx;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    ADD_FAILURE() << "libpng error in test helper";
    png_destroy_write_struct(&png, &info);
    return "";
  }
  png_set_write_fn(png, &ctx, png_w, png_f);
  png_set_IHDR(png, info, 2, 2, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  static char k1[] = "Comment", t1[] = "compressed comment, compressed comment, compressed comment";
  png_text a{};
  a.compression = PNG_TEXT_COMPRESSION_zTXt;
  a.key = k1;
  a.text = t1;
  a.text_length = std::strlen(t1);
  png_set_text(png, info, &a, 1);
  png_write_info(png, info);
  uint8_t row[6] = {1, 2, 3, 4, 5, 6};
  png_write_row(png, row);
  png_write_row(png, row);
  static char k2[] = "After", t2[] = "written after IDAT";
  png_text b{};
  b.compression = PNG_TEXT_COMPRESSION_NONE;
  b.key = k2;
  b.text = t2;
  b.text_length = std::strlen(t2);
  png_set_text(png, info, &b, 1);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return ctx.out;
}

// Either decodes to a consistent image or throws oboro::Error. Anything else fails the test.
void decode_must_not_crash(const std::string& bytes, const std::string& label) {
  try {
    Image im = decode_image(bytes, label);
    ASSERT_GT(im.width, 0);
    ASSERT_GT(im.height, 0);
    ASSERT_EQ(im.rgb.size(), (size_t)im.width * im.height * 3);
  } catch (const Error& e) {
    ASSERT_NE(std::string(e.what()).find(label), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Image, PngRoundTripExact) {
  for (auto [w, h] : {std::pair{1, 1}, {37, 23}, {64, 3}}) {
    Image im = random_image(w, h, 100 + w);
    Image back = decode_image(encode_png(im), "mem.png");
    EXPECT_EQ(back.width, w);
    EXPECT_EQ(back.height, h);
    EXPECT_EQ(back.rgb, im.rgb);
  }
}

TEST(Image, PngTextChunksRoundTrip) {
  std::string long_text;
  for (int i = 0; long_text.size() < 200000; ++i) long_text += "token" + std::to_string(i) + ", ";
  const TextChunks in = {
      {"parameters", "a red circle\nNegative prompt: blurry\nSteps: 30, Sampler: Euler, CFG scale: 5, Seed: 1234"},
      {"latin1", "café crème"},                     // Latin-1-safe → tEXt
      {"utf8", "桜の木の下 — a cat 🐱"},             // not Latin-1 → iTXt
      {"long", long_text},
      {"empty", ""}};
  const std::string png = encode_png(random_image(5, 4, 1), in);
  // tEXt for Latin-1 text, iTXt otherwise.
  EXPECT_NE(png.find(std::string("tEXtparameters\0", 15)), std::string::npos);
  EXPECT_NE(png.find(std::string("tEXtlatin1\0caf\xe9", 15)), std::string::npos);
  EXPECT_NE(png.find("iTXtutf8"), std::string::npos);
  EXPECT_EQ(read_png_text_bytes(png, "mem.png"), in);

  const fs::path p = tmpdir() / "text.png";
  save_png(p.string(), random_image(3, 3, 2), in);
  EXPECT_EQ(read_png_text(p.string()), in);
  EXPECT_EQ(load_image(p.string()).width, 3);
  // The atomic writer leaves no temporary files behind.
  for (const auto& e : fs::directory_iterator(tmpdir()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Image, PngTextZtxtAndAfterIdat) {
  const std::string png = png_with_ztxt_and_trailing_text();
  ASSERT_FALSE(png.empty());
  const TextChunks t = read_png_text_bytes(png, "z.png");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "Comment");
  EXPECT_EQ(t[0].second, "compressed comment, compressed comment, compressed comment");
  EXPECT_EQ(t[1].first, "After");
  EXPECT_EQ(t[1].second, "written after IDAT");
  EXPECT_EQ(decode_image(png, "z.png").rgb, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6}));
}

TEST(Image, PngTextBadKeyword) {
  EXPECT_THROW(encode_png(random_image(2, 2, 3), {{"", "x"}}), Error);
  EXPECT_THROW(encode_png(random_image(2, 2, 3), {{std::string(80, 'k'), "x"}}), Error);
  EXPECT_THROW(encode_png(random_image(2, 2, 3), {{"日本", "x"}}), Error);
  // Invalid UTF-8 in the text is repaired (U+FFFD), not fatal.
  const TextChunks t = read_png_text_bytes(encode_png(random_image(2, 2, 3), {{"k", "bad \xff\xfe end"}}), "m");
  EXPECT_EQ(t[0].second, "bad \xef\xbf\xbd\xef\xbf\xbd end");
}

TEST(Image, AlphaCompositedOnWhite) {
  // Pixels: opaque red, transparent, half-transparent blue, opaque black.
  const std::vector<uint8_t> rgba = {255, 0, 0, 255, 10, 20, 30, 0, 0, 0, 255, 128, 0, 0, 0, 255};
  Image im = decode_image(encode_png_rgba(rgba, 2, 2), "a.png");
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{255, 0, 0, 255, 255, 255, 127, 127, 255, 0, 0, 0}));
  // Same through WebP (lossless keeps alpha exactly).
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGBA(rgba.data(), 2, 2, 8, &out);
  ASSERT_GT(n, 0u);
  std::string webp((const char*)out, n);
  WebPFree(out);
  EXPECT_EQ(decode_image(webp, "a.webp").rgb, im.rgb);
}

TEST(Image, WebPDecode) {
  const Image im = gradient(40, 24);
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(im.rgb.data(), im.width, im.height, im.width * 3, &out);
  ASSERT_GT(n, 0u);
  std::string lossless((const char*)out, n);
  WebPFree(out);
  // Detected by magic bytes, whatever the name says.
  Image back = decode_image(lossless, "photo.png");
  EXPECT_EQ(back.width, 40);
  EXPECT_EQ(back.height, 24);
  EXPECT_EQ(back.rgb, im.rgb);

  n = WebPEncodeRGB(im.rgb.data(), im.width, im.height, im.width * 3, 90.f, &out);
  ASSERT_GT(n, 0u);
  std::string lossy((const char*)out, n);
  WebPFree(out);
  back = decode_image(lossy, "lossy.webp");
  ASSERT_EQ(back.rgb.size(), im.rgb.size());
  double err = 0;
  for (size_t i = 0; i < im.rgb.size(); ++i) err += std::abs((int)back.rgb[i] - (int)im.rgb[i]);
  EXPECT_LT(err / im.rgb.size(), 6.0);
}

TEST(Image, JpegBmpGifDecode) {
  const Image im = gradient(48, 32);
  Image back = decode_image(encode_jpeg(im, 95), "x.jpg");
  ASSERT_EQ(back.width, 48);
  ASSERT_EQ(back.height, 32);
  double err = 0;
  for (size_t i = 0; i < im.rgb.size(); ++i) err += std::abs((int)back.rgb[i] - (int)im.rgb[i]);
  EXPECT_LT(err / im.rgb.size(), 4.0);

  const Image rnd = random_image(13, 7, 9);
  EXPECT_EQ(decode_image(encode_bmp(rnd), "x.bmp").rgb, rnd.rgb);

  // 1×1 GIF, palette {black, white}, pixel 0.
  const std::string gif("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
                        ",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00;", 35);
  Image g = decode_image(gif, "x.gif");
  EXPECT_EQ(g.width, 1);
  EXPECT_EQ(g.rgb, (std::vector<uint8_t>{0, 0, 0}));
}

TEST(Image, CorruptInputErrorsNameTheFile) {
  const fs::path d = tmpdir();
  auto msg = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string missing = (d / "missing.png").string();
  std::string m = msg([&] { load_image(missing); });
  EXPECT_NE(m.find(missing), std::string::npos) << m;
  EXPECT_NE(m.find("No such file"), std::string::npos) << m;

  const fs::path empty = d / "empty.png";
  write_bytes(empty, "");
  m = msg([&] { load_image(empty.string()); });
  EXPECT_NE(m.find(empty.string()), std::string::npos) << m;
  EXPECT_NE(m.find("empty"), std::string::npos) << m;

  const fs::path text = d / "notes.jpg";
  write_bytes(text, "hello, this is not an image at all\n");
  m = msg([&] { load_image(text.string()); });
  EXPECT_NE(m.find(text.string()), std::string::npos) << m;
  EXPECT_NE(m.find("not an image"), std::string::npos) << m;

  const std::string png = encode_png(random_image(32, 32, 5));
  const fs::path trunc = d / "trunc.png";
  write_bytes(trunc, png.substr(0, png.size() / 2));
  m = msg([&] { load_image(trunc.string()); });
  EXPECT_NE(m.find(trunc.string()), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;

  const std::string jpg = encode_jpeg(gradient(64, 64), 90);
  m = msg([&] { decode_image(jpg.substr(0, jpg.size() * 2 / 3), "cut.jpg"); });
  EXPECT_NE(m.find("cut.jpg"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;

  m = msg([&] { decode_image(std::string("II*\0\x08\0\0\0", 8) + std::string(100, '\0'), "scan.tif"); });
  EXPECT_NE(m.find("unsupported"), std::string::npos) << m;
  EXPECT_NE(m.find("TIFF"), std::string::npos) << m;

  m = msg([&] { read_png_text_bytes(jpg, "photo.jpg"); });
  EXPECT_NE(m.find("photo.jpg: not a PNG"), std::string::npos) << m;

  m = msg([&] { load_image(d.string()); });
  EXPECT_NE(m.find("directory"), std::string::npos) << m;
}

TEST(Image, FuzzTruncatedAndRandomBytesNeverCrash) {
  const Image im = random_image(19, 11, 21);
  std::vector<std::pair<std::string, std::string>> seeds = {{"png", encode_png(im, {{"k", "v"}})},
                                                            {"jpg", encode_jpeg(gradient(24, 16), 80)},
                                                            {"bmp", encode_bmp(im)}};
  uint8_t* out = nullptr;
  size_t n = WebPEncodeRGB(im.rgb.data(), im.width, im.height, im.width * 3, 80.f, &out);
  seeds.push_back({"webp", std::string((const char*)out, n)});
  WebPFree(out);
  n = WebPEncodeLosslessRGB(im.rgb.data(), im.width, im.height, im.width * 3, &out);
  seeds.push_back({"webpll", std::string((const char*)out, n)});
  WebPFree(out);

  uint64_t k = 0;
  for (const auto& [name, bytes] : seeds) {
    // Every prefix length up to 64, then a spread of lengths.
    for (size_t len = 0; len < bytes.size(); len += (len < 64 ? 1 : 1 + bytes.size() / 97))
      decode_must_not_crash(bytes.substr(0, len), "cut." + name);
    // Random byte flips.
    for (int t = 0; t < 150; ++t) {
      std::string b = bytes;
      const int flips = 1 + (int)(uniform_at(77, k, 0) * 8);
      for (int f = 0; f < flips; ++f) {
        size_t pos = (size_t)(uniform_at(77, k, 1 + 2 * f) * b.size());
        b[std::min(pos, b.size() - 1)] = (char)(uniform_at(77, k, 2 + 2 * f) * 256.f);
      }
      ++k;
      decode_must_not_crash(b, "flip." + name);
      if (name == "png") {
        try {
          read_png_text_bytes(b, "flip.png");
        } catch (const Error&) {
        }
      }
    }
  }
  // Random bytes, bare and behind each magic.
  const std::vector<std::string> magics = {"", "\x89PNG\r\n\x1a\n", "\xff\xd8\xff", "RIFF\x10\0\0\0WEBPVP8 ", "GIF89a", "BM",
                                           "P6\n4 4\n255\n", "8BPS", "#?RADIANCE\n"};
  for (const auto& mg : magics)
    for (int t = 0; t < 40; ++t) {
      std::string b = mg;
      const int len = 1 + (int)(uniform_at(78, k, 0) * 300);
      for (int i = 0; i < len; ++i) b += (char)(uniform_at(78, k, 1 + i) * 256.f);
      ++k;
      decode_must_not_crash(b, "random.bin");
    }
}

TEST(Image, ResizeConstantStaysConstant) {
  const Image c = constant(97, 61, 200, 13, 77);
  for (auto [w, h] : {std::pair{13, 7}, {48, 30}, {97, 61}, {150, 100}, {5, 200}}) {
    Image r = resize(c, w, h);
    ASSERT_EQ(r.width, w);
    ASSERT_EQ(r.height, h);
    for (size_t i = 0; i < r.rgb.size(); i += 3) {
      ASSERT_EQ(r.rgb[i], 200);
      ASSERT_EQ(r.rgb[i + 1], 13);
      ASSERT_EQ(r.rgb[i + 2], 77);
    }
    Image rc = resize_cover_crop(c, w, h, 0.3f, 0.9f);
    EXPECT_EQ(rc.rgb, r.rgb);
  }
}

TEST(Image, ResizeCheckerboardHalvesToGrey) {
  Image cb;
  cb.width = cb.height = 64;
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) {
      const uint8_t v = ((x + y) & 1) ? 255 : 0;
      cb.rgb.insert(cb.rgb.end(), {v, v, v});
    }
  for (int s : {32, 16, 8}) {
    Image r = resize(cb, s, s);
    for (uint8_t v : r.rgb) ASSERT_EQ(v, 128);  // 127.5 rounds up
  }
  // Area averaging over a non-integer factor still averages to grey (±1 from partial cells).
  Image r = resize(cb, 21, 21);
  for (uint8_t v : r.rgb) ASSERT_NEAR(v, 128, 30);
}

TEST(Image, ResizeBilinearGrowth) {
  Image im;
  im.width = 2;
  im.height = 1;
  im.rgb = {0, 0, 0, 255, 255, 255};
  Image r = resize(im, 4, 1);
  EXPECT_EQ(r.rgb, (std::vector<uint8_t>{0, 0, 0, 64, 64, 64, 191, 191, 191, 255, 255, 255}));
}

TEST(Image, ResizeAreaAverageValues) {
  // 4×1 → 2×1 averages pairs; 3×1 → 2×1 uses fractional coverage (1.5 px per output).
  Image im;
  im.width = 4;
  im.height = 1;
  im.rgb = {0, 0, 0, 100, 100, 100, 200, 200, 200, 50, 50, 50};
  EXPECT_EQ(resize(im, 2, 1).rgb, (std::vector<uint8_t>{50, 50, 50, 125, 125, 125}));
  im.width = 3;
  im.rgb.resize(9);
  // out0 = (0·1 + 100·0.5)/1.5 = 33.3; out1 = (100·0.5 + 200·1)/1.5 = 166.7
  EXPECT_EQ(resize(im, 2, 1).rgb, (std::vector<uint8_t>{33, 33, 33, 167, 167, 167}));
}

TEST(Image, CoverCropPicksWindow) {
  // 100×50: left half red, right half blue.
  Image im;
  im.width = 100;
  im.height = 50;
  for (int y = 0; y < 50; ++y)
    for (int x = 0; x < 100; ++x) im.rgb.insert(im.rgb.end(), {uint8_t(x < 50 ? 255 : 0), 0, uint8_t(x < 50 ? 0 : 255)});
  Image left = resize_cover_crop(im, 20, 20, 0.f, 0.5f);
  Image right = resize_cover_crop(im, 20, 20, 1.f, 0.5f);
  Image centre = resize_cover_crop(im, 20, 20);
  for (size_t i = 0; i < left.rgb.size(); i += 3) {
    EXPECT_EQ(left.rgb[i], 255);
    EXPECT_EQ(right.rgb[i + 2], 255);
  }
  EXPECT_EQ(centre.rgb[0], 255);                       // left column red
  EXPECT_EQ(centre.rgb[3 * 19 + 2], 255);              // right column blue
  // Cover: a 10×10 output from a 100×50 keeps the full height.
  Image sq = resize_cover_crop(constant(100, 50, 1, 2, 3), 10, 10);
  EXPECT_EQ(sq.width, 10);
  EXPECT_EQ(sq.height, 10);
  // Growing path: 8×4 → 32×32.
  Image up = resize_cover_crop(im, 32, 32, 0.f, 0.f);
  EXPECT_EQ(up.rgb[0], 255);
}

TEST(Image, ChwConversion) {
  Image im;
  im.width = 256;
  im.height = 1;
  for (int v = 0; v < 256; ++v) im.rgb.insert(im.rgb.end(), {uint8_t(v), uint8_t(255 - v), uint8_t(v / 2)});
  std::vector<float> chw(3 * 256);
  image_to_chw(im, chw.data());
  EXPECT_FLOAT_EQ(chw[0], -1.f);
  EXPECT_FLOAT_EQ(chw[255], 1.f);
  EXPECT_FLOAT_EQ(chw[256], 1.f);  // G plane starts with 255
  EXPECT_EQ(chw_to_image(chw.data(), 1, 256).rgb, im.rgb);
  const float odd[3] = {2.f, -3.f, std::nanf("")};
  EXPECT_EQ(chw_to_image(odd, 1, 1).rgb, (std::vector<uint8_t>{255, 0, 0}));
  const float mid[3] = {0.f, 0.0039f, -0.0039f};  // 127.5 → 128, 127.997 → 128, 127.0 → 127
  EXPECT_EQ(chw_to_image(mid, 1, 1).rgb, (std::vector<uint8_t>{128, 128, 127}));
}

TEST(Image, Grid) {
  std::vector<Image> ims = {constant(4, 4, 255, 0, 0), constant(4, 2, 0, 255, 0), constant(4, 4, 0, 0, 255)};
  Image g = make_grid(ims, 2, 1);
  EXPECT_EQ(g.width, 2 * 4 + 3);
  EXPECT_EQ(g.height, 2 * 4 + 3);
  auto px = [&](int x, int y) { return &g.rgb[3 * ((size_t)y * g.width + x)]; };
  EXPECT_EQ(px(1, 1)[0], 255);  // red at (1,1)
  EXPECT_EQ(px(6, 2)[1], 255);  // green centred vertically in the second cell: rows 2..3
  EXPECT_EQ(px(1, 6)[2], 255);  // blue in the second row
  EXPECT_TRUE(make_grid({}, 3).empty());
  EXPECT_EQ(make_grid(ims, 0, 0).width, 8);  // auto columns = ceil(sqrt(3)) = 2
}
