#include "merge/merge_math.h"
#include "core/error.h"
#include "lora/lora_keys.h"
#include <cmath>

namespace oboro::merge {

Mode parse_mode(const std::string& s) {
  if (s == "weighted-sum" || s == "weighted_sum") return Mode::WeightedSum;
  if (s == "add-difference" || s == "add_difference") return Mode::AddDifference;
  if (s == "triple-sum" || s == "triple_sum") return Mode::TripleSum;
  if (s == "no-interpolation" || s == "none") return Mode::NoInterpolation;
  if (s == "extract-lora" || s == "extract_lora") return Mode::ExtractLora;
  fail("--mode ", s, ": unknown; use weighted-sum, add-difference, triple-sum, no-interpolation or extract-lora");
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::WeightedSum: return "weighted-sum";
    case Mode::AddDifference: return "add-difference";
    case Mode::TripleSum: return "triple-sum";
    case Mode::NoInterpolation: return "no-interpolation";
    case Mode::ExtractLora: return "extract-lora";
  }
  return "?";
}

int mode_inputs(Mode m) {
  switch (m) {
    case Mode::WeightedSum: return 2;
    case Mode::AddDifference: return 3;
    case Mode::TripleSum: return 3;
    case Mode::NoInterpolation: return 1;
    case Mode::ExtractLora: return 2;
  }
  return 0;
}

void combine(Mode mode, const float* a, const float* b, const float* c, double m, double n, float* out, size_t count) {
  switch (mode) {
    case Mode::WeightedSum:
      for (size_t i = 0; i < count; ++i) out[i] = (float)((double)a[i] + m * ((double)b[i] - (double)a[i]));
      return;
    case Mode::AddDifference:
      for (size_t i = 0; i < count; ++i) out[i] = (float)((double)a[i] + m * ((double)b[i] - (double)c[i]));
      return;
    case Mode::TripleSum:
      for (size_t i = 0; i < count; ++i)
        out[i] = (float)((double)a[i] + m * ((double)b[i] - (double)a[i]) + n * ((double)c[i] - (double)a[i]));
      return;
    case Mode::NoInterpolation:
      for (size_t i = 0; i < count; ++i) out[i] = a[i];
      return;
    case Mode::ExtractLora: fail("internal error: combine() for extract-lora");
  }
}

BlockWeights::BlockWeights(const std::string& spec, int blocks) : spec_(spec), set_(blocks, 0), block_(blocks, 0) {
  size_t s = 0;
  while (s <= spec.size()) {
    size_t e = spec.find(',', s);
    if (e == std::string::npos) e = spec.size();
    std::string item = spec.substr(s, e - s);
    s = e + 1;
    if (item.find_first_not_of(" ") == std::string::npos) {
      if (e == spec.size()) break;
      continue;
    }
    const size_t eq = item.find('=');
    auto bad = [&](const std::string& why) {
      std::string shown = item;  // one line: control characters (a newline pasted into the option) as '?'
      for (char& c : shown)
        if ((unsigned char)c < 0x20 || c == 0x7f) c = '?';
      if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
      fail("--block-weights: '", shown, "' ", why, ": write GROUP=WEIGHT entries separated by commas, GROUP one of "
           "embedders, final, blocks, NN or NN-MM (blocks 00 to ", blocks - 1, ")");
    };
    if (eq == std::string::npos) bad("has no '='");
    std::string g = item.substr(0, eq);
    while (!g.empty() && g.front() == ' ') g.erase(g.begin());
    while (!g.empty() && g.back() == ' ') g.pop_back();
    double w;
    try {
      size_t pos;
      w = std::stod(item.substr(eq + 1), &pos);
      if (item.find_first_not_of(' ', eq + 1 + pos) != std::string::npos || !std::isfinite(w)) bad("has a bad weight");
    } catch (const std::exception&) {
      bad("has a bad weight");
    }
    if (g == "embedders") has_emb_ = true, emb_ = w;
    else if (g == "final") has_final_ = true, final_ = w;
    else {
      int lo = 0, hi = blocks - 1;
      if (g != "blocks") {
        const size_t d = g.find('-');
        try {
          size_t p1, p2 = 0;
          lo = std::stoi(g.substr(0, d), &p1);
          hi = d == std::string::npos ? lo : std::stoi(g.substr(d + 1), &p2);
          if (p1 != (d == std::string::npos ? g.size() : d)) bad("is not a group");
        } catch (const std::exception&) {
          bad("is not a group");
        }
        if (lo < 0 || hi >= blocks || lo > hi) bad("names blocks the model does not have");
      }
      for (int i = lo; i <= hi; ++i) set_[i] = 1, block_[i] = w;
    }
  }
}

double BlockWeights::multiplier(const std::string& tensor, double base) const {
  if (spec_.empty()) return base;
  const lora::TensorPlace p = lora::place_of(tensor);
  if (p.family == lora::Family::Embedder) return has_emb_ ? emb_ : base;
  if (p.family == lora::Family::Final) return has_final_ ? final_ : base;
  if (p.block >= 0 && p.block < (int)set_.size() && set_[p.block]) return block_[p.block];
  return base;
}

}  // namespace oboro::merge
