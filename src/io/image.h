// Images: decode (PNG, JPEG, WebP, BMP...), resize + crop, PNG encode with text chunks
// (A1111 `parameters` infotext and our request JSON), conversion to/from [-1,1] tensors.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace oboro {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height·width·3, row-major, interleaved RGB (alpha composited on white)
  bool empty() const { return width == 0 || height == 0; }
};

using TextChunks = std::vector<std::pair<std::string, std::string>>;  // (keyword, text)

// Throws oboro::Error naming the file and the problem (unreadable, corrupt, truncated, unsupported
// format). The format comes from magic bytes (PNG via libpng, WebP via libwebp, JPEG/BMP/GIF first
// frame/TGA/PSD/PNM/HDR via stb_image); images over 8192×8192 pixels are refused before decoding.
Image load_image(const std::string& path);
Image decode_image(const std::string& bytes, const std::string& label);
// Atomic PNG write (temp + fsync + rename); text chunks as tEXt (Latin-1) or iTXt (UTF-8) as needed.
void save_png(const std::string& path, const Image& img, const TextChunks& text = {});
std::string encode_png(const Image& img, const TextChunks& text = {});
// Text chunks of a PNG (tEXt, zTXt and iTXt), in file order.
TextChunks read_png_text(const std::string& path);
TextChunks read_png_text_bytes(const std::string& bytes, const std::string& label);

// Resize so the image covers w×h (area-averaging when shrinking, bilinear when growing), then crop
// to w×h. crop_x/crop_y in [0,1] pick the crop window (0.5 = centre).
Image resize_cover_crop(const Image& img, int w, int h, float crop_x = 0.5f, float crop_y = 0.5f);
Image resize(const Image& img, int w, int h);

// RGB8 → (3, H, W) float in [-1, 1]; and back ((x+1)/2, clamped, rounded).
void image_to_chw(const Image& img, float* out);
Image chw_to_image(const float* chw, int height, int width);

// Tile images into a grid (for sample sheets and the gallery).
Image make_grid(const std::vector<Image>& images, int columns, int pad = 2);

}  // namespace oboro
