// A1111 "infotext" (PNG `parameters` chunk) and kohya sample-prompt lines.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace oboro {

// Floats printed like Python's repr: 5 → "5", 3.5 → "3.5", 1e-4 → "0.0001".
std::string py_float(double v);
// The same for a float32 value: the shortest digits that read back as the same float (3.7f → "3.7").
std::string py_float32(float v);
// "<prompt>\nNegative prompt: <neg>\nK: v, K: v, ..." — values holding ',', ':' or a newline are
// JSON-quoted; the negative-prompt line is omitted when empty.
std::string format_infotext(const std::string& prompt, const std::string& negative,
                            const std::vector<std::pair<std::string, std::string>>& params);
// Inverse of format_infotext: prompt, negative prompt and the key/value pairs.
struct Infotext {
  std::string prompt, negative;
  std::vector<std::pair<std::string, std::string>> params;
};
Infotext parse_infotext(const std::string& text);

// kohya sample prompt line: "a cat --n blurry --w 64 --h 64 --d 42 --s 20 --l 5".
struct PromptLine {
  std::string prompt, negative;
  int width = 0, height = 0, steps = 0;
  long long seed = -1;
  float cfg = -1.f;
};
PromptLine parse_prompt_line(const std::string& line);

}  // namespace oboro
