// Image decode (libpng, libwebp, stb_image), PNG encode with text chunks (libpng), resampling,
// tensor conversion and grids.
//
// Decoding never trusts the input: the format is chosen from magic bytes, dimensions are checked
// before any pixel buffer is allocated, and every failure becomes an oboro::Error naming the file.
#include "io/image.h"

#include "core/error.h"
#include "io/safetensors.h"  // write_file_atomic

#include <png.h>
#include <stb_image.h>
#include <webp/decode.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace oboro {

namespace {

// Largest image we decode: 8192×8192 (256 MiB as RGBA). Anything larger is refused up front.
constexpr uint64_t kMaxPixels = 8192ull * 8192ull;
constexpr int kMaxSide = 65535;

const uint8_t* u8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

bool starts_with(const std::string& b, size_t off, const char* magic, size_t n) {
  return b.size() >= off + n && std::memcmp(b.data() + off, magic, n) == 0;
}

enum class Format { Png, Jpeg, WebP, Gif, Bmp, Other };

Format sniff(const std::string& b) {
  if (starts_with(b, 0, "\x89PNG\r\n\x1a\n", 8)) return Format::Png;
  if (starts_with(b, 0, "\xff\xd8\xff", 3)) return Format::Jpeg;
  if (starts_with(b, 0, "RIFF", 4) && starts_with(b, 8, "WEBP", 4)) return Format::WebP;
  if (starts_with(b, 0, "GIF87a", 6) || starts_with(b, 0, "GIF89a", 6)) return Format::Gif;
  if (starts_with(b, 0, "BM", 2)) return Format::Bmp;
  return Format::Other;
}

// Formats we recognise but do not decode: a specific message beats "not an image".
const char* unsupported_format(const std::string& b) {
  if (starts_with(b, 0, "II*\0", 4) || starts_with(b, 0, "MM\0*", 4)) return "TIFF";
  if (starts_with(b, 4, "ftyp", 4)) {
    if (starts_with(b, 8, "avif", 4) || starts_with(b, 8, "avis", 4)) return "AVIF";
    if (starts_with(b, 8, "hei", 3) || starts_with(b, 8, "mif1", 4) || starts_with(b, 8, "msf1", 4)) return "HEIF/HEIC";
    return "an ISO media (MP4/HEIF) file";
  }
  if (starts_with(b, 0, "\xff\x0a", 2) || starts_with(b, 0, "\0\0\0\x0cJXL \r\n\x87\n", 12)) return "JPEG XL";
  if (starts_with(b, 0, "\0\0\1\0", 4)) return "ICO";
  if (starts_with(b, 0, "%PDF", 4)) return "PDF";
  if (starts_with(b, 0, "RIFF", 4)) return "a RIFF file that is not WebP";
  size_t i = 0;
  if (starts_with(b, 0, "\xef\xbb\xbf", 3)) i = 3;
  while (i < b.size() && i < 64 && std::isspace((unsigned char)b[i])) ++i;
  if (i < b.size() && b[i] == '<') return "SVG/XML (vector images must be rasterised first)";
  return nullptr;
}

// Walks the PNG chunk list; true when it is intact up to IEND (used to say "truncated").
bool png_reaches_iend(const std::string& b) {
  size_t pos = 8;
  while (pos + 12 <= b.size()) {
    uint32_t len = (uint32_t(uint8_t(b[pos])) << 24) | (uint32_t(uint8_t(b[pos + 1])) << 16) |
                   (uint32_t(uint8_t(b[pos + 2])) << 8) | uint32_t(uint8_t(b[pos + 3]));
    if (std::memcmp(b.data() + pos + 4, "IEND", 4) == 0) return true;
    if (len > b.size()) return false;
    pos += 12 + (size_t)len;
  }
  return false;
}

// libpng allocates an ancillary chunk's declared length before it reads the chunk (and only warns when the
// length is over its limit): a 2 KB file declaring a 1.9 GB tEXt chunk got a 1.9 GB buffer before failing.
// The whole file is in memory here, so a chunk that claims more bytes than the file holds is refused first.
void check_png_chunk_lengths(const std::string& b, const std::string& label) {
  size_t pos = 8;
  while (pos + 8 <= b.size()) {
    const uint32_t len = (uint32_t(uint8_t(b[pos])) << 24) | (uint32_t(uint8_t(b[pos + 1])) << 16) |
                         (uint32_t(uint8_t(b[pos + 2])) << 8) | uint32_t(uint8_t(b[pos + 3]));
    std::string type = b.substr(pos + 4, 4);
    if (type == "IEND") return;
    for (char& c : type)
      if (!std::isalnum((unsigned char)c)) c = '?';
    const uint64_t left = b.size() - pos - 8;  // bytes after the length and type fields
    if ((uint64_t)len + 4 > left)
      fail(label, ": corrupt PNG (the file is truncated): chunk ", type, " at byte ", pos, " declares ", len,
           " bytes of data but the file has ", left < 4 ? 0 : left - 4, " left");
    pos += 12 + (size_t)len;
  }
}

// A JPEG is complete when an EOI marker follows the last start-of-scan marker.
bool jpeg_complete(const std::string& b) {
  size_t last_sos = std::string::npos;
  for (size_t i = 2; i + 1 < b.size(); ++i)
    if (uint8_t(b[i]) == 0xff && uint8_t(b[i + 1]) == 0xda) last_sos = i;
  if (last_sos == std::string::npos) return false;
  for (size_t i = last_sos + 2; i + 1 < b.size(); ++i)
    if (uint8_t(b[i]) == 0xff && uint8_t(b[i + 1]) == 0xd9) return true;
  return false;
}

void check_dims(uint64_t w, uint64_t h, const std::string& label, const char* fmt) {
  if (w == 0 || h == 0) fail(label, ": corrupt ", fmt, ": image has zero width or height");
  if (w > (uint64_t)kMaxSide || h > (uint64_t)kMaxSide || w * h > kMaxPixels)
    fail(label, ": ", fmt, " image is too large (", w, "x", h, "; the limit is ", kMaxPixels / 1000000,
         " megapixels): downscale it first");
}

// RGBA (non-premultiplied) → RGB composited on white.
Image from_rgba(const uint8_t* rgba, int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize((size_t)w * h * 3);
  const size_t n = (size_t)w * h;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t a = rgba[4 * i + 3];
    for (int c = 0; c < 3; ++c) {
      const uint32_t v = rgba[4 * i + c];
      img.rgb[3 * i + c] = (uint8_t)((v * a + 255u * (255u - a) + 127u) / 255u);
    }
  }
  return img;
}

