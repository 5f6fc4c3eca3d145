// Inpainting with a non-inpainting model (A1111's "Masked content: original", "Inpaint area: Whole picture"): the
// mask image becomes (1) a latent mask the sampler repaints (flow/sampler.h re-imposes the noised original
// elsewhere at every step) and (2) a pixel overlay with which the decoded image is composited over the original,
// so pixels outside the blurred mask are the original's bits.
#pragma once
#include "io/image.h"
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct InpaintMask {
  int W = 0, H = 0;             // pixel size (the init image's, after its resize)
  std::vector<float> overlay;   // (H, W) in [0, 1]: weight of the generated pixel in the composite (0 = original)
  std::vector<float> latent;    // (H/stride, W/stride) 0 or 1: 1 = the sampler repaints this latent pixel
  std::string note;             // non-empty when the mask had to be resized to another aspect (printed as a warning)
};

// A1111's steps, in its order: binary mask (luminance > 128 = repaint: `create_binary_mask`), inverted with
// `invert`, Gaussian blur of `blur` px (sigma = blur, kernel 2·⌊2.5·blur + 0.5⌋ + 1, reflect-101 border, 8-bit
// after each pass, as cv2.GaussianBlur), resized to W×H the way the init image was (cover + centre crop); the
// overlay is min(1, 2·mask) (A1111's mask_for_overlay), the latent mask is the W×H mask area-averaged to the latent
// grid and rounded (half to even, np.around). `label` names the mask in errors. blur must be in [0, 64].
InpaintMask make_inpaint_mask(const Image& mask, int W, int H, int stride, int blur, bool invert,
                              const std::string& label);

// out = round(generated·a + original·(1 − a)) per channel, a = overlay; where a == 0 the original's bytes exactly.
Image composite_inpaint(const Image& generated, const Image& original, const std::vector<float>& overlay);

// The 8-bit separable Gaussian blur above, on a (h, w) single-channel image (exposed for tests).
std::vector<uint8_t> gaussian_blur_u8(const std::vector<uint8_t>& m, int w, int h, int sigma);

}  // namespace oboro
