// Resizing for the refine ("hires fix") pass: latents (bilinear or nearest, as A1111's "Latent" upscalers, i.e.
// PyTorch F.interpolate with align_corners=False) and decoded images (Lanczos-3, separable, as PIL).
#pragma once

namespace oboro {

enum class ResizeFilter { Nearest, Bilinear, Lanczos };

// in (C, h, w) → out (C, h2, w2), planar float. Nearest: source index floor(dst·h/h2); bilinear: source
// coordinate (dst + 0.5)·h/h2 − 0.5, edges clamped; Lanczos-3: the kernel widened by the scale when shrinking,
// weights normalised per output pixel.
void resize_planes(const float* in, int C, int h, int w, float* out, int h2, int w2, ResizeFilter f);

}  // namespace oboro