Image decode_png(const std::string& bytes, const std::string& label) {
  check_png_chunk_lengths(bytes, label);
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&im, bytes.data(), bytes.size())) {
    std::string msg = im.message;
    png_image_free(&im);
    fail(label, ": corrupt PNG", png_reaches_iend(bytes) ? "" : " (the file is truncated)", ": ", msg);
  }
  try {
    check_dims(im.width, im.height, label, "PNG");
  } catch (...) {
    png_image_free(&im);
    throw;
  }
  // 16-bit files: libpng's simplified API takes 16-bit samples as *linear* light unless the file has a gAMA or sRGB
  // chunk, and re-encodes them to sRGB for 8-bit output — a ramp comes back brighter (a linear 0.5 becomes 188/255).
  // Nearly every 16-bit PNG in the wild (Pillow, ImageMagick, Photoshop exports, scanners) stores sRGB-encoded values
  // without saying so, as 8-bit files do, so read them as sRGB: the samples are scaled to 8 bits, not re-encoded.
  // A file that does carry gAMA / sRGB is still converted by what it says. (Flag only settable after begin_read.)
  im.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  im.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(im));
  if (!png_image_finish_read(&im, nullptr, rgba.data(), 0, nullptr)) {
    std::string msg = im.message;
    png_image_free(&im);
    fail(label, ": corrupt PNG", png_reaches_iend(bytes) ? "" : " (the file is truncated)", ": ", msg);
  }
  png_image_free(&im);
  return from_rgba(rgba.data(), (int)im.width, (int)im.height);
}

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the file is truncated";
    default: return "unknown error";
  }
}

