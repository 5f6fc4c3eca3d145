// The training config (`oboro train --config run.toml`): TrainConfig::from_toml, the only entry point
// used (src/train is being reorganised; the public reader stays), then to_json() as the trainer does
// for its log and the model metadata. The input is written to run.toml in a per-process temp folder.
#include "fuzz_util.h"
#include "train/trainer.h"

using namespace oboro;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path dir = fuzz::ScratchDir::get("train-toml");
  const std::string path = (dir / "run.toml").string();
  fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::accept_errors([&] {
    TrainConfig c = TrainConfig::from_toml(path);
    (void)c.to_json();
  });
  return 0;
}
