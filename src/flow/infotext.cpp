#include "flow/infotext.h"
#include "core/error.h"
#include "core/utf8.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace oboro {

std::string py_float(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string((long long)v);
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {  // shortest representation that round-trips
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  auto e = s.find('e');
  if (e != std::string::npos) {  // Python prints 1e-4 as 0.0001 and switches to exponent below 1e-4
    double a = std::fabs(v);
    if (a >= 1e-4 && a < 1e16) {
      std::snprintf(buf, sizeof buf, "%.17f", v);
      s = buf;
      while (s.back() == '0') s.pop_back();
      // trim to the shortest round-tripping digits
      for (size_t len = s.find('.') + 2; len <= s.size(); ++len)
        if (std::strtod(s.substr(0, len).c_str(), nullptr) == v) { s = s.substr(0, len); break; }
    }
  }
  return s;
}

std::string py_float32(float v) {
  char buf[64];
  for (int prec = 1; prec <= 9; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
    if (std::strtof(buf, nullptr) == v) return py_float(std::strtod(buf, nullptr));
  }
  return py_float(v);
}

static std::string quote_if_needed(const std::string& v) {
  if (v.find_first_of(",:\n") == std::string::npos) return v;
  // Invalid UTF-8 (a value read from a hostile PNG, a non-UTF-8 file name) becomes U+FFFD, as the PNG
  // writer does, instead of the JSON library's exception.
  return nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string format_infotext(const std::string& prompt, const std::string& negative,
                            const std::vector<std::pair<std::string, std::string>>& params) {
  std::string s = prompt;
  if (!negative.empty()) s += "\nNegative prompt: " + negative;
  s += "\n";
  for (size_t i = 0; i < params.size(); ++i) s += (i ? ", " : "") + params[i].first + ": " + quote_if_needed(params[i].second);
  return s;
}

Infotext parse_infotext(const std::string& text) {
  Infotext r;
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  if (lines.empty()) return r;
  std::string last = lines.back();
  bool has_params = last.find("Steps: ") != std::string::npos || last.find(": ") != std::string::npos;
  size_t n = has_params && lines.size() > 1 ? lines.size() - 1 : lines.size();
  bool in_neg = false;
  for (size_t i = 0; i < n; ++i) {
    const std::string& l = lines[i];
    if (l.rfind("Negative prompt: ", 0) == 0) { in_neg = true; r.negative = l.substr(17); continue; }
    std::string& dst = in_neg ? r.negative : r.prompt;
    dst += (dst.empty() ? "" : "\n") + l;
  }
  if (has_params && lines.size() > 1) {
    // key: value pairs; values may be JSON strings containing ", "
    size_t i = 0;
    while (i < last.size()) {
      size_t colon = last.find(": ", i);
      if (colon == std::string::npos) break;
      std::string key = last.substr(i, colon - i);
      size_t v0 = colon + 2, end;
      std::string val;
      if (v0 < last.size() && last[v0] == '"') {
        end = v0 + 1;
        while (end < last.size() && last[end] != '"') end += last[end] == '\\' ? 2 : 1;
        end = std::min(end + 1, last.size());  // an unterminated quote (or a final backslash) runs to the end
        try { val = nlohmann::json::parse(last.substr(v0, end - v0)).get<std::string>(); } catch (...) { val = last.substr(v0, end - v0); }
      } else {
        end = last.find(", ", v0);
        if (end == std::string::npos) end = last.size();
        val = last.substr(v0, end - v0);
      }
      r.params.emplace_back(key, val);
      i = end;
      if (last.compare(i, 2, ", ") == 0) i += 2;
    }
  }
  return r;
}

PromptLine parse_prompt_line(const std::string& line) {
  check_utf8(line, "prompt line");  // here, where a prompt file enters: not after the images are made
  PromptLine p;
  std::string rest = line;
  size_t pos = rest.find(" --");
  p.prompt = rest.substr(0, pos);
  while (pos != std::string::npos) {
    size_t next = rest.find(" --", pos + 3);
    std::string opt = rest.substr(pos + 3, next == std::string::npos ? std::string::npos : next - pos - 3);
    if (opt.empty()) { pos = next; continue; }
    char f = opt[0];
    std::string val = opt.size() > 2 ? opt.substr(2) : "";
    // Whole numbers in range for --w --h --s --d, a finite number for --l: "--s 2.5" or "--l nan" is refused, never
    // truncated or passed on (the ranges are generate's: flow/request_check.h).
    while (!val.empty() && std::isspace((unsigned char)val.back())) val.pop_back();
    auto whole = [&](long long lo, long long hi, const char* what) {
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(val.c_str(), &end, 10);
      if (val.empty() || *end != '\0' || errno || v < lo || v > hi)
        fail("--", f, " (", what, ") must be a whole number in [", lo, ", ", hi, "], got '", val,
             "' in sample prompt line: ", line);
      return v;
    };
    switch (f) {
      case 'n': p.negative = val; break;
      case 'w': p.width = (int)whole(1, 16384, "width"); break;
      case 'h': p.height = (int)whole(1, 16384, "height"); break;
      case 'd': p.seed = whole(-1, 4294967295LL, "seed, -1 = random"); break;
      case 's': p.steps = (int)whole(1, 1000, "steps"); break;
      case 'l': {
        char* end = nullptr;
        const double v = std::strtod(val.c_str(), &end);
        if (val.empty() || *end != '\0' || !std::isfinite(v) || v < 0 || v > 100)
          fail("--l (CFG scale) must be a finite number in [0, 100], got '", val, "' in sample prompt line: ", line);
        p.cfg = (float)v;
        break;
      }
      default: fail("unknown flag --", f, " in sample prompt line: ", line, " (known: --n --w --h --d --s --l)");
    }
    pos = next;
  }
  while (!p.prompt.empty() && std::isspace((unsigned char)p.prompt.back())) p.prompt.pop_back();
  return p;
}

}  // namespace oboro