Image decode_webp(const std::string& bytes, const std::string& label) {
  WebPBitstreamFeatures f;
  VP8StatusCode st = WebPGetFeatures(u8(bytes), bytes.size(), &f);
  if (st != VP8_STATUS_OK) fail(label, ": corrupt WebP: ", webp_status(st));
  if (f.has_animation) fail(label, ": animated WebP is not supported: export a single frame as PNG or WebP");
  check_dims((uint64_t)std::max(f.width, 0), (uint64_t)std::max(f.height, 0), label, "WebP");
  int w = 0, h = 0;
  uint8_t* rgba = WebPDecodeRGBA(u8(bytes), bytes.size(), &w, &h);
  if (!rgba) {
    // Tell truncation apart from other corruption.
    WebPDecoderConfig cfg;
    const char* why = "bitstream error";
    if (WebPInitDecoderConfig(&cfg)) {
      cfg.output.colorspace = MODE_RGBA;
      VP8StatusCode s2 = WebPDecode(u8(bytes), bytes.size(), &cfg);
      if (s2 != VP8_STATUS_OK) why = webp_status(s2);
      WebPFreeDecBuffer(&cfg.output);
    }
    fail(label, ": corrupt WebP: ", why);
  }
  if (w != f.width || h != f.height || w <= 0 || h <= 0) {
    WebPFree(rgba);
    fail(label, ": corrupt WebP: size changed while decoding");
  }
  Image img = from_rgba(rgba, w, h);
  WebPFree(rgba);
  return img;
}

Image decode_stb(const std::string& bytes, const std::string& label, Format fmt) {
  const char* name = fmt == Format::Jpeg ? "JPEG" : fmt == Format::Gif ? "GIF" : fmt == Format::Bmp ? "BMP" : "image";
  if (bytes.size() > (size_t)INT32_MAX) fail(label, ": file is too large to decode (", bytes.size(), " bytes)");
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(u8(bytes), (int)bytes.size(), &w, &h, &comp)) {
    if (fmt == Format::Other) {
      if (const char* u = unsupported_format(bytes))
        fail(label, ": unsupported image format (", u, "): convert it to PNG, JPEG or WebP");
      fail(label, ": not an image (unrecognised format; supported: PNG, JPEG, WebP, BMP, GIF, TGA, PSD, PNM, HDR)");
    }
    const char* why = stbi_failure_reason();
    bool trunc = fmt == Format::Jpeg ? !jpeg_complete(bytes) : false;
    fail(label, ": corrupt ", name, trunc ? " (the file is truncated)" : "", ": ", why ? why : "cannot read header");
  }
  check_dims((uint64_t)std::max(w, 0), (uint64_t)std::max(h, 0), label, name);
  if (fmt == Format::Jpeg && !jpeg_complete(bytes))
    fail(label, ": corrupt JPEG: the file is truncated (no end-of-image marker after the last scan)");
  int w2 = 0, h2 = 0, c2 = 0;
  uint8_t* rgba = stbi_load_from_memory(u8(bytes), (int)bytes.size(), &w2, &h2, &c2, 4);
  if (!rgba) {
    const char* why = stbi_failure_reason();
    fail(label, ": corrupt ", name, ": ", why ? why : "decode failed");
  }
  if (w2 != w || h2 != h) {
    stbi_image_free(rgba);
    fail(label, ": corrupt ", name, ": size changed while decoding");
  }
  Image img = from_rgba(rgba, w2, h2);
  stbi_image_free(rgba);
  return img;
}

