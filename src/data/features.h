// Image embeddings for deduplication, behind a pluggable extractor seam.
//
// The built-in extractor, `dct-colour`, needs no weights: the image is area-averaged to a 32×32
// Y/Cb/Cr thumbnail (aspect ignored, as in pHash) and described by four parts, each unit-normalised
// with a floor (so a part with almost no energy stays small instead of becoming noise) and weighted:
//   structure     the 63 lowest AC coefficients of Y (8×8 DCT without DC), (u, v) weighted by
//                 sqrt(1+u+v)                                                        (weight² 28%)
//   colour layout the 4×4 lowest AC coefficients of Cb and Cr (30)                    (22%)
//   global colour the DCs: mean brightness centred on mid-grey, mean Cb, mean Cr (3)  (10%)
//   edges         histograms of oriented gradients of Y, 4×4 cells × 8 orientations, bilinear in
//                 space and angle (a slight crop moves weight between neighbours), centred (128) (40%)
// 224 floats, L2-normalised: the cosine is the weighted mean of the parts' cosines, so images with
// the same layout but another palette, the same palette but other content, or the same background
// with other objects on it stay apart.
//
// A real image encoder (CLIP, DINOv2, SigLIP ...) plugs in by implementing FeatureExtractor and
// registering a factory; its id() (name + weights hash) is stored with every embedding, so
// embeddings from different extractors are never mixed.
#pragma once
#include "io/image.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;
  // Identity stored with each embedding: name, version and (for learned encoders) a weights hash.
  virtual std::string id() const = 0;
  virtual int dim() const = 0;
  // Writes dim() floats, L2-normalised (cosine similarity = dot product). Must be thread-safe.
  virtual void extract(const Image& img, float* out) const = 0;
};

using ExtractorFactory = std::function<std::unique_ptr<FeatureExtractor>(const std::string& arg)>;
// `spec` is "name" or "name:arg" (e.g. a weights file). Unknown names fail listing the known ones.
std::unique_ptr<FeatureExtractor> make_extractor(const std::string& spec);
void register_extractor(const std::string& name, ExtractorFactory factory);
std::vector<std::string> extractor_names();

// The built-in weight-free extractor (see the file comment).
class DctColourExtractor : public FeatureExtractor {
 public:
  static constexpr int kCells = 4, kBins = 8;
  static constexpr int kDim = 96 + kCells * kCells * kBins;  // 224
  std::string id() const override { return "dct-colour-v3"; }
  int dim() const override { return kDim; }
  void extract(const Image& img, float* out) const override;
};

// Area-averaged resample of an RGB8 image into three float planes Y, Cb, Cr in [0,1] (Cb/Cr centred
// on 0), each n×n. Exposed for tests.
void thumbnail_ycbcr(const Image& img, int n, float* y, float* cb, float* cr);

// Embedding storage: IEEE half precision (2 bytes per value).
std::string pack_f16(const float* v, int n);
bool unpack_f16(const void* bytes, size_t nbytes, int n, float* out);  // false when the size is wrong

float dot(const float* a, const float* b, int n);

}  // namespace oboro
