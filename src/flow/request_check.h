// Validation of a GenerateRequest where it enters generate(): every number finite and in its range, sizes that
// make sense, text that is UTF-8 — before a model is opened, so a bad value never becomes a black image with exit 0
// or an error after the work is done. The ranges are listed in docs/reliability.md ("User-input validation").
#pragma once
#include "flow/generate.h"

namespace oboro {

// The documented ranges (docs/conventions.md "Seeds", docs/reliability.md).
constexpr int kMaxImageSide = 16384;      // width, height, --hr-resize-x/y (pixels)
constexpr int kMaxSteps = 1000;           // --steps, --hr-steps
constexpr float kMaxCfgScale = 100.f;     // --cfg-scale in [0, 100] (A1111's API range)
constexpr float kMaxHrScale = 8.f;        // --hr-scale in (0, 8]
constexpr long long kMaxSeed = 4294967295LL;  // seeds are -1 (random) or 0 … 2^32 − 1 (A1111's range)
constexpr int kMaxBatch = 256, kMaxNIter = 100000;

// Fails with one line naming the option and its valid range (CLI spelling, e.g. "--cfg-scale").
void check_request(const GenerateRequest& rq);

// "WxH" (e.g. "64x64") → width, height; each 1 … kMaxImageSide. Fails naming `what` and the accepted form for
// anything else ("0x0", "-64x64", "32x32x32", "64x", "64 x 64x").
void parse_size(const std::string& text, const std::string& what, int& width, int& height);

}  // namespace oboro