std::string read_whole_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int e = errno;
    fail(path, ": cannot open: ", std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) fail(path, ": is a directory, not an image file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open for reading (permission denied?)");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return ss.str();
}

// ---- UTF-8 / Latin-1 helpers for PNG text ----

// Decodes one UTF-8 code point at s[i]; returns its length, or 0 when the sequence is invalid.
int utf8_next(const std::string& s, size_t i, uint32_t* cp) {
  const uint8_t c = uint8_t(s[i]);
  if (c < 0x80) { *cp = c; return 1; }
  int n;
  uint32_t v;
  if ((c & 0xe0) == 0xc0) { n = 2; v = c & 0x1f; }
  else if ((c & 0xf0) == 0xe0) { n = 3; v = c & 0x0f; }
  else if ((c & 0xf8) == 0xf0) { n = 4; v = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (int k = 1; k < n; ++k) {
    const uint8_t d = uint8_t(s[i + k]);
    if ((d & 0xc0) != 0x80) return 0;
    v = (v << 6) | (d & 0x3f);
  }
  if ((n == 2 && v < 0x80) || (n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) ||
      (v >= 0xd800 && v <= 0xdfff))
    return 0;
  *cp = v;
  return n;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n = utf8_next(s, i, &cp);
    if (!n) return false;
    i += n;
  }
  return true;
}

void put_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) out += char(cp);
  else if (cp < 0x800) { out += char(0xc0 | (cp >> 6)); out += char(0x80 | (cp & 0x3f)); }
  else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3f)); out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f)); out += char(0x80 | (cp & 0x3f));
  }
}

// Invalid sequences become U+FFFD.
std::string sanitize_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n = utf8_next(s, i, &cp);
    if (!n) { put_utf8(out, 0xfffd); ++i; continue; }
    out.append(s, i, n);
    i += n;
  }
  return out;
}

// UTF-8 → Latin-1; false when a code point is above U+00FF.
bool to_latin1(const std::string& utf8, std::string* out) {
  out->clear();
  for (size_t i = 0; i < utf8.size();) {
    uint32_t cp;
    int n = utf8_next(utf8, i, &cp);
    if (!n || cp > 0xff) return false;
    *out += char(cp);
    i += n;
  }
  return true;
}

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) put_utf8(out, c);
  return out;
}

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// tEXt/zTXt are Latin-1 by the PNG spec, but some writers put UTF-8 there. Valid UTF-8 holding
// non-ASCII is taken as UTF-8 (a Latin-1 string that is also valid UTF-8 is very unlikely).
std::string decode_latin1_text(const std::string& s) {
  if (is_ascii(s) || valid_utf8(s)) return s;
  return latin1_to_utf8(s);
}

// ---- libpng full API (text chunks): setjmp-based error handling kept in C-style functions
// whose frames hold no C++ objects with destructors. ----

struct PngCtx {
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  std::string* out = nullptr;  // encoder sink
  char err[256] = {0};
};

