#include "flow/request_check.h"
#include "core/error.h"
#include "core/utf8.h"
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace oboro {

namespace {

void check_real(float v, float lo, float hi, const char* what, const char* meaning = "") {
  if (!std::isfinite(v) || v < lo || v > hi) fail(what, " must be a finite number in [", lo, ", ", hi, "]", meaning, ", got ", v);
}
void check_int(long long v, long long lo, long long hi, const char* what, const char* meaning = "") {
  if (v < lo || v > hi) fail(what, " must be in [", lo, ", ", hi, "]", meaning, ", got ", v);
}

}  // namespace

void check_request(const GenerateRequest& rq) {
  check_utf8(rq.prompt, "prompt");
  check_utf8(rq.negative_prompt, "negative prompt");
  check_int(rq.steps, 1, kMaxSteps, "--steps");
  check_real(rq.cfg_scale, 0.f, kMaxCfgScale, "--cfg-scale", " (1 = no guidance)");
  if (rq.seed != -1) check_int(rq.seed, 0, kMaxSeed, "--seed", " or -1 (random)");
  check_int(rq.batch_size, 1, kMaxBatch, "--batch-size");
  check_int(rq.n_iter, 1, kMaxNIter, "--n-iter");
  check_int(rq.width, 0, kMaxImageSide, "--width", " (0 = the default size)");
  check_int(rq.height, 0, kMaxImageSide, "--height", " (0 = the default size)");
  if ((rq.width == 0) != (rq.height == 0))
    fail("give both width and height (--size WxH), or neither; got ", rq.width, "x", rq.height);
  check_real(rq.strength, 0.f, 1.f, "--strength", " (0 keeps the init image, 1 ignores it)");
  check_real(rq.hr_scale, 0.f, kMaxHrScale, "--hr-scale", " (0 = no refine pass)");
  check_int(rq.hr_resize_x, 0, kMaxImageSide, "--hr-resize-x", " (0 = from --hr-resize-y or --hr-scale)");
  check_int(rq.hr_resize_y, 0, kMaxImageSide, "--hr-resize-y", " (0 = from --hr-resize-x or --hr-scale)");
  check_int(rq.hr_steps, 0, kMaxSteps, "--hr-steps", " (0 = --steps)");
  check_real(rq.hr_strength, 0.f, 1.f, "--hr-strength");
  check_int(rq.vae_tile, 8, 4096, "--vae-tile", " latent pixels");
}

void parse_size(const std::string& text, const std::string& what, int& width, int& height) {
  auto bad = [&] {
    fail(what, " must be WxH with W and H whole numbers from 1 to ", kMaxImageSide, " (e.g. 64x64), got '", text, "'");
  };
  const size_t x = text.find_first_of("xX");
  if (x == std::string::npos || x == 0 || x + 1 >= text.size()) bad();
  auto side = [&](const std::string& s) {
    for (char c : s)
      if (c < '0' || c > '9') bad();  // no sign, no space, no second 'x', no fraction
    if (s.size() > 6) bad();
    const long v = std::strtol(s.c_str(), nullptr, 10);
    if (v < 1 || v > kMaxImageSide) bad();
    return (int)v;
  };
  width = side(text.substr(0, x));
  height = side(text.substr(x + 1));
}

}  // namespace oboro
