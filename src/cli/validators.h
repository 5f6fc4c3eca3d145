// Range checks for numeric command-line options, applied to the text before CLI11 converts it: an integer option
// takes only a whole number (no "2.5", no "1e3") within its range; a real option only a finite number within its
// range (CLI::Range lets NaN through: every comparison with NaN is false). The error names the option, CLI11 adds
// "--opt: " in front: "--cfg-scale: must be a finite number in [0, 100], got 'nan'".
#pragma once
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>

namespace oboro::cli {

inline std::string num_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// A whole number in [lo, hi].
inline CLI::Validator int_in(long long lo, long long hi, const std::string& note = "") {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]" + note;
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        const char* p = s.c_str();
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(p, &end, 10);
        const bool whole = end != p && *end == '\0' && errno == 0 && s.find_first_of(" \t") == std::string::npos;
        if (!whole || v < lo || v > hi) return "must be a whole number in " + range + ", got '" + s + "'";
        return "";
      },
      "INT in " + range);
}

// A finite number in [lo, hi]; `open_lo` makes the lower bound exclusive: (lo, hi].
inline CLI::Validator real_in(double lo, double hi, bool open_lo = false, const std::string& note = "") {
  const std::string range = (open_lo ? "(" : "[") + num_text(lo) + ", " + num_text(hi) + "]" + note;
  return CLI::Validator(
      [lo, hi, open_lo, range](std::string& s) -> std::string {
        const char* p = s.c_str();
        char* end = nullptr;
        const double v = std::strtod(p, &end);
        const bool ok = end != p && *end == '\0' && std::isfinite(v) && (open_lo ? v > lo : v >= lo) && v <= hi;
        if (!ok) return "must be a finite number in " + range + ", got '" + s + "'";
        return "";
      },
      "NUMBER in " + range);
}

}  // namespace oboro::cli
