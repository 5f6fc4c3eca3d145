// A1111 infotext ("<prompt>\nNegative prompt: <neg>\nSteps: 20, Sampler: ..., Seed: 1, ...": what
// `oboro generate` writes into the PNG `parameters` chunk, and what users paste from other tools) and
// kohya sample-prompt lines ("a cat --n blurry --w 64 --h 64 --d 42 --s 20 --l 5", from --from-file and
// the training TOML's sample_prompts), both in flow/infotext.h. The parsed infotext is formatted again
// and parsed a second time (the writer must accept whatever the reader returns).
#include "flow/infotext.h"
#include "fuzz_util.h"

#include <sstream>

using namespace oboro;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  Infotext it = parse_infotext(text);
  const std::string again = format_infotext(it.prompt, it.negative, it.params);
  (void)parse_infotext(again);

  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    fuzz::accept_errors([&] {
      PromptLine p = parse_prompt_line(line);
      (void)p;
    });
  return 0;
}
