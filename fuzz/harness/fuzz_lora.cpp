// LoRA inputs (issue 19): a LoRA safetensors file read against a model (src/lora/lora_file.h: kohya and PEFT keys,
// alpha, shapes, architecture), the key mapper (src/lora/lora_keys.h), `<lora:NAME:W>` prompt tags and `--lora
// FILE[:W]` arguments (src/flow/lora_apply.h) and `oboro merge --block-weights` specs (src/merge/merge_math.h).
// The input is written as the LoRA file and also read as text (each line a key, a prompt, an argument and a
// block-weight spec). An oboro::Error is the normal refusal and must be one line; a file that is accepted must
// have every module's shapes match its target, finite values and its used-tensor count within the file's.
#include "flow/lora_apply.h"
#include "fuzz_util.h"
#include "lora/lora_file.h"
#include "lora/lora_keys.h"
#include "merge/merge_math.h"
#include "models/dit_config.h"
#include "models/params.h"

#include <cmath>
#include <memory>

using namespace oboro;

namespace {

// The model of the seed LoRAs: `oboro init --preset tiny --text-dim 32 --latent-channels 4` (fuzz/make_corpus.sh).
const lora::LoraKeyMap& key_map() {
  static const lora::LoraKeyMap map = [] {
    DiTConfig c = DiTConfig::preset("tiny", 32);
    c.latent_channels = 4;
    return lora::LoraKeyMap::from_layout(dit_param_layout(c));
  }();
  return map;
}

void one_line(const Error& e) {
  const std::string_view m = e.what();
  if (m.empty() || m.find('\n') != std::string_view::npos) {
    dprintf(fuzz::diag_fd(), "oboro fuzz: error message is not one line:\n%s\n", e.what());
    std::abort();
  }
}

template <class Body>
void attempt(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    one_line(e);
  }
}

void check_accepted(const lora::LoraFile& f) {
  bool ok = f.used() <= f.tensors && !f.modules.empty();
  for (size_t i = 0; i < f.modules.size() && i < 4; ++i) {  // the first few: ΔW of a module is N·K values
    const auto delta = lora::lora_delta(f.modules[i]);
    for (float x : delta) ok = ok && std::isfinite(x);
  }
  if (!ok) {
    dprintf(fuzz::diag_fd(), "oboro fuzz: accepted LoRA with %zu modules, %zu of %zu tensors used, or a non-finite "
            "delta\n", f.modules.size(), f.used(), f.tensors);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  (void)key_map();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const fuzz::fs::path file = fuzz::ScratchDir::get("lora") / "in.safetensors";
  fuzz::write_file(file, bytes);
  attempt([&] { check_accepted(lora::read_lora(file.string(), key_map())); });

  if (size > 4096) return 0;  // the text parsers take short inputs
  for (std::string_view line : fuzz::split(bytes, "\n", 16)) {
    const std::string s(line);
    if (auto k = lora::parse_key(s)) {
      // A key the model has maps back to the same key.
      if (const lora::Target* t = key_map().find(*k); t && k->layout == lora::KeyLayout::Kohya &&
                                                     lora::kohya_key(t->tensor, k->part) != s) {
        dprintf(fuzz::diag_fd(), "oboro fuzz: kohya key %s maps to %s and back to %s\n", s.c_str(), t->tensor.c_str(),
                lora::kohya_key(t->tensor, k->part).c_str());
        std::abort();
      }
    }
    attempt([&] {
      std::vector<LoraRequest> found;
      (void)strip_prompt_loras(s, found);
      for (const LoraRequest& r : found)
        if (!std::isfinite(r.weight)) {
          dprintf(fuzz::diag_fd(), "oboro fuzz: prompt tag with a non-finite weight accepted: %s\n", s.c_str());
          std::abort();
        }
    });
    attempt([&] { (void)parse_lora_arg(s); });
    attempt([&] { merge::BlockWeights w(s, 4); });
  }
  return 0;
}