void png_error_cb(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngCtx*>(png_get_error_ptr(png));
  std::snprintf(ctx->err, sizeof ctx->err, "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}
void png_warning_cb(png_structp, png_const_charp) {}

void png_read_cb(png_structp png, png_bytep dst, size_t n) {
  auto* ctx = static_cast<PngCtx*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "unexpected end of file (the file is truncated)");
  std::memcpy(dst, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

void png_write_cb(png_structp png, png_bytep src, size_t n) {
  auto* ctx = static_cast<PngCtx*>(png_get_io_ptr(png));
  ctx->out->append(reinterpret_cast<const char*>(src), n);
}
void png_flush_cb(png_structp) {}

struct RawText {
  const char* key;
  const char* text;
  size_t len;
  bool latin1;
};
using TextSinkFn = void (*)(void* user, const RawText& t);

// Reads the whole PNG (pixels are decoded row by row into one scratch row and dropped) so that
// text chunks both before and after IDAT are seen. Returns false with ctx->err set on error.
bool png_read_text_c(PngCtx* ctx, TextSinkFn sink, void* user) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_cb, png_warning_cb);
  if (!png) {
    std::snprintf(ctx->err, sizeof ctx->err, "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx->err, sizeof ctx->err, "out of memory");
    return false;
  }
  png_bytep volatile row = nullptr;
  if (setjmp(png_jmpbuf(png))) {
    std::free(row);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, ctx, png_read_cb);
  png_set_user_limits(png, kMaxSide, kMaxSide);
  png_read_info(png, info);
  {
    const int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const png_uint_32 h = png_get_image_height(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    row = static_cast<png_bytep>(std::malloc(rowbytes ? rowbytes : 1));
    if (!row) png_error(png, "out of memory");
    for (int p = 0; p < passes; ++p)
      for (png_uint_32 y = 0; y < h; ++y) png_read_row(png, row, nullptr);
  }
  png_read_end(png, info);
  png_textp texts = nullptr;
  const int n = png_get_text(png, info, &texts, nullptr);
  for (int i = 0; i < n; ++i) {
    RawText t;
    t.key = texts[i].key ? texts[i].key : "";
    t.text = texts[i].text ? texts[i].text : "";
    const bool itxt = texts[i].compression == PNG_ITXT_COMPRESSION_NONE || texts[i].compression == PNG_ITXT_COMPRESSION_zTXt;
    t.len = itxt ? texts[i].itxt_length : texts[i].text_length;
    if (t.len == 0 && texts[i].text) t.len = std::strlen(texts[i].text);
    t.latin1 = !itxt;
    sink(user, t);
  }
  std::free(row);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

void text_sink(void* user, const RawText& t) {
  auto* out = static_cast<TextChunks*>(user);
  std::string key = decode_latin1_text(t.key);
  std::string text(t.text, t.len);
  out->emplace_back(std::move(key), t.latin1 ? decode_latin1_text(text) : text);
}

// Writes an 8-bit RGB PNG. `texts` are prepared png_text entries. false + ctx->err on error.
bool png_write_c(PngCtx* ctx, const Image* img, png_text* texts, int ntexts) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_cb, png_warning_cb);
  if (!png) {
    std::snprintf(ctx->err, sizeof ctx->err, "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(ctx->err, sizeof ctx->err, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, ctx, png_write_cb, png_flush_cb);
  png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (ntexts > 0) png_set_text(png, info, texts, ntexts);
  png_write_info(png, info);
  const size_t stride = (size_t)img->width * 3;
  for (int y = 0; y < img->height; ++y)
    png_write_row(png, const_cast<png_bytep>(img->rgb.data() + stride * (size_t)y));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

void check_image(const Image& img, const char* what) {
  if (img.width < 0 || img.height < 0 || (size_t)img.width * (size_t)img.height * 3 != img.rgb.size())
    fail(what, ": invalid image (", img.width, "x", img.height, " with ", img.rgb.size(), " bytes of RGB)");
}

// ---- resampling ----

// Output sample j of a 1-D resample takes sum_k w[k] * src[idx[k]] over taps [begin[j], begin[j+1]).
struct Taps {
  std::vector<int> begin, idx;
  std::vector<float> w;
};

// Maps dst pixels [0, dst) onto the source interval [off, off + span) of a line of `src` pixels.
// Shrinking (span/dst >= 1): exact area average (box filter with fractional coverage).
// Growing: bilinear with half-pixel centres, edges clamped.
Taps make_taps(int src, int dst, double off, double span) {
  Taps t;
  t.begin.reserve(dst + 1);
  const double scale = span / dst;
  for (int j = 0; j < dst; ++j) {
    t.begin.push_back((int)t.idx.size());
    if (scale >= 1.0) {
      const double a = off + j * scale, b = off + (j + 1) * scale;
      int i0 = std::max(0, (int)std::floor(a)), i1 = std::min(src - 1, (int)std::ceil(b) - 1);
      double total = 0;
      const size_t first = t.idx.size();
      for (int i = i0; i <= i1; ++i) {
        const double cov = std::min(b, (double)i + 1) - std::max(a, (double)i);
        if (cov <= 0) continue;
        t.idx.push_back(i);
        t.w.push_back((float)cov);
        total += cov;
      }
      if (total <= 0) {  // numerically degenerate window: nearest pixel
        t.idx.push_back(std::clamp((int)std::floor((a + b) / 2), 0, src - 1));
        t.w.push_back(1.f);
      } else {
        for (size_t k = first; k < t.w.size(); ++k) t.w[k] = (float)(t.w[k] / total);
      }
    } else {
      const double c = off + (j + 0.5) * scale - 0.5;
      const int i0 = (int)std::floor(c);
      const float f = (float)(c - i0);
      const int a = std::clamp(i0, 0, src - 1), b = std::clamp(i0 + 1, 0, src - 1);
      t.idx.push_back(a);
      t.w.push_back(1.f - f);
      t.idx.push_back(b);
      t.w.push_back(f);
    }
  }
  t.begin.push_back((int)t.idx.size());
  return t;
}

uint8_t to_u8(float v) {
  if (!(v > 0.f)) return 0;  // also NaN
  if (v >= 255.f) return 255;
  return (uint8_t)std::lround(v);
}

// Resample the source window [ox, ox+sw) × [oy, oy+sh) to w × h.
Image resample(const Image& img, int w, int h, double ox, double oy, double sw, double sh) {
  const Taps tx = make_taps(img.width, w, ox, sw), ty = make_taps(img.height, h, oy, sh);
  // Only the source rows the vertical taps touch are filtered horizontally.
  int ymin = img.height, ymax = -1;
  for (int i : ty.idx) { ymin = std::min(ymin, i); ymax = std::max(ymax, i); }
  const int rows = ymax - ymin + 1;
  std::vector<float> tmp((size_t)rows * w * 3);
  for (int y = ymin; y <= ymax; ++y) {
    const uint8_t* src = img.rgb.data() + (size_t)y * img.width * 3;
    float* dst = tmp.data() + (size_t)(y - ymin) * w * 3;
    for (int j = 0; j < w; ++j) {
      float r = 0, g = 0, b = 0;
      for (int k = tx.begin[j]; k < tx.begin[j + 1]; ++k) {
        const uint8_t* p = src + (size_t)tx.idx[k] * 3;
        const float wk = tx.w[k];
        r += wk * p[0]; g += wk * p[1]; b += wk * p[2];
      }
      dst[3 * j] = r; dst[3 * j + 1] = g; dst[3 * j + 2] = b;
    }
  }
  Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize((size_t)w * h * 3);
  std::vector<float> acc((size_t)w * 3);
  for (int i = 0; i < h; ++i) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int k = ty.begin[i]; k < ty.begin[i + 1]; ++k) {
      const float* src = tmp.data() + (size_t)(ty.idx[k] - ymin) * w * 3;
      const float wk = ty.w[k];
      for (size_t q = 0; q < acc.size(); ++q) acc[q] += wk * src[q];
    }
    uint8_t* dst = out.rgb.data() + (size_t)i * w * 3;
    for (size_t q = 0; q < acc.size(); ++q) dst[q] = to_u8(acc[q]);
  }
  return out;
}

}  // namespace

// ---- decode ----

Image decode_image(const std::string& bytes, const std::string& label) {
  if (bytes.empty()) fail(label, ": not an image (the file is empty)");
  switch (sniff(bytes)) {
    case Format::Png: return decode_png(bytes, label);
    case Format::WebP: return decode_webp(bytes, label);
    case Format::Jpeg: return decode_stb(bytes, label, Format::Jpeg);
    case Format::Gif: return decode_stb(bytes, label, Format::Gif);
    case Format::Bmp: return decode_stb(bytes, label, Format::Bmp);
    case Format::Other: break;
  }
  if (const char* u = unsupported_format(bytes))
    fail(label, ": unsupported image format (", u, "): convert it to PNG, JPEG or WebP");
  if (bytes.size() < 8) fail(label, ": not an image (only ", bytes.size(), " bytes)");
  return decode_stb(bytes, label, Format::Other);  // TGA, PSD, PNM, HDR: stb knows them
}

Image load_image(const std::string& path) { return decode_image(read_whole_file(path), path); }

// ---- PNG encode / text ----

std::string encode_png(const Image& img, const TextChunks& text) {
  check_image(img, "encode_png");
  if (img.empty()) fail("encode_png: cannot write an empty image (", img.width, "x", img.height, ")");
  if (img.width > 1000000 || img.height > 1000000) fail("encode_png: image too large for PNG");

  // Keep the converted strings alive while libpng holds pointers into them.
  std::vector<std::string> keys, values;
  std::vector<int> kinds;
  keys.reserve(text.size());
  values.reserve(text.size());
  for (const auto& [k, v] : text) {
    std::string key;
    if (k.empty() || !to_latin1(k, &key) || key.size() > 79)
      fail("PNG text keyword \"", k, "\" is invalid: it must be 1-79 Latin-1 characters");
    for (unsigned char c : key)
      if (c < 0x20 || (c > 0x7e && c < 0xa1))
        fail("PNG text keyword \"", k, "\" is invalid: it must be printable Latin-1");
    std::string clean = sanitize_utf8(v), latin;
    // tEXt when the text is Latin-1 and reads back unambiguously; otherwise UTF-8 iTXt.
    const bool use_text = to_latin1(clean, &latin) && (is_ascii(latin) || !valid_utf8(latin));
    keys.push_back(std::move(key));
    values.push_back(use_text ? std::move(latin) : std::move(clean));
    kinds.push_back(use_text ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE);
  }
  std::vector<png_text> pts(text.size());
  static char empty[1] = {0};
  for (size_t i = 0; i < pts.size(); ++i) {
    std::memset(&pts[i], 0, sizeof(png_text));
    pts[i].compression = kinds[i];
    pts[i].key = keys[i].data();
    pts[i].text = values[i].data();
    if (kinds[i] == PNG_TEXT_COMPRESSION_NONE) pts[i].text_length = values[i].size();
    else {
      pts[i].itxt_length = values[i].size();
      pts[i].lang = empty;
      pts[i].lang_key = empty;
    }
  }
  std::string out;
  out.reserve((size_t)img.width * img.height * 3 / 2 + 1024);
  PngCtx ctx;
  ctx.out = &out;
  if (!png_write_c(&ctx, &img, pts.data(), (int)pts.size())) fail("PNG encode failed: ", ctx.err);
  return out;
}

void save_png(const std::string& path, const Image& img, const TextChunks& text) {
  write_file_atomic(path, encode_png(img, text));
}

TextChunks read_png_text_bytes(const std::string& bytes, const std::string& label) {
  if (sniff(bytes) != Format::Png) fail(label, ": not a PNG file (no PNG signature)");
  check_png_chunk_lengths(bytes, label);
  PngCtx ctx;
  ctx.data = u8(bytes);
  ctx.size = bytes.size();
  TextChunks out;
  if (!png_read_text_c(&ctx, text_sink, &out))
    fail(label, ": corrupt PNG", png_reaches_iend(bytes) ? "" : " (the file is truncated)", ": ", ctx.err);
  return out;
}

TextChunks read_png_text(const std::string& path) { return read_png_text_bytes(read_whole_file(path), path); }

// ---- resize ----

Image resize(const Image& img, int w, int h) {
  check_image(img, "resize");
  if (img.empty()) fail("resize: the source image is empty");
  if (w <= 0 || h <= 0) fail("resize: target size ", w, "x", h, " must be positive");
  if (w == img.width && h == img.height) return img;
  return resample(img, w, h, 0, 0, img.width, img.height);
}

Image resize_cover_crop(const Image& img, int w, int h, float crop_x, float crop_y) {
  check_image(img, "resize_cover_crop");
  if (img.empty()) fail("resize_cover_crop: the source image is empty");
  if (w <= 0 || h <= 0) fail("resize_cover_crop: target size ", w, "x", h, " must be positive");
  if (!(crop_x >= 0.f)) crop_x = 0.f;  // NaN → 0
  if (!(crop_y >= 0.f)) crop_y = 0.f;
  crop_x = std::min(crop_x, 1.f);
  crop_y = std::min(crop_y, 1.f);
  // Scale so the image covers w×h; the window of the source that lands in the output is
  // (w/scale) × (h/scale), positioned by crop_x/crop_y in the leftover margin.
  const double scale = std::max((double)w / img.width, (double)h / img.height);
  const double sw = std::min((double)img.width, w / scale), sh = std::min((double)img.height, h / scale);
  const double ox = (img.width - sw) * crop_x, oy = (img.height - sh) * crop_y;
  if (w == img.width && h == img.height) return img;
  return resample(img, w, h, ox, oy, sw, sh);
}

// ---- tensors ----

void image_to_chw(const Image& img, float* out) {
  check_image(img, "image_to_chw");
  const size_t hw = (size_t)img.width * img.height;
  for (size_t i = 0; i < hw; ++i)
    for (int c = 0; c < 3; ++c) out[c * hw + i] = img.rgb[3 * i + c] * (2.f / 255.f) - 1.f;
}

Image chw_to_image(const float* chw, int height, int width) {
  if (height <= 0 || width <= 0) fail("chw_to_image: size ", width, "x", height, " must be positive");
  Image img;
  img.width = width;
  img.height = height;
  const size_t hw = (size_t)width * height;
  img.rgb.resize(hw * 3);
  for (size_t i = 0; i < hw; ++i)
    for (int c = 0; c < 3; ++c) img.rgb[3 * i + c] = to_u8((chw[c * hw + i] + 1.f) * 127.5f);
  return img;
}

// ---- grid ----

Image make_grid(const std::vector<Image>& images, int columns, int pad) {
  if (images.empty()) return Image{};
  pad = std::max(pad, 0);
  const int n = (int)images.size();
  if (columns <= 0) columns = (int)std::ceil(std::sqrt((double)n));
  columns = std::min(columns, n);
  const int rows = (n + columns - 1) / columns;
  int cw = 0, ch = 0;
  for (const auto& im : images) {
    check_image(im, "make_grid");
    cw = std::max(cw, im.width);
    ch = std::max(ch, im.height);
  }
  Image g;
  g.width = columns * cw + (columns + 1) * pad;
  g.height = rows * ch + (rows + 1) * pad;
  if (g.width <= 0 || g.height <= 0) return Image{};
  g.rgb.assign((size_t)g.width * g.height * 3, 48);  // dark grey separators
  for (int k = 0; k < n; ++k) {
    const Image& im = images[k];
    const int cx = pad + (k % columns) * (cw + pad) + (cw - im.width) / 2;
    const int cy = pad + (k / columns) * (ch + pad) + (ch - im.height) / 2;
    for (int y = 0; y < im.height; ++y)
      std::memcpy(g.rgb.data() + ((size_t)(cy + y) * g.width + cx) * 3, im.rgb.data() + (size_t)y * im.width * 3,
                  (size_t)im.width * 3);
  }
  return g;
}

}  // namespace oboro
